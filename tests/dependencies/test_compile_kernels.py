"""The kernels compiled at install time: into the profile's folder (never the plugin's, which
may be read-only), and loaded by the next process without compiling."""

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from embedding_change.dependencies import caches
from embedding_change.dependencies.pip_install import compile_kernels

ROOT = Path(__file__).resolve().parents[2]

# A later QGIS session: the plugin points numba at the profile's folder, then a run loads the
# 9-year kernel; numba's dispatcher stats say whether it came from the cache or was compiled.
SESSION = """
import json, sys
from embedding_change.dependencies.caches import use_kernel_cache
folder = use_kernel_cache(sys.argv[1])
import numpy as np
from embedding_change.core import kernels
seconds = kernels.warm_up(np.int8, 9)
stats = kernels._YEAR_COPIES[9].stats
print(json.dumps({"folder": str(folder), "cache_path": stats.cache_path, "file": kernels.__file__,
                  "hits": sum(stats.cache_hits.values()),
                  "misses": sum(stats.cache_misses.values()), "seconds": seconds}))
"""


def read_only_copy(plugins: Path) -> Path:
    """The plugin's Python files in plugins/embedding_change, every folder and file read-only."""
    plugin = plugins / "embedding_change"
    for part in ("__init__.py", "core", "dependencies"):
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, plugin / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            plugin.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, plugin / part)
    for path in [plugin, *plugin.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return plugin


def files_in(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def child_environment(plugins: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "PYTHONPATH")}
    env["PYTHONPATH"] = str(plugins)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def test_kernels_compiled_at_install_load_in_the_next_process_from_a_read_only_plugin(
    tmp_path, monkeypatch
):
    plugins = tmp_path / "plugins"
    plugin = read_only_copy(plugins)
    before = files_in(plugin)
    profile = tmp_path / "profile"
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    folder = caches.kernel_cache_folder(profile)
    lines = []
    try:
        compiled = compile_kernels(
            Path(sys.executable), None, folder, lines.append, plugin=plugin, year_counts=(9,)
        )
        session = subprocess.run(
            [sys.executable, "-c", SESSION, str(profile)],
            env=child_environment(plugins),
            capture_output=True,
            text=True,
            timeout=600,
        )
        after = files_in(plugin)
    finally:
        for path in [plugin, *plugin.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)

    assert compiled, lines
    assert any("Scoring kernel for 9 years" in line for line in lines)
    assert session.returncode == 0, session.stderr
    result = json.loads(session.stdout.strip().splitlines()[-1])
    assert result["file"].startswith(str(plugin))
    assert result["folder"] == str(profile / "embedding_change" / "kernels")
    assert result["cache_path"].startswith(result["folder"])
    assert result["misses"] == 0 and result["hits"] >= 1  # loaded, not compiled
    assert list(Path(result["folder"]).rglob("*.nbi"))
    assert after == before  # nothing written next to the plugin's files


def test_numba_cache_dir_set_by_the_user_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert caches.kernel_cache_folder(tmp_path / "profile") == tmp_path / "mine"


def test_the_chunk_cache_is_in_the_profile_unless_the_variable_says_otherwise(
    tmp_path, monkeypatch
):
    monkeypatch.delenv(caches.CHUNKS_VARIABLE, raising=False)
    profile = tmp_path / "profile"
    assert caches.chunk_cache_folder(profile) == profile / "embedding_change" / "chunks"
    monkeypatch.setenv(caches.CHUNKS_VARIABLE, str(tmp_path / "elsewhere"))
    assert caches.chunk_cache_folder(profile) == tmp_path / "elsewhere"


def test_the_chunk_cache_variable_is_the_engines():
    from embedding_change.core.chunk_cache import CACHE_DIR_VARIABLE

    assert caches.CHUNKS_VARIABLE == CACHE_DIR_VARIABLE
