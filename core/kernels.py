"""numba kernels: per-pixel change scores over a block of embeddings.

A block is (time, band, y, x) as stored. The kernel works a row at a time and every inner
loop runs along the row's pixels over contiguous memory, so numba turns it into SIMD code:
load and dequantise the row, build every pixel's year-by-year distance matrix, then score
all its pixels at once with branch-free selects and sorting networks for the medians.

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
    for start in range(0, flat.shape[1], ZSCORE_COLUMNS):
        series = np.ascontiguousarray(flat[:, start : start + ZSCORE_COLUMNS])
        zscores = np.empty_like(series)
        _zscore_row(series, np.empty_like(series), zscores)
        out[:, start : start + ZSCORE_COLUMNS] = zscores
    return out.reshape(scores.shape)


ZSCORE_COLUMNS = 4096  # series that robust_time_zscore scores together


@njit(cache=True, nogil=True)
def _sort_columns(values):
    """Sort each column of (T, n) ascending: odd-even transposition network, branch-free."""
    T, n = values.shape
    for step in range(T):
        for t in range(step % 2, T - 1, 2):
            for p in range(n):
                a = values[t, p]
                b = values[t + 1, p]
                values[t, p] = min(a, b)
                values[t + 1, p] = max(a, b)


@njit(cache=True, nogil=True)
def _column_medians(values, counts, medians):
    """Median of the first counts[p] values of each sorted column."""
    for p in range(values.shape[1]):
        c = counts[p]
        if c == 0:
            medians[p] = np.nan
        elif c % 2 == 1:
            medians[p] = values[c // 2, p]
        else:
            medians[p] = np.float32(0.5) * (values[c // 2 - 1, p] + values[c // 2, p])


@njit(cache=True, nogil=True)
def _zscore_row(series, scratch, out):
    """Robust z-score of each pixel's series (T, n) into `out`; NaN scores sort last as inf."""
    T, n = series.shape
    counts = np.zeros(n, np.int64)
    medians = np.empty(n, np.float32)
    mads = np.empty(n, np.float32)
    for t in range(T):
        for p in range(n):
            v = series[t, p]
            finite = not math.isnan(v)
            counts[p] += finite
            scratch[t, p] = v if finite else np.inf
    _sort_columns(scratch)
    _column_medians(scratch, counts, medians)
    for t in range(T):
        for p in range(n):
            v = series[t, p]
            scratch[t, p] = abs(v - medians[p]) if not math.isnan(v) else np.inf
    _sort_columns(scratch)
    _column_medians(scratch, counts, mads)
    for t in range(T):
        for p in range(n):
            usable = counts[p] >= MIN_SCORES_ZSCORE and mads[p] > 0.0
            scale = np.float32(MAD_TO_SIGMA) * mads[p]
            out[t, p] = (series[t, p] - medians[p]) / scale if usable else np.nan


@njit(cache=True, nogil=True)
def _load_row(block, y, signed_square, nodata, has_nodata, values, valid):
    """Row y of the block as float32 (time, band, pixel); valid[t, p] False where no data.

    No data is marked in every band at once (DATA.md), so the first band tells.
    signed_square: value = sign(q) * (q / 127.5)^2 = q * |q| / 127.5^2.
    """
    T, B, _, n = block.shape
    scale = np.float32(1.0 / 127.5**2)
    for t in range(T):
        for p in range(n):
            q = block[t, 0, y, p]
            valid[t, p] = not ((has_nodata and q == nodata) or math.isnan(np.float32(q)))
        for b in range(B):
            if signed_square:
                for p in range(n):
                    v = np.float32(block[t, b, y, p])
                    values[t, b, p] = v * abs(v) * scale
            else:
                for p in range(n):
                    values[t, b, p] = np.float32(block[t, b, y, p])


@njit(cache=True, nogil=True)
def _normalise_row(values, valid, norm):
    """Scale each (year, pixel) vector to unit length; a zero vector has no direction: not valid.

    The norm is summed in float64 so that parallel vectors come out equal to float32 rounding.
    """
    T, B, n = values.shape
    for t in range(T):
        norm[:] = 0.0
        for b in range(B):
            for p in range(n):
                v = np.float64(values[t, b, p])
                norm[p] += v * v
        for p in range(n):
            if norm[p] > 0.0:
                norm[p] = 1.0 / math.sqrt(norm[p])
            else:
                valid[t, p] = False
        for b in range(B):
            for p in range(n):
                values[t, b, p] = np.float32(values[t, b, p] * norm[p])


@njit(cache=True, nogil=True)
def _distance_row(values, cosine, acc, dist):
    """dist[i, j, p]: distance between years i and j at pixel p (symmetric, 0 on the diagonal)."""
    T, B, n = values.shape
    for i in range(T):
        for p in range(n):
            dist[i, i, p] = 0.0
        for j in range(i + 1, T):
            acc[:] = 0.0
            for b in range(B):
                for p in range(n):
                    d = values[i, b, p] - values[j, b, p]
                    acc[p] += d * d
            for p in range(n):
                if cosine:
                    d = 0.5 * acc[p] if acc[p] > COSINE_NOISE_FLOOR else 0.0
                else:
                    d = math.sqrt(acc[p])
                dist[i, j, p] = d
                dist[j, i, p] = d


@njit(cache=True, nogil=True)
def _difference_row(dist, valid, out, found):
    """s_t = d(e_t, e_prev) with e_prev the previous year with data; NaN for the first such year."""
    T, _, n = dist.shape
    for t in range(T):
        for p in range(n):
            found[p] = False
            out[t, p] = np.nan
        for u in range(t - 1, -1, -1):
            for p in range(n):
                take = valid[u, p] and not found[p]
                out[t, p] = dist[t, u, p] if take else out[t, p]
                found[p] = found[p] or valid[u, p]
        for p in range(n):
            out[t, p] = out[t, p] if valid[t, p] else np.nan


@njit(cache=True, nogil=True)
def _loo_medoid_row(dist, valid, out, row_sums):
    """s_k = d(e_k, medoid of the other valid years); NaN below MIN_YEARS_LOO_MEDOID valid years.

    The medoid of E_-k minimises sum_{j in E_-k} d(e_i, e_j) = R_i - d(e_i, e_k), with R_i the
    row sum over all valid years (d(e_i, e_i) = 0), so each k costs O(T), not O(T^2).
    Sums within MEDOID_TIE of each other are a tie (float32 rounding cannot order them):
    the earlier year wins, e.g. with three valid years the first remaining one.
    """
    T, _, n = dist.shape
    n_valid = np.zeros(n, np.int64)
    tolerance = np.zeros(n, np.float32)
    best = np.empty(n, np.float32)
    for i in range(T):
        for p in range(n):
            row_sums[i, p] = 0.0
        for j in range(T):
            for p in range(n):
                row_sums[i, p] += dist[i, j, p] if valid[j, p] else np.float32(0.0)
        for p in range(n):
            n_valid[p] += valid[i, p]
            tie = np.float32(MEDOID_TIE) * row_sums[i, p] if valid[i, p] else np.float32(0.0)
            tolerance[p] = max(tolerance[p], tie)
    for k in range(T):
        for p in range(n):
            best[p] = np.inf
            out[k, p] = np.nan
        for i in range(T):
            if i == k:
                continue
            for p in range(n):
                total = row_sums[i, p] - dist[i, k, p]
                better = valid[i, p] and total < best[p] - tolerance[p]  # earlier year wins ties
                best[p] = total if better else best[p]
                out[k, p] = dist[k, i, p] if better else out[k, p]
        for p in range(n):
            keep = valid[k, p] and n_valid[p] >= MIN_YEARS_LOO_MEDOID
            out[k, p] = out[k, p] if keep else np.nan


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
    found = np.empty(W, np.bool_)
    dist = np.empty((T, T, W), np.float32)
    series = np.empty((T, W), np.float32)
    scratch = np.empty((T, W), np.float32)
    zscores = np.empty((T, W), np.float32)
    for y in range(H):
        _load_row(block, y, signed_square, nodata, has_nodata, values, valid)
        if cosine:
            _normalise_row(values, valid, norm)
        _distance_row(values, cosine, acc, dist)
        for score in (difference_index, loo_index):
            if score < 0:
                continue
            if score == difference_index:
                _difference_row(dist, valid, series, found)
            else:
                _loo_medoid_row(dist, valid, series, scratch)
            result = series
            if robust_zscore:
                _zscore_row(series, scratch, zscores)
                result = zscores
            for t in range(T):
                for p in range(W):
                    out[t, score, y, p] = result[t, p]
