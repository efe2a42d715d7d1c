"""numba kernels: per-pixel change scores over a block of embeddings.

A block is (time, band, y, x) as stored. The kernel copies a strip of rows at a time (each
year-band plane read as one run), then scores tiles of eight neighbouring pixels with
explicit 8-lane vectors (core.simd): a tile's vectors are loaded and dequantised once, the
year-by-year Gram matrix (or, for euclidean, the sums of squared differences) is built
with its accumulators in registers, and the scores, medians and z-scores of the eight
pixels are computed together with branch-free selects and sorting networks.

Distances: cosine from the Gram matrix, 1 - g_ij / (|x_i| |x_j|), rounding near 0 and 2
snapped (COSINE_NOISE_FLOOR); euclidean as |a - b| from summed squared differences, which
keeps small distances accurate and identical years exactly 0.

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

METHODS = ("difference", "loo_medoid")
METRICS = ("alpha_earth_cosine", "cosine", "euclidean")
# Fewer valid years than this and a score means nothing: NaN.
MIN_YEARS_LOO_MEDOID = 3
MIN_SCORES_ZSCORE = 3
MAD_TO_SIGMA = 1.4826
# 1 - cos from a float32 Gram matrix carries rounding of a few 1e-7: a cosine distance this
# close to 0 (parallel vectors) or 2 (opposite ones) is rounding and counts as exactly that.
COSINE_NOISE_FLOOR = 1e-6
# Medoid sums this close (relative to the pixel's largest sum) are a tie: the earlier year wins.
MEDOID_TIE = 1e-5


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
    _scores_block(
        block,
        signed_square and metric != "cosine",
        nodata if nodata is not None else 0,
        nodata is not None,
        metric != "euclidean",
        methods.index("difference") if "difference" in methods else -1,
        methods.index("loo_medoid") if "loo_medoid" in methods else -1,
        robust_zscore,
        out,
    )
    return out


def warm_up(dtype) -> float:
    """Compile (first run on a machine) or load from numba's cache the kernel for blocks of
    `dtype`; returns the seconds it took, so a caller can tell the user why it waited."""
    started = time.perf_counter()
    change_scores(np.zeros((3, 1, 1, 1), dtype))
    return time.perf_counter() - started


def robust_time_zscore(scores: np.ndarray) -> np.ndarray:
    """Robust z-score along axis 0: (s - median) / (1.4826 * MAD), NaN-aware, NaN where MAD is 0."""
    flat = np.ascontiguousarray(scores, dtype=np.float32).reshape(scores.shape[0], -1)
    out = np.empty_like(flat)
    _zscore_columns(flat, out)
    return out.reshape(scores.shape)


# Rows of a block copied together: each (year, band) plane is then read in runs of
# STRIP_ROWS x width, which the memory system streams far better than one row at a time.
STRIP_ROWS = 16
LANES = simd.LANES


@njit(cache=True, nogil=True)
def _copy_strip(block, y0, rows, width, strip):
    """Rows y0.. of a (T, B, H, W) block into the flat strip[row, t, b, x], rows `width` long.

    Lanes past the block's width are never written and stay as created (zeros).
    """
    T, B, H, W = block.shape
    flat = block.reshape(-1)
    full = W - W % simd.MOVE
    for t in range(T):
        for b in range(B):
            # A plane's rows y0.. are one run of rows x W values: read in order.
            for r in range(rows):
                source = ((t * B + b) * H + y0 + r) * W
                target = ((r * T + t) * B + b) * width
                for x in range(0, full, simd.MOVE):
                    simd.move(flat, source + x, strip, target + x)
                for x in range(full, W):
                    strip[target + x] = flat[source + x]


@njit(cache=True, nogil=True)
def _load_tile(
    strip,
    offset,
    stride,
    n_years,
    n_bands,
    signed_square,
    scale,
    nodata,
    has_nodata,
    vectors,
    valid,
):
    """A tile's (year, band) vectors as float32, and valid: 1.0 where the year has data.

    No data is marked in every band at once (DATA.md), so the first band tells; a year with
    no data keeps whatever values it has, every distance to it is masked later.
    signed_square: value = sign(q) * (q / 127.5)^2 = q * |q| * scale, scale = 1 / 127.5^2,
    or 1 for the cosine metrics, which a constant factor cannot change.
    """
    zero = simd.splat(0.0)
    for t in range(n_years):
        first = simd.load(strip, offset + t * n_bands * stride)
        present = simd.negate(simd.is_nan(first, first))
        if has_nodata:
            present = simd.both(present, simd.negate(simd.equal(first, simd.splat(nodata))))
        simd.store(valid, t * LANES, simd.select(present, simd.splat(1.0), zero))
        for b in range(n_bands):
            value = simd.load(strip, offset + (t * n_bands + b) * stride)
            if signed_square:
                value = simd.mul(value, simd.absolute(value))
                if scale != 1.0:
                    value = simd.mul(value, simd.splat(scale))
            simd.store(vectors, (t * n_bands + b) * LANES, value)


@njit(cache=True, nogil=True)
def _is_valid(valid, t):
    return simd.greater(simd.load(valid, t * LANES), simd.splat(0.5))


@njit(cache=True, nogil=True)
def _pair_sums(vectors, padded, n_bands, differences, sums):
    """sums[i, j] = sum over bands of x_i x_j (a Gram matrix) or of (x_i - x_j)^2.

    Years go in 3 x 3 blocks whose nine accumulators stay in registers while the bands
    stream past, so each loaded vector feeds three products; `padded` is a multiple of 3
    (padding years are zeros). Only pairs on or above the diagonal are computed.
    """
    if differences:  # a constant in each copy: no branch left in the band loop
        _pair_block_sums(vectors, padded, n_bands, True, sums)
    else:
        _pair_block_sums(vectors, padded, n_bands, False, sums)


@njit(cache=True, nogil=True, inline="always")
def _pair_block_sums(vectors, padded, n_bands, differences, sums):
    for i0 in range(0, padded, 3):
        _diagonal_block_sums(vectors, i0, padded, n_bands, differences, sums)
        for j0 in range(i0 + 3, padded, 3):
            s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = simd.splat(0.0)
            for b in range(n_bands):
                i_0 = simd.load(vectors, (i0 * n_bands + b) * LANES)
                i_1 = simd.load(vectors, ((i0 + 1) * n_bands + b) * LANES)
                i_2 = simd.load(vectors, ((i0 + 2) * n_bands + b) * LANES)
                j_0 = simd.load(vectors, (j0 * n_bands + b) * LANES)
                j_1 = simd.load(vectors, ((j0 + 1) * n_bands + b) * LANES)
                j_2 = simd.load(vectors, ((j0 + 2) * n_bands + b) * LANES)
                s00 = _pair_term(i_0, j_0, s00, differences)
                s01 = _pair_term(i_0, j_1, s01, differences)
                s02 = _pair_term(i_0, j_2, s02, differences)
                s10 = _pair_term(i_1, j_0, s10, differences)
                s11 = _pair_term(i_1, j_1, s11, differences)
                s12 = _pair_term(i_1, j_2, s12, differences)
                s20 = _pair_term(i_2, j_0, s20, differences)
                s21 = _pair_term(i_2, j_1, s21, differences)
                s22 = _pair_term(i_2, j_2, s22, differences)
            _store_row(sums, i0, j0, padded, s00, s01, s02)
            _store_row(sums, i0 + 1, j0, padded, s10, s11, s12)
            _store_row(sums, i0 + 2, j0, padded, s20, s21, s22)


@njit(cache=True, nogil=True, inline="always")
def _diagonal_block_sums(vectors, i0, padded, n_bands, differences, sums):
    """The 3 x 3 block of years i0..i0 + 2 with themselves: 6 pairs (3 for differences)."""
    s00 = s01 = s02 = s11 = s12 = s22 = simd.splat(0.0)
    for b in range(n_bands):
        x_0 = simd.load(vectors, (i0 * n_bands + b) * LANES)
        x_1 = simd.load(vectors, ((i0 + 1) * n_bands + b) * LANES)
        x_2 = simd.load(vectors, ((i0 + 2) * n_bands + b) * LANES)
        s01 = _pair_term(x_0, x_1, s01, differences)
        s02 = _pair_term(x_0, x_2, s02, differences)
        s12 = _pair_term(x_1, x_2, s12, differences)
        if not differences:  # |x_i - x_i|^2 is 0
            s00 = simd.fma(x_0, x_0, s00)
            s11 = simd.fma(x_1, x_1, s11)
            s22 = simd.fma(x_2, x_2, s22)
    _store_row(sums, i0, i0, padded, s00, s01, s02)
    _store_row(sums, i0 + 1, i0, padded, s01, s11, s12)
    _store_row(sums, i0 + 2, i0, padded, s02, s12, s22)


@njit(cache=True, nogil=True, inline="always")
def _pair_term(a, b, total, differences):
    """total + a * b, or total + (a - b)^2."""
    if differences:
        a = simd.sub(a, b)
        b = a
    return simd.fma(a, b, total)


@njit(cache=True, nogil=True)
def _store_row(sums, i, j0, padded, s0, s1, s2):
    simd.store(sums, (i * padded + j0) * LANES, s0)
    simd.store(sums, (i * padded + j0 + 1) * LANES, s1)
    simd.store(sums, (i * padded + j0 + 2) * LANES, s2)


@njit(cache=True, nogil=True)
def _distances(sums, padded, n_years, cosine, valid, inverse_norms, dist):
    """dist[i, j]: the metric's distance between years i and j (symmetric, 0 on the diagonal).

    cosine: 1 - g_ij r_i r_j from the Gram matrix g, r_i = 1 / |x_i|, with r_i r_j multiplied
    first so that equal pairs give bitwise equal distances (a zero MAD stays exactly zero).
    Within COSINE_NOISE_FLOOR of 0 (parallel) or 2 (opposite) a distance is float32 rounding
    and snaps to it. A zero vector has no direction: not valid. Euclidean: sums are squared
    differences.
    """
    zero = simd.splat(0.0)
    one = simd.splat(1.0)
    two = simd.splat(2.0)
    floor = simd.splat(COSINE_NOISE_FLOOR)
    top = simd.splat(2.0 - COSINE_NOISE_FLOOR)
    if cosine:
        for i in range(n_years):
            norm = simd.load(sums, (i * padded + i) * LANES)
            has_direction = simd.greater(norm, zero)
            simd.store(
                inverse_norms,
                i * LANES,
                simd.select(has_direction, simd.div(one, simd.sqrt(norm)), zero),
            )
            simd.store(
                valid, i * LANES, simd.select(has_direction, simd.load(valid, i * LANES), zero)
            )
    for i in range(n_years):
        simd.store(dist, (i * n_years + i) * LANES, zero)
        for j in range(i + 1, n_years):
            s = simd.load(sums, (i * padded + j) * LANES)
            if cosine:
                scale = simd.mul(
                    simd.load(inverse_norms, i * LANES), simd.load(inverse_norms, j * LANES)
                )
                d = simd.sub(one, simd.mul(s, scale))
                d = simd.select(simd.greater(d, floor), d, zero)
                d = simd.select(simd.less(d, top), d, two)
            else:
                d = simd.sqrt(s)
            simd.store(dist, (i * n_years + j) * LANES, d)
            simd.store(dist, (j * n_years + i) * LANES, d)


@njit(cache=True, nogil=True)
def _difference_scores(dist, valid, n_years, out):
    """s_t = d(e_t, e_prev) with e_prev the previous year with data; NaN for the first such year."""
    nan = simd.splat(np.nan)
    for t in range(n_years):
        score = nan
        found = simd.less(nan, nan)  # all false
        for u in range(t - 1, -1, -1):
            present = _is_valid(valid, u)
            take = simd.both(present, simd.negate(found))
            score = simd.select(take, simd.load(dist, (t * n_years + u) * LANES), score)
            found = simd.either(found, present)
        simd.store(out, t * LANES, simd.select(_is_valid(valid, t), score, nan))


@njit(cache=True, nogil=True)
def _loo_medoid_scores(dist, valid, n_years, out, row_sums):
    """s_k = d(e_k, medoid of the other valid years); NaN below MIN_YEARS_LOO_MEDOID valid years.

    The medoid of E_-k minimises sum_{j in E_-k} d(e_i, e_j) = R_i - d(e_i, e_k), with R_i the
    row sum over all valid years (d(e_i, e_i) = 0), so each k costs O(T), not O(T^2).
    Sums within MEDOID_TIE of each other are a tie (float32 rounding cannot order them):
    the earlier year wins, e.g. with three valid years the first remaining one.
    """
    zero = simd.splat(0.0)
    nan = simd.splat(np.nan)
    n_valid = zero
    tolerance = zero
    for i in range(n_years):
        total = zero
        for j in range(n_years):
            total = simd.add(
                total,
                simd.select(_is_valid(valid, j), simd.load(dist, (i * n_years + j) * LANES), zero),
            )
        simd.store(row_sums, i * LANES, total)
        present = _is_valid(valid, i)
        n_valid = simd.add(n_valid, simd.load(valid, i * LANES))
        tie = simd.select(present, simd.mul(simd.splat(MEDOID_TIE), total), zero)
        tolerance = simd.maximum(tolerance, tie)
    enough = simd.greater_equal(n_valid, simd.splat(MIN_YEARS_LOO_MEDOID))
    for k in range(n_years):
        best = simd.splat(np.inf)
        score = nan
        for i in range(n_years):
            if i == k:
                continue
            total = simd.sub(
                simd.load(row_sums, i * LANES), simd.load(dist, (i * n_years + k) * LANES)
            )
            # strictly better by more than the tolerance: the earlier year wins ties
            better = simd.both(_is_valid(valid, i), simd.less(total, simd.sub(best, tolerance)))
            best = simd.select(better, total, best)
            score = simd.select(better, simd.load(dist, (k * n_years + i) * LANES), score)
        keep = simd.both(_is_valid(valid, k), enough)
        simd.store(out, k * LANES, simd.select(keep, score, nan))


@njit(cache=True, nogil=True)
def _sort_years(values, n_years):
    """Sort each lane's n_years values ascending: odd-even transposition network, branch-free."""
    for step in range(n_years):
        for t in range(step % 2, n_years - 1, 2):
            a = simd.load(values, t * LANES)
            b = simd.load(values, (t + 1) * LANES)
            simd.store(values, t * LANES, simd.minimum(a, b))
            simd.store(values, (t + 1) * LANES, simd.maximum(a, b))


@njit(cache=True, nogil=True)
def _sorted_median(values, counts, n_years):
    """Median of the first counts values of each lane's sorted series (NaN for none)."""
    nan = simd.splat(np.nan)
    odd = low = high = nan
    for t in range(n_years):
        value = simd.load(values, t * LANES)
        odd = simd.select(simd.equal(counts, simd.splat(2 * t + 1)), value, odd)
        low = simd.select(simd.equal(counts, simd.splat(2 * t + 2)), value, low)
        high = simd.select(simd.equal(counts, simd.splat(2 * t)), value, high)
    even = simd.mul(simd.splat(0.5), simd.add(low, high))
    return simd.select(simd.is_nan(odd, odd), even, odd)


@njit(cache=True, nogil=True)
def _zscore_tile(series, n_years, work, out):
    """Robust z-score of each lane's series; NaN scores sort last as inf."""
    inf = simd.splat(np.inf)
    counts = simd.splat(0.0)
    for t in range(n_years):
        value = simd.load(series, t * LANES)
        missing = simd.is_nan(value, value)
        counts = simd.add(counts, simd.select(missing, simd.splat(0.0), simd.splat(1.0)))
        simd.store(work, t * LANES, simd.select(missing, inf, value))
    _sort_years(work, n_years)
    median = _sorted_median(work, counts, n_years)
    for t in range(n_years):
        value = simd.load(series, t * LANES)
        deviation = simd.absolute(simd.sub(value, median))
        simd.store(work, t * LANES, simd.select(simd.is_nan(value, value), inf, deviation))
    _sort_years(work, n_years)
    mad = _sorted_median(work, counts, n_years)
    usable = simd.both(
        simd.greater_equal(counts, simd.splat(MIN_SCORES_ZSCORE)),
        simd.greater(mad, simd.splat(0.0)),
    )
    scale = simd.mul(simd.splat(MAD_TO_SIGMA), mad)
    for t in range(n_years):
        z = simd.div(simd.sub(simd.load(series, t * LANES), median), scale)
        simd.store(out, t * LANES, simd.select(usable, z, simd.splat(np.nan)))


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
        _zscore_tile(series, T, work, zscores)
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
    _load_tile(
        strip,
        offset,
        width,
        n_years,
        n_bands,
        signed_square,
        scale,
        nodata,
        has_nodata,
        vectors,
        valid,
    )
    _pair_sums(vectors, padded, n_bands, not cosine, sums)
    _distances(sums, padded, n_years, cosine, valid, inverse_norms, dist)
    for score in (difference_index, loo_index):
        if score < 0:
            continue
        if score == difference_index:
            _difference_scores(dist, valid, n_years, series)
        else:
            _loo_medoid_scores(dist, valid, n_years, series, work)
        result = series
        if robust_zscore:
            _zscore_tile(series, n_years, work, zscores)
            result = zscores
        for t in range(n_years):
            simd.store(row, (score * n_years + t) * width + x0, simd.load(result, t * LANES))


@njit(cache=True, nogil=True)
def _scores_block(
    block,
    signed_square,
    nodata,
    has_nodata,
    cosine,
    difference_index,
    loo_index,
    robust_zscore,
    out,
):
    T, B, H, W = block.shape
    tiles = (W + LANES - 1) // LANES
    padded = (T + 2) // 3 * 3  # _pair_sums works on 3 x 3 year blocks; padding years are zeros
    width = tiles * LANES + LANES  # not a power of two: rows of a strip spread over the cache sets
    strip = np.zeros(STRIP_ROWS * T * B * width, block.dtype)
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
    row = np.empty(out.shape[1] * T * width, np.float32)
    options = (
        signed_square,
        nodata,
        has_nodata,
        cosine,
        difference_index,
        loo_index,
        robust_zscore,
    )
    for y0 in range(0, H, STRIP_ROWS):
        rows = min(STRIP_ROWS, H - y0)
        _copy_strip(block, y0, rows, width, strip)
        for r in range(rows):
            for tile in range(tiles):
                offset = r * T * B * width + tile * LANES
                # A year count known at compile time lets LLVM unroll the year loops and keep
                # a tile's series in registers (~2x faster). Each copy costs ~5 s of compiling
                # on first use: the mosaic's 9 years (10 next year) and 8 get one.
                x0 = tile * LANES
                if T == 9:
                    _score_tile(strip, offset, width, 9, B, options, scratch, row, x0)
                elif T == 10:
                    _score_tile(strip, offset, width, 10, B, options, scratch, row, x0)
                elif T == 8:
                    _score_tile(strip, offset, width, 8, B, options, scratch, row, x0)
                else:
                    _score_tile(strip, offset, width, T, B, options, scratch, row, x0)
            _copy_row(row, T, width, out, y0 + r)
