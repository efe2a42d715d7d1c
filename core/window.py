"""From a bounding box to a pixel window of the store, and from a window to its blocks."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import WindowError
from .grid import Grid

# Box edges within this fraction of a pixel of a pixel edge snap to it, so that a box
# made from pixel edges (with float noise) selects exactly those pixels.
EDGE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class PixelWindow:
    """Rows row0..row1-1 and columns col0..col1-1 of the store's grid."""

    row0: int
    row1: int
    col0: int
    col1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.row1 - self.row0, self.col1 - self.col0

    @property
    def size(self) -> int:
        return (self.row1 - self.row0) * (self.col1 - self.col0)


def pixel_window(grid: Grid, bbox=None) -> PixelWindow:
    """Every pixel the box (xmin, ymin, xmax, ymax; store CRS) touches, clipped to the store.

    None means the whole store. A box that misses the store is an error naming both extents.
    """
    ny, nx = grid.shape
    if bbox is None:
        return PixelWindow(0, ny, 0, nx)
    xmin, ymin, xmax, ymax = (float(v) for v in bbox)
    if not (xmin < xmax and ymin < ymax):
        raise WindowError(
            f"The box {tuple(bbox)} is empty: give (xmin, ymin, xmax, ymax) with xmin < xmax "
            "and ymin < ymax."
        )
    if not grid.is_north_up:
        raise WindowError("Only north-up grids (no rotation) are supported.")
    a, _, c, _, e, f = grid.transform
    col0 = _floor((xmin - c) / a)
    col1 = _ceil((xmax - c) / a)
    row0 = _floor((ymax - f) / e)
    row1 = _ceil((ymin - f) / e)
    window = PixelWindow(max(row0, 0), min(row1, ny), max(col0, 0), min(col1, nx))
    if window.row0 >= window.row1 or window.col0 >= window.col1:
        sxmin, symin, sxmax, symax = grid.bbox
        raise WindowError(
            f"The box ({xmin:.6g}, {ymin:.6g}, {xmax:.6g}, {ymax:.6g}) lies outside the store, "
            f"which covers ({sxmin:.6g}, {symin:.6g}, {sxmax:.6g}, {symax:.6g}) in "
            f"{grid.crs or 'its CRS'}. Pan the map to the store's area or pick another store."
        )
    return window


def blocks(window: PixelWindow, chunk_shape: tuple[int, int]) -> list[PixelWindow]:
    """The window cut along the store's chunk edges, so that each block reads whole chunks once."""
    cy, cx = chunk_shape
    return [
        PixelWindow(r0, r1, c0, c1)
        for r0, r1 in _aligned_spans(window.row0, window.row1, cy)
        for c0, c1 in _aligned_spans(window.col0, window.col1, cx)
    ]


def _aligned_spans(start: int, stop: int, step: int) -> list[tuple[int, int]]:
    edges = [start, *range((start // step + 1) * step, stop, step), stop]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _floor(value: float) -> int:
    nearest = round(value)
    return int(nearest) if abs(value - nearest) < EDGE_TOLERANCE else math.floor(value)


def _ceil(value: float) -> int:
    nearest = round(value)
    return int(nearest) if abs(value - nearest) < EDGE_TOLERANCE else math.ceil(value)
