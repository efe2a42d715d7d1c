"""core/run_size.py: a run's estimate (pixels, bytes, time) and the guard on its size."""

from __future__ import annotations

import numpy as np
import pytest

from embedding_change.core import compute_change_scores
from embedding_change.core.run_size import (
    CLUSTER_MAX_PIXELS,
    DEFAULT_MAX_PIXELS,
    LOCAL_PIXEL_RATE,
    RunEstimate,
    RunTooLargeError,
    check_run_size,
    estimate_run,
    measured_rate,
    note_transfer,
)
from embedding_change.core.store import open_embedding_store
from embedding_change.core.window import PixelWindow, pixel_window


def chunks_touched(window: PixelWindow, chunk: int) -> int:
    """The store chunks a window overlaps, counted one by one."""
    count = 0
    for r in range(0, window.row1 + chunk, chunk):
        for c in range(0, window.col1 + chunk, chunk):
            rows = r < window.row1 and r + chunk > window.row0
            cols = c < window.col1 and c + chunk > window.col0
            count += rows and cols
    return count


@pytest.mark.parametrize(
    "window",
    [
        PixelWindow(0, 600, 0, 560),  # the whole store, edge chunks partly outside it
        PixelWindow(10, 20, 30, 40),  # inside one chunk
        PixelWindow(250, 260, 250, 520),  # across chunk edges both ways
        PixelWindow(256, 512, 0, 256),  # exactly one chunk
    ],
)
def test_the_estimate_counts_the_whole_chunks_a_window_touches(aef_store, window):
    source = open_embedding_store(aef_store[0])

    estimate = estimate_run(source, window, n_years=6)

    assert (estimate.height, estimate.width) == window.shape
    assert estimate.pixels == window.size
    assert estimate.nbytes == chunks_touched(window, 256) * 256 * 256 * 64 * 6
    assert estimate.seconds == pytest.approx(window.size / LOCAL_PIXEL_RATE)


def test_every_run_logs_its_estimate_before_reading(aef_store, tmp_path):
    path, _ = aef_store
    source = open_embedding_store(path)
    lines = []

    compute_change_scores(path, tmp_path / "s.zarr", log=lines.append)

    estimate = estimate_run(source, pixel_window(source.grid), 9)
    assert lines[0] == estimate.describe()
    assert lines[0].startswith("Estimate: 560 x 600 = 0.3 Mpx over 9 years and 64 bands, about ")
    assert f"about {estimate.nbytes / 1e6:,.0f} MB to read" in lines[0]


def test_a_window_over_the_limit_stops_naming_its_size_and_the_ways_on(tmp_path, empty_mosaic):
    store = empty_mosaic(tmp_path / "big.zarr", (8000, 8000))
    lines = []

    with pytest.raises(RunTooLargeError) as raised:
        compute_change_scores(store, tmp_path / "out.zarr", log=lines.append)

    message = str(raised.value)
    assert "8,000 x 8,000 = 64.0 Mpx" in message
    assert "the limit is 50.0 Mpx (about a 71 x 71 km view at 10 m)" in message
    assert f"about {8192**2 * 9 * 64 / 1e9:,.1f} GB to read" in message  # whole chunks
    for way in ("zoom in", "MAX_PIXELS", "max_pixels=", "dask scheduler"):
        assert way in message
    assert lines[0].startswith("Estimate: 8,000 x 8,000 = 64.0 Mpx")
    assert not (tmp_path / "out.zarr").exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "big.zarr"]  # no claim or partial left


def test_the_limit_is_inclusive_and_can_be_raised_or_turned_off(aef_store, tmp_path):
    path, _ = aef_store
    box = open_embedding_store(path).grid.bbox
    pixels = 600 * 560

    with pytest.raises(RunTooLargeError, match="limit is 0.3 Mpx"):
        compute_change_scores(path, tmp_path / "a.zarr", bbox=box, max_pixels=pixels - 1)
    exact = compute_change_scores(path, tmp_path / "b.zarr", bbox=box, max_pixels=pixels)
    unlimited = compute_change_scores(path, tmp_path / "c.zarr", bbox=box, max_pixels=None)

    np.testing.assert_array_equal(exact["scores"].values, unlimited["scores"].values)


def estimate_of(pixels: int) -> RunEstimate:
    side = int(np.sqrt(pixels))
    return RunEstimate(side, pixels // side, 9, 64, pixels * 9 * 64)


def test_a_scheduler_run_has_its_own_larger_limit():
    state = estimate_of(3_500_000_000)  # Colorado

    with pytest.raises(RunTooLargeError, match="dask scheduler"):
        check_run_size(state, DEFAULT_MAX_PIXELS, local=True)
    check_run_size(state, DEFAULT_MAX_PIXELS, local=False)
    with pytest.raises(RunTooLargeError, match=r"at least 5,000.0 Mpx") as raised:
        check_run_size(estimate_of(2 * CLUSTER_MAX_PIXELS), DEFAULT_MAX_PIXELS, local=False)
    assert "from this computer" in str(raised.value)
    check_run_size(estimate_of(2 * CLUSTER_MAX_PIXELS), 3 * CLUSTER_MAX_PIXELS, local=False)
    check_run_size(estimate_of(10**13), None, local=True)


def test_the_time_comes_from_the_rate_measured_from_the_same_server():
    note_transfer("s3://rates-bucket/a.zarr", 2_000_000_000, 20.0)  # 100 MB/s
    estimate = RunEstimate(1000, 1000, 9, 64, 6_000_000_000, measured_rate("s3://rates-bucket/b"))

    assert measured_rate("s3://rates-bucket/other.zarr") == pytest.approx(1e8)
    assert measured_rate("s3://another-bucket/a.zarr") is None
    assert measured_rate("/local/store.zarr") is None
    assert estimate.seconds == pytest.approx(60.0)  # the bytes at the link, over the pixels
    assert "about 60 s at the 100.0 MB/s reached from this server so far" in estimate.describe()


def test_a_remote_run_records_what_its_server_reached(s3_bucket, s3_storage_options, tmp_path):
    from embedding_change.core.synthetic import write_aef_like_store

    url = f"{s3_bucket}/aef.zarr"
    write_aef_like_store(url, shape=(64, 64), seed=2, storage_options=s3_storage_options)
    assert measured_rate(url) is None
    first, lines = [], []

    compute_change_scores(
        url, tmp_path / "a.zarr", storage_options=s3_storage_options, log=first.append
    )
    compute_change_scores(
        url, tmp_path / "b.zarr", storage_options=s3_storage_options, log=lines.append
    )

    assert "(no download from this server measured yet)" in first[0]
    assert measured_rate(url) > 0
    assert "MB/s reached from this server so far" in lines[0]
