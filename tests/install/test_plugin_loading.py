"""Loading the plugin needs only the standard library, qgis, numpy and GDAL: every module QGIS
imports at start (entry point, provider, algorithms, notice, dependency check) imports in the
system Python with the engine's packages made unimportable."""

import json
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.qgis

ROOT = Path(__file__).resolve().parents[2]
ENGINE_PACKAGES = ("numba", "llvmlite", "zarr", "numcodecs", "xarray", "dask", "distributed",
                   "fsspec", "s3fs", "zarr_cm", "pandas")  # fmt: skip
LOADED_AT_START = (
    "embedding_change",
    "embedding_change.provider.plugin",
    "embedding_change.provider.provider",
    "embedding_change.provider.dependency_check",
    "embedding_change.gui.dependency_notice",
    "embedding_change.gui.change_map_tool",
    "embedding_change.gui.change_profile_dock",
    "embedding_change.algorithms.change_scores",
    "embedding_change.algorithms.build_multiscales",
    "embedding_change.algorithms.change_hotspots",
    "embedding_change.algorithms.change_profile",
    "embedding_change.algorithms.export_scores",
    "embedding_change.algorithms.embedding_rgb",
    "embedding_change.algorithms.install_dependencies",
    "embedding_change.algorithms.load_scores",
    "embedding_change.layers.score_layers",
    "embedding_change.layers.post_processor",
    "embedding_change.layers.pyramid",
    "embedding_change.layers.summary",
    "embedding_change.dependencies.check",
)
BLOCKER = """
import importlib.abc, json, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError("blocked for the test: " + name)
sys.meta_path.insert(0, Blocked())
sys.path.insert(0, {plugins!r})
import importlib
for module in {modules!r}:
    importlib.import_module(module)
report = __import__("embedding_change.dependencies.check", fromlist=["x"]).dependency_report(
    {profile!r})
print(json.dumps(sorted(report.missing)))
"""


def test_every_module_qgis_loads_at_start_imports_without_the_engines_packages(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "embedding_change").symlink_to(ROOT)
    code = BLOCKER.format(
        blocked=set(ENGINE_PACKAGES),
        plugins=str(plugins),
        modules=LOADED_AT_START,
        profile=str(tmp_path / "profile"),
    )
    done = subprocess.run(
        ["/usr/bin/python3", "-c", code],
        capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "QT_QPA_PLATFORM": "offscreen"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    missing = json.loads(done.stdout.splitlines()[-1])
    assert "numba" in missing and "zarr" in missing and "s3fs" in missing
