"""qgis_process: the algorithm runs headless from the command line, in an isolated profile."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import xarray as xr

from embedding_change.core import compute_change_scores
from embedding_change.core.store import open_embedding_store

from .conftest import store_extent

pytestmark = [pytest.mark.qgis, pytest.mark.slow]

QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"


@pytest.fixture
def qgis_process(tmp_path):
    """Runs qgis_process.bin with a fresh profile in which the plugin is enabled."""
    env = dict(os.environ, QGIS_CUSTOM_CONFIG_PATH=str(tmp_path / "profile"))
    env.setdefault("QT_QPA_PLATFORM", "offscreen")

    def run(*args):
        return subprocess.run(
            [QGIS_PROCESS, *args], env=env, capture_output=True, text=True, timeout=300
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
