"""core/tile_order.py through compute_change_scores: tiles reported as they are written, where
they are written, and the blocks nearest the window's centre scored first."""

import math
from pathlib import Path

import numpy as np
import zarr

from embedding_change.core import compute_change_scores
from embedding_change.core.output import OUTPUT_CHUNK


def test_every_tile_is_reported_once_when_it_can_be_read_from_the_partial_output(
    aef_store, tmp_path
):
    path, _ = aef_store
    output = tmp_path / "out.zarr"
    seen = []

    def on_tile(url, y0, x0, height, width):
        assert Path(url) != output and Path(url).name.startswith(".out.zarr.partial-")
        assert not output.exists()  # renamed only when every tile is written
        scores = zarr.open_group(url, mode="r")["scores"]
        tile = scores[:, :, y0 : y0 + height, x0 : x0 + width]
        seen.append(((y0, x0, height, width), tile))

    ds = compute_change_scores(path, output, on_tile=on_tile)
    ny, nx = ds.scores.shape[2:]
    expected = {
        (y0, x0, min(OUTPUT_CHUNK, ny - y0), min(OUTPUT_CHUNK, nx - x0))
        for y0 in range(0, ny, OUTPUT_CHUNK)
        for x0 in range(0, nx, OUTPUT_CHUNK)
    }
    assert sorted(tile for tile, _ in seen) == sorted(expected)
    final = ds.scores.values
    for (y0, x0, h, w), values in seen:
        np.testing.assert_array_equal(values, final[:, :, y0 : y0 + h, x0 : x0 + w])


def test_centre_first_writes_the_tiles_by_their_distance_to_the_window_centre(aef_store, tmp_path):
    path, _ = aef_store  # 600 x 560 px in 256 px chunks: blocks and tiles coincide
    order = []
    ds = compute_change_scores(
        path,
        tmp_path / "out.zarr",
        scheduler="sync",
        centre_first=True,
        on_tile=lambda url, y0, x0, h, w: order.append((y0 + h / 2, x0 + w / 2)),
    )
    ny, nx = ds.scores.shape[2:]
    distances = [math.hypot(y - ny / 2, x - nx / 2) for y, x in order]
    assert distances == sorted(distances)
    assert order[0] == (256 + 128, 256 + 128)  # the tile holding the centre (300, 280)
    assert len(order) == 9


def test_without_centre_first_the_scores_are_the_same(aef_store, tmp_path):
    path, _ = aef_store
    centre = compute_change_scores(path, tmp_path / "a.zarr", centre_first=True)
    rows = compute_change_scores(path, tmp_path / "b.zarr")
    np.testing.assert_array_equal(centre.scores.values, rows.scores.values)


def test_a_failing_viewer_does_not_end_the_run(aef_store, tmp_path):
    path, _ = aef_store
    lines = []

    def broken(*tile):
        raise RuntimeError("the window was closed")

    ds = compute_change_scores(path, tmp_path / "out.zarr", on_tile=broken, log=lines.append)
    assert np.isfinite(ds.scores.values).any()
    assert [line for line in lines if "the window was closed" in line] == [
        "Showing the tiles as they are written stopped: the window was closed"
    ]
