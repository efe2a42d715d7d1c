"""core/store.py: opening embedding cubes from paths and URLs, and what their metadata says."""

import functools
import http.server
import subprocess
import sys
import threading

import numpy as np
import pytest
import xarray as xr
import zarr

from embedding_change.core.errors import StoreError
from embedding_change.core.store import open_embedding_store
from embedding_change.core.synthetic import AEF_GSD, write_aef_like_store


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("small") / "aef.zarr"
    truth = write_aef_like_store(path, shape=(40, 50), years=range(2019, 2023), bands=8, seed=1)
    return path, truth


def test_aef_like_store_reads_its_grid_years_bands_and_quantisation(small_store):
    path, truth = small_store
    store = open_embedding_store(path)
    assert store.array.shape == (4, 8, 40, 50)
    assert list(store.times) == [2019, 2020, 2021, 2022]
    assert store.bands == tuple(f"A{i:02d}" for i in range(8))
    assert store.grid == truth.grid
    assert store.grid.crs == "EPSG:4326"
    assert store.grid.transform[0] == AEF_GSD
    assert store.quantisation.method == "signed_square"
    assert store.quantisation.nodata == -128


def test_file_url_and_plain_path_open_the_same_store(small_store):
    path, _ = small_store
    by_url = open_embedding_store(f"file://{path}")
    assert by_url.url == open_embedding_store(path).url


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_store_without_spatial_attributes_takes_its_grid_from_coordinates(tmp_path, zarr_format):
    x = 500.0 + 10.0 * (np.arange(6) + 0.5)
    y = 900.0 - 10.0 * (np.arange(5) + 0.5)
    values = np.zeros((3, 4, 5, 6), np.float32)
    ds = xr.Dataset(
        {"emb": (("time", "band", "y", "x"), values)},
        coords={"time": [2020, 2021, 2022], "x": x, "y": y},
    )
    ds.to_zarr(tmp_path / "plain.zarr", zarr_format=zarr_format, consolidated=False)
    store = open_embedding_store(tmp_path / "plain.zarr", variable="emb")
    assert store.grid.transform == (10.0, 0.0, 500.0, 0.0, -10.0, 900.0)
    assert store.grid.shape == (5, 6)
    assert store.quantisation.method == "none"
    assert store.quantisation.nodata is None
    assert store.bands == ("A00", "A01", "A02", "A03")


def test_store_on_s3_opens_with_endpoint_and_credentials(s3_bucket, s3_storage_options):
    url = f"{s3_bucket}/aef.zarr"
    truth = write_aef_like_store(
        url, shape=(20, 30), years=range(2020, 2024), bands=4, storage_options=s3_storage_options
    )
    store = open_embedding_store(url, storage_options=s3_storage_options)
    assert store.grid == truth.grid
    assert store.array[:, :, :, :].shape == (4, 4, 20, 30)


def test_store_over_https_opens_from_consolidated_metadata(small_store):
    path, truth = small_store
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(path.parent))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{path.name}"
        store = open_embedding_store(url)
        assert store.grid == truth.grid
        np.testing.assert_array_equal(
            store.array[0, :, :3, :3], zarr.open_group(path, mode="r")["embeddings"][0, :, :3, :3]
        )
    finally:
        server.shutdown()


def test_missing_store_says_check_the_path(tmp_path):
    with pytest.raises(StoreError, match="No Zarr store at .*nowhere.zarr"):
        open_embedding_store(tmp_path / "nowhere.zarr")


def test_wrong_variable_lists_the_variables_there(small_store):
    path, _ = small_store
    with pytest.raises(StoreError, match="no variable 'scores'.*embeddings"):
        open_embedding_store(path, variable="scores")


def test_wrong_dims_are_named(tmp_path):
    ds = xr.Dataset({"embeddings": (("band", "time", "y", "x"), np.zeros((2, 3, 4, 5), np.int8))})
    ds.to_zarr(tmp_path / "swapped.zarr")
    with pytest.raises(StoreError, match=r"dims \('band', 'time', 'y', 'x'\)"):
        open_embedding_store(tmp_path / "swapped.zarr")


def test_unreachable_s3_endpoint_is_a_store_error():
    options = {"key": "k", "secret": "s", "endpoint_url": "http://127.0.0.1:9"}
    with pytest.raises(StoreError, match="storage options"):
        open_embedding_store("s3://bucket/aef.zarr", storage_options=options)


def test_unreachable_s3_endpoint_fails_fast_without_asyncio_noise():
    """The error alone: no "Exception ignored ... different Context" when the process ends."""
    script = (
        "from embedding_change.core.errors import StoreError\n"
        "from embedding_change.core.store import open_embedding_store\n"
        "options = {'key': 'k', 'secret': 's', 'endpoint_url': 'http://127.0.0.1:9'}\n"
        "try:\n"
        "    open_embedding_store('s3://b/x.zarr', storage_options=options)\n"
        "except StoreError as exc:\n"
        "    print('StoreError:', exc)\n"
    )
    # A fresh interpreter that exits right after the error, as qgis_process does: that is when
    # retries still running in the background were torn down and printed their tracebacks.
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("StoreError: Could not open the Zarr store s3://b/x.zarr")
    assert "Exception ignored" not in done.stderr
    assert "different Context" not in done.stderr
    assert "Traceback" not in done.stderr
