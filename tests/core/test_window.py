"""core/window.py: boxes to pixel windows, and windows to chunk-aligned blocks."""

import pytest

from embedding_change.core.errors import WindowError
from embedding_change.core.grid import Grid
from embedding_change.core.window import PixelWindow, blocks, pixel_window

GSD = 0.5
GRID = Grid((GSD, 0.0, 100.0, 0.0, -GSD, 50.0), (40, 60), "EPSG:4326")  # x 100..130, y 30..50


def box_of(row0, row1, col0, col1):
    """The box whose edges are exactly those pixel edges."""
    return (100 + col0 * GSD, 50 - row1 * GSD, 100 + col1 * GSD, 50 - row0 * GSD)


def test_box_on_pixel_edges_selects_exactly_those_pixels():
    assert pixel_window(GRID, box_of(3, 17, 5, 22)) == PixelWindow(3, 17, 5, 22)


def test_box_edges_with_float_noise_snap_to_the_pixel_edge():
    xmin, ymin, xmax, ymax = box_of(3, 17, 5, 22)
    noisy = (xmin + 1e-12, ymin - 1e-12, xmax - 1e-12, ymax + 1e-12)
    assert pixel_window(GRID, noisy) == PixelWindow(3, 17, 5, 22)


def test_box_inside_pixels_takes_every_pixel_it_touches():
    xmin, ymin, xmax, ymax = box_of(3, 17, 5, 22)
    inside = (xmin + 0.2, ymin + 0.2, xmax - 0.2, ymax - 0.2)
    assert pixel_window(GRID, inside) == PixelWindow(3, 17, 5, 22)


def test_box_over_the_store_edge_is_clipped():
    assert pixel_window(GRID, (90.0, 20.0, 101.0, 49.6)) == PixelWindow(0, 40, 0, 2)


def test_no_box_means_the_whole_store():
    assert pixel_window(GRID, None) == PixelWindow(0, 40, 0, 60)


@pytest.mark.parametrize(
    "box", [(0.0, 0.0, 10.0, 10.0), (131.0, 31.0, 140.0, 40.0), (110.0, 51.0, 120.0, 60.0)]
)
def test_box_outside_the_store_names_both_extents(box):
    with pytest.raises(WindowError, match=r"outside the store.*100.*130"):
        pixel_window(GRID, box)


def test_box_touching_only_the_store_edge_selects_nothing():
    with pytest.raises(WindowError):
        pixel_window(GRID, (130.0, 35.0, 135.0, 40.0))


def test_empty_box_is_an_error():
    with pytest.raises(WindowError, match="empty"):
        pixel_window(GRID, (110.0, 40.0, 105.0, 45.0))


def test_blocks_follow_chunk_edges_and_cover_the_window_once():
    window = PixelWindow(5, 27, 3, 21)
    parts = blocks(window, (10, 8))
    assert [(b.row0, b.row1) for b in parts if b.col0 == 3] == [(5, 10), (10, 20), (20, 27)]
    assert [(b.col0, b.col1) for b in parts if b.row0 == 5] == [(3, 8), (8, 16), (16, 21)]
    covered = {(r, c) for b in parts for r in range(b.row0, b.row1) for c in range(b.col0, b.col1)}
    assert len(covered) == sum(b.size for b in parts) == window.size


def test_grid_subset_places_the_window_corner():
    sub = GRID.subset(3, 17, 5, 22)
    assert sub.transform == (GSD, 0.0, 102.5, 0.0, -GSD, 48.5)
    assert sub.shape == (14, 17)
    assert sub.bbox == box_of(3, 17, 5, 22)
