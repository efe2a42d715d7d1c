"""A tile's year-by-year distances: eight pixels' embeddings in, a (year, year) matrix out.

numba kernels over core.simd vectors (one vector = the eight pixels of a tile). The
cosine metrics use the Gram matrix of the years, 1 - g_ij / (|x_i| |x_j|); euclidean sums
squared differences, which keeps small distances accurate and identical years exactly 0.
"""

from __future__ import annotations

from numba import njit

from . import simd

LANES = simd.LANES
# 1 - cos from a float32 Gram matrix carries rounding of a few 1e-7: a cosine distance this
# close to 0 (parallel vectors) or 2 (opposite ones) is rounding and counts as exactly that.
COSINE_NOISE_FLOOR = 1e-6


@njit(cache=True, nogil=True)
def load_tile(
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
):
    """A tile's (year, band) vectors as float32, and valid: 1.0 where the year has data.

    The tile's values are strip[offset:], eight pixels of (year, band) after eight of the
    (year, band) before.

    No data is marked in every band at once (DATA.md), so the first band tells; a year with
    no data keeps whatever values it has, every distance to it is masked later.
    signed_square: value = sign(q) * (q / 127.5)^2 = q * |q| * scale, scale = 1 / 127.5^2,
    or 1 for the cosine metrics, which a constant factor cannot change.
    """
    zero = simd.splat(0.0)
    for t in range(n_years):
        first = simd.load(strip, offset + t * n_bands * LANES)
        present = simd.negate(simd.is_nan(first, first))
        if has_nodata:
            present = simd.both(present, simd.negate(simd.equal(first, simd.splat(nodata))))
        simd.store(valid, t * LANES, simd.select(present, simd.splat(1.0), zero))
        for b in range(n_bands):
            value = simd.load(strip, offset + (t * n_bands + b) * LANES)
            if signed_square:
                value = simd.mul(value, simd.absolute(value))
                if scale != 1.0:
                    value = simd.mul(value, simd.splat(scale))
            simd.store(vectors, (t * n_bands + b) * LANES, value)


@njit(cache=True, nogil=True)
def pair_sums(vectors, padded, n_bands, differences, sums):
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
                i_0, i_1, i_2 = _three_years(vectors, i0, n_bands, b)
                j_0, j_1, j_2 = _three_years(vectors, j0, n_bands, b)
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
        x_0, x_1, x_2 = _three_years(vectors, i0, n_bands, b)
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
def _three_years(vectors, first, n_bands, b):
    """Band b's vectors of years first, first + 1, first + 2."""
    return (
        simd.load(vectors, (first * n_bands + b) * LANES),
        simd.load(vectors, ((first + 1) * n_bands + b) * LANES),
        simd.load(vectors, ((first + 2) * n_bands + b) * LANES),
    )


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
def year_distances(sums, padded, n_years, cosine, valid, inverse_norms, dist):
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
