"""The plugin as an analyst gets it: a zip installed into a clean profile of the system QGIS,
whose Python has numpy and GDAL but none of the engine's packages, then "Install dependencies".

Everything runs in subprocesses with PATH=/usr/bin:/bin, so none of the project's venv is seen;
the installer's pip downloads from the package registry (pip's own cache makes reruns quick).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from embedding_change.core import compute_change_scores
from embedding_change.core.store import open_embedding_store
from embedding_change.core.synthetic import write_aef_like_store
from embedding_change.dependencies import folder
from embedding_change.dependencies.locks import lock_for, pins_to_install, requirements_text

from .virtual_screen import answers, virtual_screen

pytestmark = [pytest.mark.qgis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
ALGORITHMS = [
    "embeddingchange:buildmultiscales",
    "embeddingchange:changehotspots",
    "embeddingchange:changeprofile",
    "embeddingchange:changescores",
    "embeddingchange:embeddingrgb",
    "embeddingchange:exportscores",
    "embeddingchange:installdependencies",
    "embeddingchange:loadscores",
]


def system_numpy() -> str:
    out = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import numpy; print(numpy.__version__)"],
        capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    return out.stdout.strip()


class AnalystQgis:
    """The system QGIS with one profile folder and its own home, as a new analyst has it."""

    def __init__(self, base: Path):
        self.profiles = base / "profiles"
        self.home = base / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        runtime = base / "runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        self.env = {
            "HOME": str(self.home),
            "PATH": "/usr/bin:/bin",
            "QT_QPA_PLATFORM": "offscreen",
            "XDG_RUNTIME_DIR": str(runtime),
            "QGIS_CUSTOM_CONFIG_PATH": str(self.profiles),
            # pip's downloads cached where the developer's and CI's pip keep them.
            "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip")),
            "LANG": "C.UTF-8",
        }

    @property
    def profile(self) -> Path:
        return self.profiles / "profiles" / "default"

    @property
    def startup_script(self) -> Path:
        return self.home / ".local" / "share" / "QGIS" / "QGIS3" / "startup.py"

    def install_zip(self, zip_path: Path) -> None:
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "install_plugin_zip.sh"), str(zip_path),
             str(self.profiles)],
            check=True, capture_output=True, env=self.env,
        )  # fmt: skip

    def process(self, *args, timeout=900) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["/usr/bin/qgis_process.bin", *args],
            capture_output=True, text=True, timeout=timeout, env=self.env,
        )  # fmt: skip

    def run(self, algorithm: str, **parameters) -> subprocess.CompletedProcess:
        return self.process(
            "--json", "run", algorithm, "--", *(f"{k}={v}" for k, v in parameters.items())
        )


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build_plugin.sh"), "--out-dir", str(out)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return Path(built.stdout.strip().splitlines()[-1])


@pytest.fixture
def clean_qgis(tmp_path, plugin_zip) -> AnalystQgis:
    qgis = AnalystQgis(tmp_path / "analyst")
    qgis.install_zip(plugin_zip)
    return qgis


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "aef.zarr"
    write_aef_like_store(path, shape=(300, 280), seed=11)
    return path


@pytest.fixture(scope="module")
def installed_qgis(tmp_path_factory, plugin_zip) -> tuple[AnalystQgis, subprocess.CompletedProcess]:
    """A clean profile after "Install dependencies" from the package registry."""
    qgis = AnalystQgis(tmp_path_factory.mktemp("installed"))
    qgis.install_zip(plugin_zip)
    return qgis, qgis.run("embeddingchange:installdependencies")


def test_without_dependencies_every_algorithm_is_listed_and_a_run_says_what_is_missing(
    plugin_zip, small_store, tmp_path
):
    clean_qgis = AnalystQgis(tmp_path / "analyst")
    with zipfile.ZipFile(plugin_zip) as archive:  # as the Plugin Manager unpacks it
        archive.extractall(clean_qgis.profile / "python" / "plugins")
    enabled = clean_qgis.process("plugins", "enable", "embedding_change")
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    listed = clean_qgis.process("list")
    assert listed.returncode == 0, listed.stderr
    assert all(algorithm in listed.stdout for algorithm in ALGORITHMS)

    done = clean_qgis.run(
        "embeddingchange:changescores",
        STORE=small_store,
        EXTENT="-105.3,-105.2,40.0,40.1 [EPSG:4326]",
        OUTPUT=tmp_path / "scores.zarr",
    )
    assert done.returncode != 0
    said = done.stdout + done.stderr
    assert "Python packages missing: numba, zarr" in said
    assert "Install dependencies" in said
    assert "Traceback" not in said and "ModuleNotFoundError" not in said
    assert not (tmp_path / "scores.zarr").exists()


@pytest.fixture(scope="module")
def xvfb(tmp_path_factory):
    """A virtual screen for the QGIS desktop; its DISPLAY (see virtual_screen.py)."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (scripts/install.sh installs it)")
    log = tmp_path_factory.mktemp("xvfb") / "xvfb.log"
    try:
        screen = virtual_screen(log)
        display = screen.__enter__()
    except RuntimeError as error:
        # No X client can reach any server this machine lets us start (a sandbox without Unix
        # sockets): the desktop cannot run here at all, which is not the plugin's failure.
        pytest.skip(str(error))
    yield display
    screen.__exit__(None, None, None)


def desktop_report(qgis: AnalystQgis, display: str, out: Path) -> dict:
    env = dict(qgis.env, DISPLAY=display, REPORT=str(out))
    env.pop("QT_QPA_PLATFORM")
    started = subprocess.run(
        ["/usr/bin/qgis", "--nologo", "--noversioncheck", "--profiles-path", str(qgis.profiles),
         "--code", str(Path(__file__).with_name("desktop_report.py"))],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    number = int(display.lstrip(":"))
    assert out.is_file(), (
        f"QGIS wrote no report; display {display} now says: {answers(number) or 'ok'}\n"
        + started.stdout[-3000:]
        + started.stderr[-3000:]
    )
    log = started.stdout + started.stderr
    assert "Traceback" not in log, log
    return json.loads(out.read_text())


def test_the_desktop_starts_without_a_python_error_and_offers_the_install(
    clean_qgis, xvfb, tmp_path
):
    seen = desktop_report(clean_qgis, xvfb, tmp_path / "desktop.json")

    assert "embedding_change" in seen["active_plugins"]
    assert seen["algorithms"] == ALGORITHMS
    (notice,) = [item for item in seen["message_bar"] if "Embedding Change" in item["title"]]
    assert notice["title"] == "Embedding Change needs Python packages"
    assert "numba" in notice["text"] and "missing" in notice["text"]
    assert notice["buttons"] == ["Install dependencies…"]
    assert not [item for item in seen["message_bar"] if "error" in item["title"].lower()]
    assert seen["plugin_menus"]["&Embedding change"] == [
        "Change scores for this view",
        "Explain change at a pixel",
        "Install dependencies…",
        "Load change scores…",
    ]


def test_install_dependencies_puts_a_pinned_set_in_the_profile_and_change_scores_then_runs(
    installed_qgis, small_store, tmp_path
):
    qgis, installed = installed_qgis
    assert installed.returncode == 0, installed.stdout + installed.stderr
    results = json.loads(installed.stdout)["results"]
    active = folder.active_set(qgis.profile)
    assert active is not None and results["FOLDER"] == str(active)
    stamp = folder.read_stamp(active)
    lock = lock_for(numpy_version=system_numpy())
    assert stamp["lock"] == lock.name and stamp["lock_sha256"] == lock.sha256()
    assert stamp["qgis_numpy"] == system_numpy()
    for pin in pins_to_install(lock, system_numpy()):
        if pin.name in ("numba", "zarr", "xarray", "dask", "s3fs", "numpy"):
            assert f"{pin.name}={pin.version}" in stamp["versions"]
    # Nothing of it in QGIS's own Python.
    assert not Path("/usr/lib/python3/dist-packages/numba").exists()
    carries_numpy = (active / "numpy").is_dir()
    assert carries_numpy == (any(p.name == "numpy" for p in pins_to_install(lock, system_numpy())))
    assert qgis.startup_script.is_file() == carries_numpy
    assert results["STATUS"].startswith("Restart QGIS" if carries_numpy else "Ready")

    # The next QGIS start (a new qgis_process) has everything, its numpy first.
    path = small_store
    xmin, ymin, xmax, ymax = open_embedding_store(path).grid.bbox
    box = (xmin + 0.2 * (xmax - xmin), ymin + 0.1 * (ymax - ymin), xmax, ymax)
    done = qgis.run(
        "embeddingchange:changescores",
        STORE=path,
        EXTENT=f"{box[0]!r},{box[2]!r},{box[1]!r},{box[3]!r} [EPSG:4326]",
        OUTPUT=tmp_path / "analyst.zarr",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    expected = compute_change_scores(path, tmp_path / "engine.zarr", bbox=box)
    with xr.open_zarr(tmp_path / "analyst.zarr", consolidated=None) as got:
        assert got["scores"].shape == expected["scores"].shape
        np.testing.assert_array_equal(got["scores"].values, expected["scores"].values)


def test_after_the_install_the_desktop_shows_no_notice_and_loads_the_sets_numpy(
    installed_qgis, xvfb, tmp_path
):
    qgis, installed = installed_qgis
    assert installed.returncode == 0, installed.stdout + installed.stderr
    seen = desktop_report(qgis, xvfb, tmp_path / "after.json")

    assert not [item for item in seen["message_bar"] if "Embedding Change" in item["title"]]
    active = folder.active_set(qgis.profile)
    if (active / "numpy").is_dir():  # Debian 12: the set's numpy 1.26 loads before QGIS's 1.24
        assert seen["numpy_file"].startswith(str(active))
        assert seen["numpy"] == folder.read_stamp(active)["numpy"]
    else:
        assert seen["numpy"] == system_numpy()


def test_install_from_a_folder_of_wheels_needs_no_registry(tmp_path, plugin_zip):
    lock = lock_for(numpy_version=system_numpy())
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(requirements_text(pins_to_install(lock, system_numpy())))
    wheels = tmp_path / "wheels"
    # Fetched as an analyst would on a connected machine (README): the same pinned wheels.
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
         "--require-hashes", "-r", str(requirements), "-d", str(wheels)],
        check=True, capture_output=True,
    )  # fmt: skip
    qgis = AnalystQgis(tmp_path / "offline")
    qgis.install_zip(plugin_zip)
    # No index at all: a registry pip cannot reach (as on an offline machine).
    qgis.env["PIP_INDEX_URL"] = "http://127.0.0.1:9/simple"

    done = qgis.run("embeddingchange:installdependencies", WHEELS=wheels)

    assert done.returncode == 0, done.stdout + done.stderr
    stamp = folder.read_stamp(folder.active_set(qgis.profile))
    assert stamp["wheels"] == str(wheels)
    assert stamp["lock"] == lock.name


def test_a_failed_install_says_why_and_keeps_the_previous_set(installed_qgis, tmp_path):
    qgis, installed = installed_qgis
    assert installed.returncode == 0, installed.stdout + installed.stderr
    before = folder.active_set(qgis.profile)
    empty = tmp_path / "no-wheels"
    empty.mkdir()

    done = qgis.run("embeddingchange:installdependencies", WHEELS=empty)

    assert done.returncode != 0
    said = done.stdout + done.stderr
    assert "pip could not install the dependencies" in said
    assert "No matching distribution" in said or "Could not find a version" in said
    assert "Traceback" not in said
    assert folder.active_set(qgis.profile) == before
    root = folder.dependencies_root(qgis.profile)
    assert not list(root.glob(".installing-*"))
