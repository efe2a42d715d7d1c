"""The numba kernels against a plain per-pixel float64 implementation of DATA.md's definitions.

The reference below is written for clarity, not speed: one pixel at a time, the distance
straight from its formula, the leave-one-out medoid by direct sums, nanmedian/MAD z-scores.
Random cases (seeded numpy RNG loops) cover no-data years, all-no-data pixels, duplicate and
nearly duplicate years (ties, zero MAD), 1 to 12 years, every metric, int8 and float input.
"""

import numpy as np
import pytest

from embedding_change.core import kernels
from embedding_change.core.errors import ParameterError

NODATA = -128
# The kernel computes in float32: distances agree with float64 to about this much.
SCORE_ATOL = 2e-5
SCORE_RTOL = 2e-5


# --- the reference: one pixel at a time, float64, from the definitions -----------------


def reference_vectors(block, signed_square, metric, nodata):
    """float64 (T, B, H, W) vectors as the metric sees them, and valid (T, H, W)."""
    values = block.astype(np.float64)
    if nodata is not None:
        valid = ~np.all(block == nodata, axis=1)
    else:
        valid = ~np.all(np.isnan(values), axis=1)
    if signed_square and metric != "cosine":
        values = np.sign(values) * (values / 127.5) ** 2
    if metric != "euclidean":
        # A zero vector has no direction: its cosine distance is 0/0, so it counts as no data.
        valid &= np.any(np.nan_to_num(values) != 0, axis=1)
    return values, valid


def reference_distance(a, b, metric):
    if np.array_equal(a, b):
        return 0.0  # exactly, where 1 - a.b/(|a||b|) would leave float64 rounding
    if metric == "euclidean":
        return float(np.sqrt(np.sum((a - b) ** 2)))
    return float(1.0 - np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def reference_distance_matrix(vectors, valid, metric):
    T = len(vectors)
    dist = np.full((T, T), np.nan)
    for i in range(T):
        for j in range(i, T):
            if valid[i] and valid[j]:
                dist[i, j] = dist[j, i] = reference_distance(vectors[i], vectors[j], metric)
    return dist


def reference_difference(dist, valid):
    """d(e_t, e_prev), e_prev the previous year with data; NaN for the first year with data."""
    scores = np.full(len(valid), np.nan)
    previous = None
    for t in np.flatnonzero(valid):
        if previous is not None:
            scores[t] = dist[t, previous]
        previous = t
    return scores


def reference_loo_medoid(dist, valid, tie_tolerance=1e-4):
    """Scores (first year wins a tie) and, per year, every score a near-tied medoid gives."""
    T = len(valid)
    scores = np.full(T, np.nan)
    acceptable = [[] for _ in range(T)]
    years = list(np.flatnonzero(valid))
    if len(years) < 3:
        return scores, acceptable
    for k in years:
        others = [j for j in years if j != k]
        sums = np.array([sum(dist[i, j] for j in others) for i in others])
        medoid = others[int(np.argmin(sums))]
        scores[k] = dist[k, medoid]
        near = sums <= sums.min() + tie_tolerance * (1 + abs(sums.min()))
        acceptable[k] = [dist[k, others[i]] for i in np.flatnonzero(near)]
    return scores, acceptable


def reference_zscore(series):
    """(s - median) / (1.4826 MAD) over the finite scores; NaN below 3 of them or for MAD 0."""
    finite = series[np.isfinite(series)]
    if finite.size < 3:
        return np.full(series.shape, np.nan), 0.0
    median = np.median(finite)
    mad = np.median(np.abs(finite - median))
    if mad == 0:
        return np.full(series.shape, np.nan), 0.0
    return (series - median) / (1.4826 * mad), 1.4826 * mad


# --- random cases ------------------------------------------------------------------------


def random_block(rng):
    """A small random block with no data, duplicates, near-duplicates and zero vectors."""
    T = int(rng.integers(1, 13))  # 8, 9 and 10 years have their own compiled copy
    B = int(rng.choice([1, 2, 3, 8, 64]))
    H, W = int(rng.integers(1, 4)), int(rng.integers(1, 20))
    kind = rng.choice(["aef", "int8", "float32"])
    if kind == "float32":
        block = rng.normal(size=(T, B, H, W)).astype(np.float32)
        nodata = None
    else:
        block = rng.integers(-127, 128, (T, B, H, W)).astype(np.int8)
        nodata = NODATA
    # Duplicates (exact ties, zero distances, zero MAD) and near-duplicates (near ties).
    for _ in range(int(rng.integers(0, 3 * T))):
        src, dst = rng.integers(0, T, 2)
        y, x = rng.integers(0, H), rng.integers(0, W)
        block[dst, :, y, x] = block[src, :, y, x]
        if rng.random() < 0.3:
            b = rng.integers(0, B)
            if kind == "float32":
                block[dst, b, y, x] += np.float32(1e-3)
            else:
                block[dst, b, y, x] = np.clip(
                    int(block[dst, b, y, x]) + rng.choice([-1, 1]), -127, 127
                )
    if rng.random() < 0.1:
        block[rng.integers(0, T), :, rng.integers(0, H), rng.integers(0, W)] = 0
    # No-data years, sometimes whole pixels.
    missing = rng.random((T, H, W)) < rng.choice([0.0, 0.2, 0.5])
    if rng.random() < 0.3:
        missing[:, rng.integers(0, H), rng.integers(0, W)] = True
    fill = np.nan if nodata is None else nodata
    block[np.broadcast_to(missing[:, None], block.shape)] = fill
    return block, kind == "aef", nodata


def random_methods(rng):
    methods = list(kernels.METHODS)
    rng.shuffle(methods)
    return tuple(methods[: int(rng.integers(1, 3))])


def pixel_reference(block, signed_square, nodata, metric):
    """Per pixel: raw scores by method, acceptable LOO scores, for a whole block."""
    vectors, valid = reference_vectors(block, signed_square, metric, nodata)
    _, _, H, W = block.shape
    for y in range(H):
        for x in range(W):
            dist = reference_distance_matrix(vectors[:, :, y, x], valid[:, y, x], metric)
            loo, acceptable = reference_loo_medoid(dist, valid[:, y, x])
            yield (
                (y, x),
                {"difference": reference_difference(dist, valid[:, y, x]), "loo_medoid": loo},
                acceptable,
            )


def assert_scores_close(got, expected, acceptable=None):
    assert np.array_equal(np.isnan(got), np.isnan(expected)), (got, expected)
    for t in np.flatnonzero(~np.isnan(expected)):
        candidates = acceptable[t] if acceptable is not None else [expected[t]]
        assert any(abs(got[t] - c) <= SCORE_ATOL + SCORE_RTOL * abs(c) for c in candidates), (
            t,
            got,
            expected,
        )


def ambiguous(acceptable):
    """True where tied medoids give different scores: the definition leaves the score open."""
    return any(np.ptp(scores) > SCORE_ATOL for scores in acceptable if scores)


def assert_zscores_close(got, raw_expected):
    """z-scores of well-conditioned series match; where MAD is exactly 0 they are NaN."""
    expected, scale = reference_zscore(raw_expected)
    if scale == 0.0:
        assert np.all(np.isnan(got)), (got, raw_expected)
        return
    if scale < 1e-3:
        return  # float32 scores cannot pin down a z-score with a near-zero MAD
    assert np.array_equal(np.isnan(got), np.isnan(expected)), (got, expected)
    tolerance = 4 * (SCORE_ATOL + SCORE_RTOL) / scale * (1 + np.abs(expected))
    finite = ~np.isnan(expected)
    assert np.all(np.abs(got[finite] - expected[finite]) <= tolerance[finite]), (got, expected)


# --- change_scores against the reference ------------------------------------------------


@pytest.mark.parametrize("metric", kernels.METRICS)
def test_raw_scores_match_reference_on_random_blocks(metric):
    rng = np.random.default_rng(["raw", *kernels.METRICS].index(metric))
    for _ in range(150):
        block, signed_square, nodata = random_block(rng)
        methods = random_methods(rng)
        got = kernels.change_scores(
            block,
            methods=methods,
            metric=metric,
            robust_zscore=False,
            signed_square=signed_square,
            nodata=nodata,
        )
        assert got.dtype == np.float32
        assert got.shape == (block.shape[0], len(methods), *block.shape[2:])
        for (y, x), expected, acceptable in pixel_reference(block, signed_square, nodata, metric):
            for index, method in enumerate(methods):
                tied = acceptable if method == "loo_medoid" else None
                assert_scores_close(got[:, index, y, x], expected[method], tied)


@pytest.mark.parametrize("metric", kernels.METRICS)
def test_zscored_scores_match_reference_on_random_blocks(metric):
    rng = np.random.default_rng(10 + kernels.METRICS.index(metric))
    for _ in range(100):
        block, signed_square, nodata = random_block(rng)
        got = kernels.change_scores(
            block, metric=metric, robust_zscore=True, signed_square=signed_square, nodata=nodata
        )
        for (y, x), expected, acceptable in pixel_reference(block, signed_square, nodata, metric):
            assert_zscores_close(got[:, 0, y, x], expected["difference"])
            if not ambiguous(acceptable):
                assert_zscores_close(got[:, 1, y, x], expected["loo_medoid"])


def test_zscored_scores_are_the_robust_time_zscore_of_raw_scores():
    rng = np.random.default_rng(20)
    for _ in range(100):
        block, signed_square, nodata = random_block(rng)
        metric = str(rng.choice(kernels.METRICS))
        options = {"metric": metric, "signed_square": signed_square, "nodata": nodata}
        raw = kernels.change_scores(block, robust_zscore=False, **options)
        zscored = kernels.change_scores(block, robust_zscore=True, **options)
        np.testing.assert_allclose(zscored, kernels.robust_time_zscore(raw), rtol=1e-6, atol=1e-6)


def test_wide_and_tall_blocks_match_reference_across_tiles_and_strips():
    # Rows wider than the kernel's 8-pixel tiles with odd remainders, and blocks taller than
    # its 16-row strips; 9 and 10 years have their own compiled copies, 11 the general one.
    rng = np.random.default_rng(30)
    for years, height, width in ((9, 2, 37), (9, 2, 300), (10, 35, 13), (11, 17, 9)):
        block = rng.integers(-127, 128, (years, 64, height, width)).astype(np.int8)
        block[3, :, 1, ::7] = NODATA
        block[5, :, 0, ::5] = block[2, :, 0, ::5]
        block[:, :, -1, -1] = block[0, :, -1, -1]  # a corner pixel that never changes
        for metric in kernels.METRICS:
            got = kernels.change_scores(
                block, metric=metric, robust_zscore=False, signed_square=True, nodata=NODATA
            )
            for (y, x), expected, acceptable in pixel_reference(block, True, NODATA, metric):
                assert_scores_close(got[:, 0, y, x], expected["difference"])
                assert_scores_close(got[:, 1, y, x], expected["loo_medoid"], acceptable)


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.float64])
def test_other_store_dtypes_match_reference_across_tile_groups_and_odd_plane_counts(dtype):
    # The strip copy transposes four planes by four tiles (32 pixels) at a time: widths past
    # a group with a remainder, and 9 x 3 = 27 planes (not a multiple of four) take its tails.
    rng = np.random.default_rng(31)
    for bands, width in ((3, 70), (64, 37)):
        if np.dtype(dtype).kind == "f":
            block = rng.normal(size=(9, bands, 3, width)).astype(dtype)
            block[4, :, 1, ::3] = np.nan
        else:
            block = rng.integers(0, 100, (9, bands, 3, width)).astype(dtype)
        block[6, :, 2, ::4] = block[1, :, 2, ::4]
        for metric in kernels.METRICS:
            got = kernels.change_scores(block, metric=metric, robust_zscore=False)
            for (y, x), expected, acceptable in pixel_reference(block, False, None, metric):
                assert_scores_close(got[:, 0, y, x], expected["difference"])
                assert_scores_close(got[:, 1, y, x], expected["loo_medoid"], acceptable)


# --- the NaN rules and ties, case by case -----------------------------------------------


def aef_block(rng, years, bands=64):
    return rng.integers(-127, 128, (years, bands, 1, 1)).astype(np.int8)


def scores_of(block, **options):
    options = {"signed_square": True, "nodata": NODATA, **options}
    return kernels.change_scores(block, **options)[:, :, 0, 0]


def test_difference_skips_no_data_years_and_is_nan_for_the_first_year_with_data():
    rng = np.random.default_rng(40)
    block = aef_block(rng, 6)
    block[[0, 2, 3]] = NODATA
    raw = scores_of(block, methods=("difference",), robust_zscore=False)[:, 0]
    vectors, valid = reference_vectors(block, True, "alpha_earth_cosine", NODATA)
    dist = reference_distance_matrix(vectors[:, :, 0, 0], valid[:, 0, 0], "alpha_earth_cosine")
    assert np.isnan(raw[[0, 1, 2, 3]]).all()
    np.testing.assert_allclose(raw[4:], [dist[4, 1], dist[5, 4]], atol=SCORE_ATOL)


@pytest.mark.parametrize("years", [1, 2])
def test_one_or_two_years_give_nan_everywhere(years):
    block = aef_block(np.random.default_rng(years), years)
    for robust_zscore in (False, True):
        raw = scores_of(block, robust_zscore=robust_zscore)
        assert np.isnan(raw[:, 1]).all()
        if robust_zscore:
            assert np.isnan(raw).all()


def test_all_no_data_pixel_gives_nan_for_every_score():
    block = np.full((9, 64, 1, 1), NODATA, np.int8)
    for robust_zscore in (False, True):
        assert np.isnan(scores_of(block, robust_zscore=robust_zscore)).all()
    floats = np.full((9, 8, 1, 1), np.nan, np.float32)
    assert np.isnan(kernels.change_scores(floats, robust_zscore=False)).all()


def test_loo_medoid_with_three_valid_years_takes_the_first_remaining_year_as_medoid():
    # E_-k has two years whose sums tie exactly; the earlier one is the medoid.
    block = aef_block(np.random.default_rng(41), 5)
    block[[1, 3]] = NODATA  # valid years 0, 2, 4
    raw = scores_of(block, methods=("loo_medoid",), robust_zscore=False)[:, 0]
    vectors, valid = reference_vectors(block, True, "alpha_earth_cosine", NODATA)
    dist = reference_distance_matrix(vectors[:, :, 0, 0], valid[:, 0, 0], "alpha_earth_cosine")
    np.testing.assert_allclose(
        raw[[0, 2, 4]], [dist[0, 2], dist[2, 0], dist[4, 0]], atol=SCORE_ATOL
    )
    assert raw[0] == raw[2]  # the same pair: exactly equal, so the z-scores see MAD 0
    zscored = scores_of(block, methods=("loo_medoid",), robust_zscore=True)[:, 0]
    assert np.isnan(zscored).all()


@pytest.mark.parametrize("metric", kernels.METRICS)
def test_identical_years_give_zero_distances_and_nan_zscores(metric):
    block = np.repeat(aef_block(np.random.default_rng(42), 1), 9, axis=0)
    raw = scores_of(block, metric=metric, robust_zscore=False)
    assert (raw[1:, 0] == 0).all() and (raw[:, 1] == 0).all()
    assert np.isnan(scores_of(block, metric=metric, robust_zscore=True)).all()


def test_one_year_event_stands_out_in_the_loo_medoid_zscore():
    rng = np.random.default_rng(43)
    stable = aef_block(rng, 1)
    block = np.repeat(stable, 9, axis=0)
    # Small year-to-year noise so the MAD is not zero, and one very different year.
    noise = rng.integers(-3, 4, block.shape)
    block = np.clip(block.astype(int) + noise, -127, 127).astype(np.int8)
    block[4] = aef_block(rng, 1)[0]
    zscored = scores_of(block, robust_zscore=True)[:, 1]
    assert int(np.nanargmax(zscored)) == 4
    assert zscored[4] > 5


def test_zero_vector_has_no_direction_so_cosine_scores_leave_it_out():
    block = aef_block(np.random.default_rng(44), 4)
    block[1] = 0
    cosine = scores_of(block, methods=("difference",), robust_zscore=False)[:, 0]
    assert np.isnan(cosine[[0, 1]]).all() and not np.isnan(cosine[[2, 3]]).any()
    euclidean = scores_of(block, methods=("difference",), metric="euclidean", robust_zscore=False)
    assert not np.isnan(euclidean[1:, 0]).any()


def test_methods_come_out_in_the_order_asked():
    block = aef_block(np.random.default_rng(45), 9)
    both = scores_of(block, methods=("difference", "loo_medoid"))
    swapped = scores_of(block, methods=("loo_medoid", "difference"))
    np.testing.assert_array_equal(both, swapped[:, ::-1])


def test_non_contiguous_blocks_give_the_same_scores():
    block = np.random.default_rng(46).integers(-127, 128, (9, 64, 8, 8)).astype(np.int8)
    options = {"signed_square": True, "nodata": NODATA}
    np.testing.assert_array_equal(
        kernels.change_scores(block[:, :, ::2, 1::2], **options),
        kernels.change_scores(np.ascontiguousarray(block[:, :, ::2, 1::2]), **options),
    )


@pytest.mark.parametrize(
    "options",
    [
        {"methods": ("median",)},
        {"methods": ()},
        {"metric": "manhattan"},
        {"methods": ("loo_medoid",) * 2},
    ],
)
def test_unknown_methods_and_metrics_are_refused(options):
    with pytest.raises(ParameterError):
        kernels.change_scores(np.zeros((3, 2, 1, 1), np.int8), **options)


def test_blocks_that_are_not_four_dimensional_are_refused():
    with pytest.raises(ParameterError):
        kernels.change_scores(np.zeros((3, 2, 1), np.int8))


# --- robust_time_zscore alone -----------------------------------------------------------


def test_robust_time_zscore_matches_reference_on_random_series():
    rng = np.random.default_rng(50)
    for _ in range(300):
        T, n = int(rng.integers(1, 10)), int(rng.integers(1, 12))
        if rng.random() < 0.5:
            scores = rng.integers(0, 4, (T, n)).astype(np.float32)  # ties, MAD 0
        else:
            scores = rng.gamma(2.0, 0.1, (T, n)).astype(np.float32)
        scores[rng.random((T, n)) < rng.choice([0.0, 0.3, 0.7])] = np.nan
        got = kernels.robust_time_zscore(scores)
        assert got.shape == scores.shape and got.dtype == np.float32
        for i in range(n):
            expected, _ = reference_zscore(scores[:, i].astype(np.float64))
            np.testing.assert_allclose(got[:, i], expected, rtol=1e-5, atol=1e-5)


def test_robust_time_zscore_is_nan_not_inf_where_mad_is_zero():
    scores = np.array([0.1, 0.1, 0.1, 0.9, 0.1], np.float32)
    assert np.isnan(kernels.robust_time_zscore(scores)).all()


def test_robust_time_zscore_keeps_the_shape_of_a_score_cube():
    scores = np.random.default_rng(51).random((9, 4, 5)).astype(np.float32)
    got = kernels.robust_time_zscore(scores)
    assert got.shape == (9, 4, 5)
    expected, _ = reference_zscore(scores[:, 2, 3].astype(np.float64))
    np.testing.assert_allclose(got[:, 2, 3], expected, rtol=1e-5)


def test_warm_up_compiles_the_kernel_for_the_store_dtype_and_year_count_once():
    nine_years = kernels._YEAR_COPIES[9]
    kernels.warm_up(np.int8, 9)
    compiled = [np.dtype(str(signature[0].dtype)) for signature in nine_years.signatures]
    assert np.dtype(np.int8) in compiled
    kernels.warm_up(np.int8, 9)  # already there: no second compile
    assert len(nine_years.signatures) == len(compiled)
