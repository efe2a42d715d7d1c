"""numba kernels: per-pixel change scores over a block of embeddings.

A block is (time, band, y, x) as stored. The kernel works a row at a time and every
inner loop runs along x over contiguous memory, so numba turns it into SIMD code: load
and dequantise the row, build every pixel's year-by-year distance matrix, score all
pixels of the row at once (branch-free selects, sorting networks for the medians).

Distances use the stable forms: cosine distance of unit vectors is |a - b|^2 / 2,
euclidean is |a - b|; sums of squared differences keep small distances accurate in
float32 and identical years exactly 0.

NaN rules (DATA.md; a score is NaN where it has too few valid years to mean anything):
- a year has no data where its first band is `nodata` (integer stores) or NaN (floats);
  for the cosine metrics a zero vector has no direction and counts as no data too;
- difference: to the previous year WITH data; NaN for the first year with data;
- loo_medoid: NaN with fewer than 3 valid years; a tie between medoids goes to the
  earlier year (sums within float32 rounding of each other are a tie);
- robust z-score: NaN with fewer than 3 finite scores or where the MAD is 0 (not inf).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .errors import ParameterError

METHODS = ("difference", "loo_medoid")
METRICS = ("alpha_earth_cosine", "cosine", "euclidean")
# Fewer valid years than this and a score means nothing: NaN.
MIN_YEARS_LOO_MEDOID = 3
MIN_SCORES_ZSCORE = 3
MAD_TO_SIGMA = 1.4826
# |a - b|^2 of two float32-normalised parallel vectors is rounding noise below ~1e-14;
# the smallest real AEF change (one band, one quantum) is ~4e-9. Below this: distance 0.
COSINE_NOISE_FLOOR = 1e-12
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


def robust_time_zscore(scores: np.ndarray) -> np.ndarray:
    """Robust z-score along axis 0: (s - median) / (1.4826 * MAD), NaN-aware, NaN where MAD is 0."""
    flat = np.ascontiguousarray(scores, dtype=np.float32).reshape(scores.shape[0], -1)
    out = np.empty_like(flat)
    _zscore_columns(flat, out)
    return out.reshape(scores.shape)


@njit(cache=True, nogil=True)
def _zscore_columns(flat, out):
    T, n = flat.shape
    series = np.empty(T, np.float32)
    result = np.empty(T, np.float32)
    work = np.empty(T, np.float64)
    for i in range(n):
        for t in range(T):
            series[t] = flat[t, i]
        _zscore_series(series, result, work)
        for t in range(T):
            out[t, i] = result[t]


@njit(cache=True, nogil=True)
def _sorted_median(values, n):
    """Median of values[:n], sorting them in place (insertion sort: n is a handful of years)."""
    for i in range(1, n):
        v = values[i]
        j = i - 1
        while j >= 0 and values[j] > v:
            values[j + 1] = values[j]
            j -= 1
        values[j + 1] = v
    half = n // 2
    if n % 2 == 1:
        return values[half]
    return 0.5 * (values[half - 1] + values[half])


@njit(cache=True, nogil=True)
def _zscore_series(series, out, work):
    """Robust z-score of one pixel's series into `out`; `work` is scratch of the same length."""
    T = series.shape[0]
    n = 0
    for t in range(T):
        if not math.isnan(series[t]):
            work[n] = series[t]
            n += 1
    if n < MIN_SCORES_ZSCORE:
        out[:] = np.nan
        return
    median = _sorted_median(work, n)
    for i in range(n):
        work[i] = abs(work[i] - median)
    mad = _sorted_median(work, n)
    if mad == 0.0:
        out[:] = np.nan
        return
    scale = MAD_TO_SIGMA * mad
    for t in range(T):
        out[t] = (series[t] - median) / scale  # NaN stays NaN


@njit(cache=True, nogil=True)
def _load_row(block, y, signed_square, nodata, has_nodata, values, valid):
    """Row y of the block as float32 (time, band, x); valid[t, x] False where year t has no data.

    No data is marked in every band at once (DATA.md), so the first band tells.
    signed_square: value = sign(q) * (q / 127.5)^2 = q * |q| / 127.5^2.
    """
    T, B, _, W = block.shape
    for t in range(T):
        for x in range(W):
            q = block[t, 0, y, x]
            valid[t, x] = not ((has_nodata and q == nodata) or math.isnan(np.float32(q)))
        for b in range(B):
            if signed_square:
                for x in range(W):
                    v = np.float32(block[t, b, y, x])
                    values[t, b, x] = v * abs(v) * np.float32(1.0 / 127.5**2)
            else:
                for x in range(W):
                    values[t, b, x] = np.float32(block[t, b, y, x])


@njit(cache=True, nogil=True)
def _normalise_row(values, valid, norm):
    """Scale each (year, pixel) vector to unit length; a zero vector has no direction: not valid.

    The norm is summed in float64 so that parallel vectors come out equal to float32 rounding.
    """
    T, B, W = values.shape
    for t in range(T):
        norm[:] = 0.0
        for b in range(B):
            for x in range(W):
                v = np.float64(values[t, b, x])
                norm[x] += v * v
        for x in range(W):
            if norm[x] > 0.0:
                norm[x] = 1.0 / math.sqrt(norm[x])
            else:
                valid[t, x] = False
        for b in range(B):
            for x in range(W):
                values[t, b, x] = np.float32(values[t, b, x] * norm[x])


@njit(cache=True, nogil=True)
def _distance_row(values, cosine, acc, dist):
    """dist[x, i, j]: distance between years i and j at pixel x (symmetric, 0 on the diagonal)."""
    T, B, W = values.shape
    for i in range(T):
        for x in range(W):
            dist[x, i, i] = 0.0
        for j in range(i + 1, T):
            acc[:] = 0.0
            for b in range(B):
                for x in range(W):
                    d = values[i, b, x] - values[j, b, x]
                    acc[x] += d * d
            for x in range(W):
                if cosine:
                    d = 0.5 * acc[x] if acc[x] > COSINE_NOISE_FLOOR else 0.0
                else:
                    d = math.sqrt(acc[x])
                dist[x, i, j] = d
                dist[x, j, i] = d


@njit(cache=True, nogil=True)
def _difference(dist, valid, out):
    """s_t = d(e_t, e_prev) with e_prev the previous year with data; NaN for the first such year."""
    prev = -1
    for t in range(dist.shape[0]):
        out[t] = np.nan
        if valid[t]:
            if prev >= 0:
                out[t] = dist[t, prev]
            prev = t


@njit(cache=True, nogil=True)
def _loo_medoid(dist, valid, out, row_sums):
    """s_k = d(e_k, medoid of the other valid years); NaN below MIN_YEARS_LOO_MEDOID valid years.

    The medoid of E_-k minimises sum_{j in E_-k} d(e_i, e_j) = R_i - d(e_i, e_k), with R_i the
    row sum over all valid years (d(e_i, e_i) = 0), so each k costs O(T), not O(T^2).
    Sums within MEDOID_TIE of each other are a tie (float32 rounding cannot order them):
    the earlier year wins, e.g. with three valid years the first remaining one.
    """
    T = dist.shape[0]
    out[:] = np.nan
    n_valid = 0
    tolerance = 0.0
    for i in range(T):
        row_sums[i] = 0.0
        if valid[i]:
            n_valid += 1
            for j in range(T):
                if valid[j]:
                    row_sums[i] += dist[i, j]
            tolerance = max(tolerance, MEDOID_TIE * row_sums[i])
    if n_valid < MIN_YEARS_LOO_MEDOID:
        return
    for k in range(T):
        if not valid[k]:
            continue
        best = np.inf
        medoid = -1
        for i in range(T):
            if i != k and valid[i]:
                total = row_sums[i] - dist[i, k]
                if total < best - tolerance:  # the first year wins a tie
                    best = total
                    medoid = i
        out[k] = dist[k, medoid]


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
    values = np.empty((T, B, W), np.float32)
    valid = np.empty((T, W), np.bool_)
    norm = np.empty(W, np.float64)
    acc = np.empty(W, np.float32)
    dist = np.empty((W, T, T), np.float32)
    series = np.empty(T, np.float32)
    zscores = np.empty(T, np.float32)
    work = np.empty(T, np.float64)
    for y in range(H):
        _load_row(block, y, signed_square, nodata, has_nodata, values, valid)
        if cosine:
            _normalise_row(values, valid, norm)
        _distance_row(values, cosine, acc, dist)
        for x in range(W):
            for score in (difference_index, loo_index):
                if score < 0:
                    continue
                if score == difference_index:
                    _difference(dist[x], valid[:, x], series)
                else:
                    _loo_medoid(dist[x], valid[:, x], series, work)
                if robust_zscore:
                    _zscore_series(series, zscores, work)
                    for t in range(T):
                        out[t, score, y, x] = zscores[t]
                else:
                    for t in range(T):
                        out[t, score, y, x] = series[t]
