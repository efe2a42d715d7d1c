"""numba kernels: per-pixel change scores over a block of embeddings.

A block is (time, band, y, x) as stored. The kernel copies a strip of rows at a time (each
year-band plane read as one run) into tile order, then scores tiles of eight neighbouring
pixels with explicit 8-lane vectors (core.simd): core.tile_distances loads a tile and builds its
year-by-year distances (a float32 Gram matrix with its accumulators in registers for the
cosine metrics, summed squared differences for euclidean), core.tile_scores turns them into
scores and robust z-scores for the eight pixels at once.

NaN rules (DATA.md; a score is NaN where it has too few valid years to mean anything):
- a year has no data where its first band is `nodata` (integer stores) or NaN (floats);
  for the cosine metrics a zero vector has no direction and counts as no data too;
- difference: to the previous year WITH data; NaN for the first year with data;
- loo_medoid: NaN with fewer than 3 valid years; a tie between medoids goes to the
  earlier year (sums within float32 rounding of each other are a tie);
- robust z-score: NaN with fewer than 3 finite scores or where the MAD is 0 (not inf).
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit

from . import simd
from .errors import ParameterError
from .tile_distances import load_tile, pair_sums, year_distances
from .tile_scores import difference_scores, loo_medoid_scores, zscore_tile

METHODS = ("difference", "loo_medoid")
METRICS = ("alpha_earth_cosine", "cosine", "euclidean")


def score_labels(methods, metric: str, robust_zscore: bool) -> list[str]:
    """Output band names, e.g. loo_medoid_alpha_earth_cosine_distance_robust_time_zscore."""
    suffix = "_robust_time_zscore" if robust_zscore else ""
    return [f"{method}_{metric}_distance{suffix}" for method in methods]


def check_methods_and_metric(methods, metric: str) -> tuple[str, ...]:
    methods = tuple(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        choices = ", ".join(METHODS)
        raise ParameterError(
            f"Unknown or missing score method {unknown or methods}; choose from {choices}."
        )
    if len(set(methods)) != len(methods):
        raise ParameterError(f"Score methods are repeated: {methods}.")
    if metric not in METRICS:
        raise ParameterError(f"Unknown metric {metric!r}; choose from {', '.join(METRICS)}.")
    return methods


def change_scores(
    block: np.ndarray,
    *,
    methods=METHODS,
    metric: str = "alpha_earth_cosine",
    robust_zscore: bool = True,
    signed_square: bool = False,
    nodata: int | None = None,
) -> np.ndarray:
    """Scores of a (time, band, y, x) block: float32 (time, score, y, x), in `methods` order.

    `signed_square` says the stored values are AEF-quantised: every metric but the plain
    "cosine" dequantises them first. A year has no data where its value equals `nodata`
    (integer stores) or is NaN (float stores).
    """
    methods = check_methods_and_metric(methods, metric)
    if block.ndim != 4:
        raise ParameterError(f"A block is (time, band, y, x); got shape {block.shape}.")
    block = np.ascontiguousarray(block)
    out = np.empty((block.shape[0], len(methods), block.shape[2], block.shape[3]), np.float32)
    options = (
        signed_square and metric != "cosine",
        nodata if nodata is not None else 0,
        nodata is not None,
        metric != "euclidean",
        methods.index("difference") if "difference" in methods else -1,
        methods.index("loo_medoid") if "loo_medoid" in methods else -1,
        robust_zscore,
    )
    _YEAR_COPIES.get(block.shape[0], _any_years)(block, options, out)
    return out


def warm_up(dtype, n_years: int = 9) -> float:
    """Compile (first run on a machine) or load from numba's cache the kernel for blocks of
    `dtype` and `n_years` years; returns the seconds it took, so a caller can tell the user
    why it waited."""
    started = time.perf_counter()
    change_scores(np.zeros((n_years, 1, 1, 1), dtype))
    return time.perf_counter() - started


def robust_time_zscore(scores: np.ndarray) -> np.ndarray:
    """Robust z-score along axis 0: (s - median) / (1.4826 * MAD), NaN-aware, NaN where MAD is 0."""
    flat = np.ascontiguousarray(scores, dtype=np.float32).reshape(scores.shape[0], -1)
    out = np.empty_like(flat)
    _zscore_columns(flat, out)
    return out.reshape(scores.shape)


# Rows of a block copied together: each (year, band) plane is read in runs of
# STRIP_ROWS x W values, which the memory system streams far better than row by row.
STRIP_ROWS = 16
LANES = simd.LANES
PIECES = 4 * LANES  # pixels of a row simd.transpose_pieces moves at once (four tiles)


@njit(cache=True, nogil=True)
def _copy_strip(block, y0, rows, tiles, strip):
    """Rows y0.. of a (T, B, H, W) block into the flat strip[row, tile, t * B + b, lane].

    A tile's (year, band) vectors come out next to each other, so loading a tile reads one
    run of T x B x 8 values. (With the planes' rows side by side instead, as stored, a tile's
    loads touch T x B cache lines, more than L1 holds, and missed it every time: 2.4x the
    load's cost.) Planes are taken four at a time, four tiles of each, and transposed in
    registers. Lanes past the block's width are never written and stay as created (zeros).
    """
    T, B, H, W = block.shape
    planes = T * B
    flat = block.reshape(-1)
    plane_size = H * W
    tile_size = planes * LANES
    full_planes = planes - planes % 4
    full_width = W - W % PIECES
    for p in range(0, planes, 4):
        group = min(4, planes - p)
        for r in range(rows):
            source = p * plane_size + (y0 + r) * W
            target = r * tiles * tile_size + p * LANES
            start = 0
            if p < full_planes:
                for x in range(0, full_width, PIECES):
                    simd.transpose_pieces(
                        flat, source + x, plane_size, strip, target + x * planes, tile_size
                    )
                start = full_width
            for q in range(group):
                for x in range(start, W):
                    lane = target + (x - x % LANES) * planes + q * LANES + x % LANES
                    strip[lane] = flat[source + q * plane_size + x]


@njit(cache=True, nogil=True)
def _zscore_columns(flat, out):
    """robust_time_zscore of each column of (T, n), eight columns at a time."""
    T, n = flat.shape
    series = np.full(T * LANES, np.nan, np.float32)
    work = np.empty(T * LANES, np.float32)
    zscores = np.empty(T * LANES, np.float32)
    for x0 in range(0, n, LANES):
        width = min(LANES, n - x0)
        for t in range(T):
            for lane in range(width):
                series[t * LANES + lane] = flat[t, x0 + lane]
        zscore_tile(series, T, work, zscores)
        for t in range(T):
            for lane in range(width):
                out[t, x0 + lane] = zscores[t * LANES + lane]


@njit(cache=True, nogil=True)
def _copy_row(row, n_years, width, out, y):
    """A row's scores, row[score, t, x], into out[t, score, y, x] as contiguous runs."""
    _, S, _, W = out.shape
    for score in range(S):
        for t in range(n_years):
            source = (score * n_years + t) * width
            for x in range(W):
                out[t, score, y, x] = row[source + x]


@njit(cache=True, nogil=True, inline="always")
def _score_tile(
    strip,
    offset,
    width,
    n_years,
    n_bands,
    options,
    scratch,
    row,
    x0,
):
    """Score one tile of eight pixels into row[score, t, x0:x0 + 8]."""
    signed_square, nodata, has_nodata, cosine, difference_index, loo_index, robust_zscore = options
    vectors, sums, valid, inverse_norms, dist, series, work, zscores = scratch
    padded = (n_years + 2) // 3 * 3
    scale = 1.0 if cosine else 1.0 / 127.5**2
    load_tile(
        strip,
        offset,
        n_years,
        n_bands,
        signed_square,
        scale,
        nodata,
        has_nodata,
        vectors,
        valid,
    )
    pair_sums(vectors, padded, n_bands, not cosine, sums)
    year_distances(sums, padded, n_years, cosine, valid, inverse_norms, dist)
    for score in (difference_index, loo_index):
        if score < 0:
            continue
        if score == difference_index:
            difference_scores(dist, valid, n_years, series)
        else:
            loo_medoid_scores(dist, valid, n_years, series, work)
        result = series
        if robust_zscore:
            zscore_tile(series, n_years, work, zscores)
            result = zscores
        for t in range(n_years):
            simd.store(row, (score * n_years + t) * width + x0, simd.load(result, t * LANES))


@njit(cache=True, nogil=True, inline="always")
def _scores_block(block, n_years, options, out):
    """The scores of `block` into `out`; n_years is block.shape[0], a constant in each copy."""
    T, B, H, W = block.shape
    tiles = (W + LANES - 1) // LANES
    padded = (T + 2) // 3 * 3  # pair_sums works on 3 x 3 year blocks; padding years are zeros
    strip = np.zeros(STRIP_ROWS * tiles * T * B * LANES, block.dtype)
    scratch = (
        np.zeros(padded * B * LANES, np.float32),  # vectors
        np.zeros(padded * padded * LANES, np.float32),  # sums
        np.zeros(T * LANES, np.float32),  # valid: 1.0 where the year has data
        np.zeros(T * LANES, np.float32),  # inverse norms
        np.zeros(T * T * LANES, np.float32),  # distances
        np.zeros(T * LANES, np.float32),  # series
        np.zeros(T * LANES, np.float32),  # work
        np.zeros(T * LANES, np.float32),  # z-scores
    )
    # Scores are gathered a row at a time: stored tile by tile straight into `out`, whose
    # (year, score) planes lie a power of two apart, every store would miss the cache.
    width = tiles * LANES + LANES  # not a power of two either
    row = np.empty(out.shape[1] * T * width, np.float32)
    for y0 in range(0, H, STRIP_ROWS):
        rows = min(STRIP_ROWS, H - y0)
        _copy_strip(block, y0, rows, tiles, strip)
        for r in range(rows):
            for tile in range(tiles):
                offset = (r * tiles + tile) * T * B * LANES
                x0 = tile * LANES
                _score_tile(strip, offset, width, n_years, B, options, scratch, row, x0)
            _copy_row(row, T, width, out, y0 + r)


def _year_copy(n_years: int):
    """The kernel compiled for blocks of `n_years` years (0: any count).

    A year count known at compile time lets LLVM unroll the year loops and keep a tile's
    series in registers (~2x faster). Each copy is compiled on first use only (~7 s for
    int8 blocks), then loaded from numba's cache.
    """

    @njit(cache=True, nogil=True)
    def scores_block(block, options, out):
        _scores_block(block, n_years if n_years else block.shape[0], options, out)

    return scores_block


# The mosaic's 9 years (10 next year) and 8 get a copy of their own.
_YEAR_COPIES = {n_years: _year_copy(n_years) for n_years in (8, 9, 10)}
_any_years = _year_copy(0)
