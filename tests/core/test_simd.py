"""core/simd.py: each vector operation against numpy on the same eight lanes."""

import numpy as np
import pytest
from numba import njit

from embedding_change.core import simd

LANES = simd.LANES


@njit
def _arithmetic(a, b, c, out):
    x, y, z = simd.load(a, 0), simd.load(b, 0), simd.load(c, 0)
    simd.store(out, 0 * LANES, simd.add(x, y))
    simd.store(out, 1 * LANES, simd.sub(x, y))
    simd.store(out, 2 * LANES, simd.mul(x, y))
    simd.store(out, 3 * LANES, simd.div(x, y))
    simd.store(out, 4 * LANES, simd.fma(x, y, z))
    simd.store(out, 5 * LANES, simd.sqrt(simd.absolute(x)))
    simd.store(out, 6 * LANES, simd.absolute(x))
    simd.store(out, 7 * LANES, simd.minimum(x, y))
    simd.store(out, 8 * LANES, simd.maximum(x, y))
    simd.store(out, 9 * LANES, simd.splat(2.5))


def test_arithmetic_matches_numpy_lane_by_lane():
    rng = np.random.default_rng(0)
    a, b, c = (rng.normal(size=LANES).astype(np.float32) for _ in range(3))
    out = np.zeros(10 * LANES, np.float32)
    _arithmetic(a, b, c, out)
    got = out.reshape(10, LANES)
    expected = [a + b, a - b, a * b, a / b, a * b + c, np.sqrt(np.abs(a)), np.abs(a)]
    expected += [np.minimum(a, b), np.maximum(a, b), np.full(LANES, 2.5, np.float32)]
    for row, want in zip(got, expected, strict=True):
        np.testing.assert_allclose(row, want, rtol=1e-6)  # fma may round once, not twice


@njit
def _masks(a, b, out):
    x, y = simd.load(a, 0), simd.load(b, 0)
    one, zero = simd.splat(1.0), simd.splat(0.0)
    masks = (
        simd.less(x, y),
        simd.greater(x, y),
        simd.greater_equal(x, y),
        simd.equal(x, y),
        simd.is_nan(x, x),
        simd.both(simd.less(x, y), simd.is_nan(y, y)),
        simd.either(simd.equal(x, y), simd.is_nan(x, x)),
        simd.negate(simd.less(x, y)),
    )
    for i, mask in enumerate(masks):
        simd.store(out, i * LANES, simd.select(mask, one, zero))


def test_comparisons_masks_and_select_follow_ieee_nan_rules():
    a = np.array([1, 2, 3, np.nan, 5, -1, 0, 7], np.float32)
    b = np.array([2, 2, 1, 1, np.nan, -1, np.nan, 8], np.float32)
    out = np.zeros(8 * LANES, np.float32)
    _masks(a, b, out)
    with np.errstate(invalid="ignore"):
        expected = [a < b, a > b, a >= b, a == b, np.isnan(a)]
        expected += [(a < b) & np.isnan(b), (a == b) | np.isnan(a), ~(a < b)]
    np.testing.assert_array_equal(out.reshape(8, LANES), np.array(expected, np.float32))


@njit
def _load_converted(values, offset, out):
    simd.store(out, 0, simd.load(values, offset))


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.float32, np.float64])
def test_loads_convert_each_dtype_to_float32_from_any_offset(dtype):
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is not None:  # the whole range: uint8 above 127 must not come out negative
        values = np.linspace(info.min, info.max, 3 * LANES).round().astype(dtype)
    else:
        values = np.linspace(-3, 3, 3 * LANES).astype(dtype)
    out = np.zeros(LANES, np.float32)
    _load_converted(values, 5, out)  # an unaligned start
    np.testing.assert_array_equal(out, values[5 : 5 + LANES].astype(np.float32))


@njit
def _transpose(source, start, source_step, target, to, target_step):
    simd.transpose_pieces(source, start, source_step, target, to, target_step)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.float32, np.float64])
def test_transpose_pieces_moves_piece_m_of_run_q_to_place_q_of_run_m(dtype):
    run = 4 * LANES
    source = np.arange(3 + 3 * 50 + run, dtype=np.int64).astype(dtype)  # runs 50 apart, unaligned
    target = np.zeros(5 + 3 * 40 + run, dtype)
    _transpose(source, 3, 50, target, 5, 40)
    expected = np.zeros_like(target)
    for q in range(4):
        for m in range(4):
            piece = source[3 + q * 50 + m * LANES :][:LANES]
            expected[5 + m * 40 + q * LANES :][:LANES] = piece
    np.testing.assert_array_equal(target, expected)  # and nothing outside the four target runs
