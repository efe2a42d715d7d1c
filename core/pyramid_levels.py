"""The levels of a multiscale pyramid: their shapes and grids, and the NaN-aware 2x2 reduction.

Level k+1 halves level k in y and x: each coarse pixel covers the 2 x 2 block of finer pixels
that starts at its top-left corner, so all levels share the grid's origin (no translation).
Odd sizes round up: the last row or column of blocks is half empty, and its missing pixels
count as no data (NaN), like any NaN inside the array.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .grid import Grid

# Engine name -> the name the multiscales convention (and GDAL) use for the same reduction.
# "second_max" has no GDAL name: the convention takes any string, so it keeps its own.
RESAMPLING_METHODS = {
    "second_max": "second_max",
    "mean": "average",
    "max": "max",
    "min": "min",
    "nearest": "nearest",
}
# The pyramid default for scores. A coarse pixel is high only when at least two of its four
# finer pixels are, and then it keeps their value: an isolated pixel (speckle) does not spread,
# an event of a few pixels or more keeps its colour. "max" instead turns every block with one
# high pixel high, so noise floods the coarse levels (share above z = 3: 4 %, 13 %, 42 %, 88 %
# on a generated store); "mean" dilutes events into their surroundings.
DEFAULT_RESAMPLING = "second_max"


def level_shapes(shape: tuple[int, int], tile: int) -> list[tuple[int, int]]:
    """(ny, nx) of levels 0..N: halve (rounding up) until a level fits one tile."""
    shapes = [tuple(int(n) for n in shape)]
    while shapes[-1][0] > tile or shapes[-1][1] > tile:
        ny, nx = shapes[-1]
        shapes.append((-(-ny // 2), -(-nx // 2)))
    return shapes


def level_grid(grid: Grid, level: int, shape: tuple[int, int]) -> Grid:
    """The grid of `level`: pixels 2**level times larger, same origin."""
    factor = 2**level
    a, b, c, d, e, f = grid.transform
    return Grid((a * factor, b * factor, c, d * factor, e * factor, f), shape, grid.crs)


def halve(values: np.ndarray, method: str) -> np.ndarray:
    """Reduce each 2 x 2 block of the last two axes to one value, ignoring NaN.

    A block with no valid value gives NaN. "mean", "max" and "min" reduce the valid values;
    "second_max" keeps the second-largest valid value (the only one when just one is valid);
    "nearest" keeps the block's top-left value, or the first valid one in row order when
    that one is NaN (so no-data edges do not eat into the coarse levels). Odd sizes: the
    missing pixels of the last row or column of blocks count as NaN.
    """
    if method not in RESAMPLING_METHODS:
        raise ValueError(f"unknown resampling {method!r}")
    values = np.asarray(values)
    if values.dtype.kind != "f":
        values = values.astype(np.float32)
    *lead, ny, nx = values.shape
    planes = np.ascontiguousarray(values).reshape(-1, ny, nx)
    out = np.empty((planes.shape[0], -(-ny // 2), -(-nx // 2)), values.dtype)
    _halve_planes(planes, _METHOD_CODES[method], out)
    return out.reshape(*lead, *out.shape[1:])


_METHOD_CODES = {"second_max": 0, "mean": 1, "max": 2, "min": 3, "nearest": 4}


@njit(cache=True, nogil=True)
def _halve_planes(planes, method, out):  # pragma: no cover - compiled
    """out[k, i, j] from planes[k, 2i:2i+2, 2j:2j+2]: one pass, no temporaries (numba)."""
    n_planes, ny, nx = planes.shape
    for k in range(n_planes):
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                count = 0
                first = np.nan
                total = 0.0
                largest = -np.inf
                second = -np.inf
                smallest = np.inf
                for r in range(2 * i, min(2 * i + 2, ny)):
                    for c in range(2 * j, min(2 * j + 2, nx)):
                        v = planes[k, r, c]
                        if np.isnan(v):
                            continue
                        if count == 0:
                            first = v
                        count += 1
                        total += v
                        if v > largest:
                            second = largest
                            largest = v
                        elif v > second:
                            second = v
                        smallest = min(smallest, v)
                if count == 0:
                    out[k, i, j] = np.nan
                elif method == 0:
                    out[k, i, j] = second if count > 1 else largest
                elif method == 1:
                    out[k, i, j] = total / count
                elif method == 2:
                    out[k, i, j] = largest
                elif method == 3:
                    out[k, i, j] = smallest
                else:
                    out[k, i, j] = first
