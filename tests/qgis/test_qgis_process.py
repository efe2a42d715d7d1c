"""qgis_process: the algorithm runs headless from the command line, in an isolated profile."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import embedding_change
from embedding_change.core import compute_change_scores
from embedding_change.core.store import open_embedding_store

from .conftest import store_extent

pytestmark = [pytest.mark.qgis, pytest.mark.slow]

QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"


def qgis_process_environment(profile: Path) -> dict[str, str]:
    """The environment for qgis_process: this test run's, with a fresh profile and settings,
    the plugin folder the tests import `embedding_change` from first on QGIS_PLUGINPATH, and
    the folder of the Python running the tests first on PATH.

    qgis_process's embedded Python takes its prefix, and so its site-packages, from the first
    `python3` on PATH: the tests' interpreter (the venv with the engine's packages, the same
    Python version that runs QGIS here) must come first whatever PATH pytest was started with.
    pytest-qgis points QGIS_OPTIONS_PATH at the checkout's .qgis-settings, shared by every
    QGIS version that runs the tests: the child gets its own."""
    env = dict(os.environ, QGIS_CUSTOM_CONFIG_PATH=str(profile), QGIS_OPTIONS_PATH=str(profile))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    plugins = Path(embedding_change.__file__).parent.parent  # a folder named after the plugin
    env["QGIS_PLUGINPATH"] = os.pathsep.join([str(plugins), env.get("QGIS_PLUGINPATH", "")])
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    return env


@pytest.fixture
def qgis_process(tmp_path):
    """Runs qgis_process.bin with a fresh profile in which the plugin is enabled."""
    env = qgis_process_environment(tmp_path / "profile")

    def run(*args, extra_env=None):
        return subprocess.run(
            [QGIS_PROCESS, *args],
            env={**env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=300,
        )

    enabled = run("plugins", "enable", "embedding_change")
    assert enabled.returncode == 0, enabled.stdout + enabled.stderr
    return run


def test_qgis_process_runs_change_scores_headless(qgis_process, aef_store, tmp_path):
    path, _ = aef_store
    bbox = open_embedding_store(path).grid.bbox
    extent = store_extent(bbox, (0.3, 0.7, 0.3, 0.7))
    output = tmp_path / "cli.zarr"

    done = qgis_process(
        "--json",
        "run",
        "embeddingchange:changescores",
        "--",
        f"STORE={path}",
        f"EXTENT={extent}",
        "YEARS=2017-2022",
        f"OUTPUT={output}",
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["results"] == {"OUTPUT": str(output)}
    xmin, ymin, xmax, ymax = bbox
    box = (
        xmin + 0.3 * (xmax - xmin),
        ymin + 0.3 * (ymax - ymin),
        xmin + 0.7 * (xmax - xmin),
        ymin + 0.7 * (ymax - ymin),
    )
    expected = compute_change_scores(
        path, tmp_path / "engine.zarr", bbox=box, years=range(2017, 2023)
    )
    with xr.open_zarr(output, consolidated=None) as got:
        np.testing.assert_array_equal(got["scores"].values, expected["scores"].values)


def test_qgis_process_fails_with_the_reason_for_an_extent_outside_the_store(
    qgis_process, aef_store, tmp_path
):
    path, _ = aef_store
    done = qgis_process(
        "run",
        "embeddingchange:changescores",
        "--",
        f"STORE={path}",
        "EXTENT=10,11,50,51 [EPSG:4326]",
        f"OUTPUT={tmp_path / 'out.zarr'}",
    )
    assert done.returncode != 0
    assert "lies outside the store" in done.stdout + done.stderr
    assert not (tmp_path / "out.zarr").exists()


def test_qgis_process_reads_an_s3_url_with_credentials_from_the_aws_variables(
    qgis_process, s3_bucket, s3_storage_options, tmp_path
):
    from embedding_change.core.synthetic import write_aef_like_store

    url = f"{s3_bucket}/aef.zarr"
    write_aef_like_store(url, shape=(120, 140), seed=5, storage_options=s3_storage_options)
    write_aef_like_store(tmp_path / "same.zarr", shape=(120, 140), seed=5)
    bbox = open_embedding_store(tmp_path / "same.zarr").grid.bbox
    aws = {
        "AWS_ACCESS_KEY_ID": s3_storage_options["key"],
        "AWS_SECRET_ACCESS_KEY": s3_storage_options["secret"],
        "AWS_ENDPOINT_URL": s3_storage_options["endpoint_url"],
    }

    done = qgis_process(
        "run",
        "embeddingchange:changescores",
        "--",
        f"STORE={url}",
        f"EXTENT={store_extent(bbox)}",
        "YEARS=2017-2020",
        f"OUTPUT={tmp_path / 'cli.zarr'}",
        extra_env=aws,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    expected = compute_change_scores(
        tmp_path / "same.zarr", tmp_path / "engine.zarr", years=range(2017, 2021)
    )
    with xr.open_zarr(tmp_path / "cli.zarr", consolidated=None) as got:
        np.testing.assert_array_equal(got["scores"].values, expected["scores"].values)


def test_qgis_process_stops_a_run_over_the_limit_with_one_clear_message(
    qgis_process, tmp_path, empty_mosaic
):
    store = empty_mosaic(tmp_path / "big.zarr", (8192, 8192))
    done = qgis_process(
        "run",
        "embeddingchange:changescores",
        "--",
        f"STORE={store}",
        f"EXTENT={store_extent(open_embedding_store(store).grid.bbox)}",
        f"OUTPUT={tmp_path / 'out.zarr'}",
    )

    text = done.stdout + done.stderr
    assert done.returncode != 0
    assert "The extent is too big to run here: 8,192 x 8,192 = 67.1 Mpx" in text
    assert "zoom in" in text and "MAX_PIXELS" in text and "dask scheduler" in text
    assert "Traceback" not in text
    assert not (tmp_path / "out.zarr").exists()
