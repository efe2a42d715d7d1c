"""core/export.py: scores as Cloud-Optimized GeoTIFFs, reopened with GDAL and compared."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr
from osgeo import gdal

from embedding_change.core.errors import CancelledError, StoreError
from embedding_change.core.export import export_scores, score_file_name

from .test_hotspots import write_scores

BANDS = ("difference_x_robust_time_zscore", "loo_medoid_x_robust_time_zscore")


@pytest.fixture
def scores(tmp_path):
    rng = np.random.default_rng(1)
    values = rng.normal(size=(3, 2, 600, 530)).astype(np.float32)
    values[0, 0] = np.nan  # a year without a score
    values[1, 1, 100:200, 50:60] = np.nan
    grid = write_scores(tmp_path / "s.zarr", values, [2019, 2020, 2021], bands=BANDS)
    return tmp_path / "s.zarr", values, grid


def test_every_score_becomes_a_cog_with_a_band_per_year(scores, tmp_path):
    path, values, grid = scores
    seen = []

    files = export_scores(path, tmp_path / "cogs", progress=seen.append, strip_rows=100)

    assert files == [str(tmp_path / "cogs" / score_file_name(b)) for b in BANDS]
    assert seen[-1] == 1.0 and seen == sorted(seen)
    with xr.open_zarr(path) as ds:
        x, y = ds["x"].values, ds["y"].values
    for b, file in enumerate(files):
        ds = gdal.Open(file)
        assert ds.GetMetadataItem("LAYOUT", "IMAGE_STRUCTURE") == "COG"
        assert ds.RasterCount == 3 and (ds.RasterYSize, ds.RasterXSize) == (600, 530)
        c, a, _, f, _, e = ds.GetGeoTransform()
        # Pixel centres where the Zarr's coordinates say they are.
        assert c + a / 2 == pytest.approx(x[0], abs=1e-12)
        assert f + e / 2 == pytest.approx(y[0], abs=1e-12)
        assert a == pytest.approx(x[1] - x[0]) and e == pytest.approx(y[1] - y[0])
        assert ds.GetSpatialRef().GetAuthorityCode(None) == "4326"
        for t, year in enumerate([2019, 2020, 2021]):
            band = ds.GetRasterBand(t + 1)
            assert band.GetDescription() == str(year)
            assert math.isnan(band.GetNoDataValue())
            assert band.GetOverviewCount() >= 1
            np.testing.assert_array_equal(band.ReadAsArray(), values[t, b])
        # Overviews: each 2 x 2 block's highest score, level by level, down to one tile.
        level = values[1, b]
        for k in range(ds.GetRasterBand(2).GetOverviewCount()):
            level = block_max_reference(level)
            got = ds.GetRasterBand(2).GetOverview(k).ReadAsArray()
            np.testing.assert_array_equal(got, level)
        assert max(level.shape) <= 256


def block_max_reference(values: np.ndarray) -> np.ndarray:
    ny, nx = values.shape
    out = np.full(((ny + 1) // 2, (nx + 1) // 2), np.nan, np.float32)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            block = values[2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
            if not np.isnan(block).all():
                out[i, j] = np.nanmax(block)
    return out


def test_a_non_scores_input_is_refused(tmp_path):
    with pytest.raises(StoreError, match="not a change scores output"):
        export_scores(tmp_path, tmp_path / "cogs")


def test_cancel_leaves_no_files(scores, tmp_path):
    path, _, _ = scores
    with pytest.raises(CancelledError):
        export_scores(path, tmp_path / "cogs", cancel=lambda: True)
    assert list((tmp_path / "cogs").iterdir()) == []
