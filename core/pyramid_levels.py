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
    """out[k, i, j] from planes[k, 2i:2i+2, 2j:2j+2] (numba): whole blocks without branches,
    so LLVM vectorises them, then the half-empty blocks of an odd last row or column."""
    n_planes, ny, nx = planes.shape
    full_y, full_x = ny // 2, nx // 2
    for k in range(n_planes):
        for i in range(full_y):
            top, bottom, row = planes[k, 2 * i], planes[k, 2 * i + 1], out[k, i]
            if method == 0:
                _second_max_row(top, bottom, row, full_x)
            elif method == 1:
                _mean_row(top, bottom, row, full_x)
            elif method == 2:
                _max_row(top, bottom, row, full_x)
            elif method == 3:
                _min_row(top, bottom, row, full_x)
            else:
                _nearest_row(top, bottom, row, full_x)
        for i in range(out.shape[1]):
            for j in range(full_x if i < full_y else 0, out.shape[2]):
                out[k, i, j] = _block(planes, k, i, j, method)


@njit(cache=True, nogil=True, inline="always")
def _count(a, b, c, d):  # pragma: no cover - compiled
    return (a == a) + (b == b) + (c == c) + (d == d)  # NaN != NaN


@njit(cache=True, nogil=True)
def _second_max_row(top, bottom, row, n):  # pragma: no cover - compiled
    low = -np.inf
    for j in range(n):
        a, b, c, d = top[2 * j], top[2 * j + 1], bottom[2 * j], bottom[2 * j + 1]
        count = _count(a, b, c, d)
        a, b = (a if a == a else low), (b if b == b else low)
        c, d = (c if c == c else low), (d if d == d else low)
        m1, n1, m2, n2 = max(a, b), min(a, b), max(c, d), min(c, d)
        largest, second = max(m1, m2), max(min(m1, m2), max(n1, n2))
        picked = second if count > 1 else largest
        row[j] = picked if count > 0 else np.nan


@njit(cache=True, nogil=True)
def _max_row(top, bottom, row, n):  # pragma: no cover - compiled
    low = -np.inf
    for j in range(n):
        a, b, c, d = top[2 * j], top[2 * j + 1], bottom[2 * j], bottom[2 * j + 1]
        count = _count(a, b, c, d)
        a, b = (a if a == a else low), (b if b == b else low)
        c, d = (c if c == c else low), (d if d == d else low)
        largest = max(max(a, b), max(c, d))
        row[j] = largest if count > 0 else np.nan


@njit(cache=True, nogil=True)
def _min_row(top, bottom, row, n):  # pragma: no cover - compiled
    high = np.inf
    for j in range(n):
        a, b, c, d = top[2 * j], top[2 * j + 1], bottom[2 * j], bottom[2 * j + 1]
        count = _count(a, b, c, d)
        a, b = (a if a == a else high), (b if b == b else high)
        c, d = (c if c == c else high), (d if d == d else high)
        smallest = min(min(a, b), min(c, d))
        row[j] = smallest if count > 0 else np.nan


@njit(cache=True, nogil=True)
def _mean_row(top, bottom, row, n):  # pragma: no cover - compiled
    for j in range(n):
        a, b, c, d = top[2 * j], top[2 * j + 1], bottom[2 * j], bottom[2 * j + 1]
        count = _count(a, b, c, d)
        total = 0.0
        total += a if a == a else 0.0
        total += b if b == b else 0.0
        total += c if c == c else 0.0
        total += d if d == d else 0.0
        row[j] = total / count if count > 0 else np.nan


@njit(cache=True, nogil=True)
def _nearest_row(top, bottom, row, n):  # pragma: no cover - compiled
    for j in range(n):
        a, b, c, d = top[2 * j], top[2 * j + 1], bottom[2 * j], bottom[2 * j + 1]
        row[j] = a if a == a else (b if b == b else (c if c == c else d))


@njit(cache=True, nogil=True)
def _block(planes, k, i, j, method):  # pragma: no cover - compiled
    """One block, whatever its size (1 to 4 pixels at the edges), any method."""
    ny, nx = planes.shape[1], planes.shape[2]
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
        return np.nan
    if method == 0:
        return second if count > 1 else largest
    if method == 1:
        return total / count
    if method == 2:
        return largest
    if method == 3:
        return smallest
    return first
