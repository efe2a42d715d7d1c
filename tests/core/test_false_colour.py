"""core/false_colour.py: one colour mapping for all years, checked against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from osgeo import gdal

from embedding_change.core.errors import CancelledError, ParameterError
from embedding_change.core.false_colour import embedding_false_colour
from embedding_change.core.synthetic import write_aef_like_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("rgb") / "aef.zarr"
    truth = write_aef_like_store(path, shape=(256, 256), years=range(2018, 2023), seed=3)
    with xr.open_zarr(path) as ds:
        raw = ds["embeddings"].values
    return path, truth, raw


def dequantised(raw: np.ndarray) -> np.ndarray:
    q = raw.astype(np.float64)
    return np.sign(q) * (q / 127.5) ** 2


def picture(path) -> np.ndarray:
    return gdal.Open(str(path)).ReadAsArray()  # (3, y, x)


def reference_colours(vectors, mapping) -> np.ndarray:
    """Straightforward: project, stretch low..high to 1..255, round."""
    projected = (vectors - mapping.mean) @ mapping.axes
    scaled = (projected - mapping.low) / (mapping.high - mapping.low)
    return np.round(1 + 254 * np.clip(scaled, 0, 1))


def test_principal_components_are_fitted_once_and_every_year_uses_them(store, tmp_path):
    path, truth, raw = store
    result = embedding_false_colour(path, tmp_path / "rgb")

    assert result.years == [2018, 2019, 2020, 2021, 2022]
    assert result.mapping.names == ("PC1", "PC2", "PC3")
    # The fit: the sample is every 4th pixel of the one tile, all years, without no data.
    sample = raw[:, :, ::4, ::4].transpose(0, 2, 3, 1).reshape(-1, raw.shape[1])
    sample = dequantised(sample[sample[:, 0] != -128])
    _, _, vt = np.linalg.svd(sample - sample.mean(axis=0), full_matrices=False)
    for k in range(3):
        assert abs(vt[k] @ result.mapping.axes[:, k]) == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(result.mapping.mean, sample.mean(axis=0))
    for t, file in enumerate(result.files):
        got = picture(file).reshape(3, -1).T.astype(float)
        vectors = raw[t].reshape(raw.shape[1], -1).T
        valid = vectors[:, 0] != -128
        expected = reference_colours(dequantised(vectors[valid]), result.mapping)
        assert np.abs(got[valid] - expected).max() <= 1
        assert (got[~valid] == 0).all()


def test_no_data_years_are_transparent_and_georeferenced_like_the_store(store, tmp_path):
    path, truth, _ = store
    result = embedding_false_colour(path, tmp_path / "rgb")
    hole = next(c for c in truth.changes if c.kind == "no_data")
    (r0, r1), (c0, c1) = hole.rows, hole.cols
    ds = gdal.Open(result.files[result.years.index(hole.year)])
    assert (ds.ReadAsArray()[:, r0:r1, c0:c1] == 0).all()
    assert ds.GetRasterBand(1).GetNoDataValue() == 0
    a, _, c, _, e, f = truth.grid.transform
    assert ds.GetGeoTransform() == pytest.approx((c, a, 0, f, 0, e))


def test_a_one_year_event_changes_colour_in_its_year_only(store, tmp_path):
    path, truth, _ = store
    result = embedding_false_colour(path, tmp_path / "rgb")
    event = next(c for c in truth.changes if c.kind == "one_year")
    (r0, r1), (c0, c1) = event.rows, event.cols
    mean = [picture(f)[:, r0:r1, c0:c1].reshape(3, -1).mean(axis=1) for f in result.files]
    k = result.years.index(event.year)
    others = [m for i, m in enumerate(mean) if i != k]
    typical = np.median(others, axis=0)
    assert np.linalg.norm(mean[k] - typical) > 3 * max(np.linalg.norm(m - typical) for m in others)


def test_three_chosen_bands_are_shown_as_they_are(store, tmp_path):
    path, _, raw = store
    result = embedding_false_colour(
        path, tmp_path / "rgb", bands=["A00", "A05", "A10"], years=[2020]
    )
    assert result.mapping.names == ("A00", "A05", "A10")
    got = picture(result.files[0]).reshape(3, -1).T.astype(float)
    vectors = raw[2].reshape(raw.shape[1], -1).T
    valid = vectors[:, 0] != -128
    chosen = dequantised(vectors[valid][:, [0, 5, 10]])
    low, high = result.mapping.low, result.mapping.high
    expected = np.round(1 + 254 * np.clip((chosen - low) / (high - low), 0, 1))
    assert np.abs(got[valid] - expected).max() <= 1


def test_an_extent_is_the_window_of_pixels_it_touches(store, tmp_path):
    path, truth, raw = store
    a, _, c, _, e, f = truth.grid.transform
    bbox = (c + 10 * a, f + 60 * e, c + 50 * a, f + 20 * e)  # cols 10..50, rows 20..60
    result = embedding_false_colour(path, tmp_path / "rgb", bbox=bbox, years=[2018])
    ds = gdal.Open(result.files[0])
    assert (ds.RasterXSize, ds.RasterYSize) == (40, 40)
    assert ds.GetGeoTransform()[0] == pytest.approx(c + 10 * a)
    assert ds.GetGeoTransform()[3] == pytest.approx(f + 20 * e)


def test_bad_choices_say_what_to_fix(store, tmp_path):
    path, _, _ = store
    with pytest.raises(ParameterError, match="three of the store's band names"):
        embedding_false_colour(path, tmp_path / "a", bands=["A00", "A01"])
    with pytest.raises(ParameterError, match="three of the store's band names"):
        embedding_false_colour(path, tmp_path / "a", bands=["A00", "A01", "red"])
    with pytest.raises(ParameterError, match=r"\[2030\]"):
        embedding_false_colour(path, tmp_path / "a", years=[2030])
    with pytest.raises(CancelledError):
        embedding_false_colour(path, tmp_path / "b", cancel=lambda: True)
    assert not (tmp_path / "b").exists()


@pytest.fixture(scope="module")
def wide_store(tmp_path_factory):
    """6 x 6 tiles of 8 bands, 3 years: more tiles a side than the fit samples."""
    path = tmp_path_factory.mktemp("rgb_wide") / "aef.zarr"
    # Chunked layout: every chunk its own object, so the reads below count chunks.
    truth = write_aef_like_store(
        path, shape=(1536, 1536), years=range(2018, 2021), bands=8, seed=4, layout="chunked"
    )
    with xr.open_zarr(path) as ds:
        raw = ds["embeddings"].values
    return path, truth, raw


def chunk_reads(monkeypatch) -> list[str]:
    """The embedding chunk keys zarr reads from local stores, one entry per read."""
    from zarr.storage import LocalStore

    reads, get = [], LocalStore.get

    async def counting_get(self, key, prototype=None, byte_range=None):
        if key.startswith("embeddings/c/"):
            reads.append(key)
        return await get(self, key, prototype, byte_range)

    monkeypatch.setattr(LocalStore, "get", counting_get)
    return reads


def test_every_tile_is_read_once_and_the_sampled_tiles_are_the_spread_ones(
    wide_store, tmp_path, monkeypatch
):
    path, truth, raw = wide_store
    a, _, c, _, e, f = truth.grid.transform
    # cols 100..1500, rows 40..1400: 6 x 6 tiles, those at the edges cut
    bbox = (c + 100 * a, f + 1400 * e, c + 1500 * a, f + 40 * e)
    reads = chunk_reads(monkeypatch)

    result = embedding_false_colour(path, tmp_path / "rgb", bbox=bbox)

    tiles = [(t, r, k) for t in range(3) for r in range(6) for k in range(6)]
    assert sorted(reads) == sorted(f"embeddings/c/{t}/0/{r}/{k}" for t, r, k in tiles)  # once
    # no kept tile is left behind
    assert sorted(p.name for p in (tmp_path / "rgb").iterdir()) == [
        "2018.tif",
        "2019.tif",
        "2020.tif",
    ]
    # The fit's sample: tiles 0, 2, 3 and 5 of each side (linspace over 6), every 4th pixel of
    # each from its own corner, all years, no data left out.
    window = raw[:, :, 40:1400, 100:1500]
    edges_y, edges_x = [0, 216, 472, 728, 984, 1240, 1360], [0, 156, 412, 668, 924, 1180, 1400]
    parts = []
    for t in range(3):
        for i in (0, 2, 3, 5):
            for j in (0, 2, 3, 5):
                tile = window[t, :, edges_y[i] : edges_y[i + 1], edges_x[j] : edges_x[j + 1]]
                parts.append(tile[:, ::4, ::4].reshape(8, -1).T)
    sample = np.concatenate(parts)
    sample = dequantised(sample[sample[:, 0] != -128])
    np.testing.assert_allclose(result.mapping.mean, sample.mean(axis=0), rtol=1e-12)
    for t, file in enumerate(result.files):
        got = picture(file).reshape(3, -1).T.astype(float)
        vectors = window[t].reshape(8, -1).T
        valid = vectors[:, 0] != -128
        expected = reference_colours(dequantised(vectors[valid]), result.mapping)
        assert np.abs(got[valid] - expected).max() <= 1
        assert (got[~valid] == 0).all()
