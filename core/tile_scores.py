"""A tile's scores: its (year, year) distance matrix in, difference and leave-one-out medoid
scores and their robust time z-scores out, for eight pixels at once (core.simd vectors).

Branch-free: selects instead of ifs, sorting networks for the medians. With the year count
a compile-time constant the networks unroll and the series stay in registers.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import simd

LANES = simd.LANES
# Fewer valid years than this and a score means nothing: NaN.
MIN_YEARS_LOO_MEDOID = 3
MIN_SCORES_ZSCORE = 3
MAD_TO_SIGMA = 1.4826
# Medoid sums this close (relative to the pixel's largest sum) are a tie: the earlier year wins.
MEDOID_TIE = 1e-5


@njit(cache=True, nogil=True)
def _is_valid(valid, t):
    return simd.greater(simd.load(valid, t * LANES), simd.splat(0.5))


@njit(cache=True, nogil=True)
def difference_scores(dist, valid, n_years, out):
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
def loo_medoid_scores(dist, valid, n_years, out, row_sums):
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
def zscore_tile(series, n_years, work, out):
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
