"""core/export.py: scores as Cloud-Optimized GeoTIFFs, reopened with GDAL and compared."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from osgeo import gdal

from embedding_change.core.errors import CancelledError, StoreError
from embedding_change.core.export import export_scores, score_file_name, summary_file_name

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

    # An output without the summary variables: the score files only, as before.
    assert files == [str(tmp_path / "cogs" / score_file_name(b)) for b in BANDS]
    assert sorted(p.name for p in (tmp_path / "cogs").iterdir()) == sorted(
        score_file_name(b) for b in BANDS
    )
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


def add_summary(path, values, years):
    """largest_score and year_of_largest beside the scores, as Change scores writes them."""
    finite = np.isfinite(values)
    filled = np.where(finite, values, -np.inf)
    largest = np.where(finite.any(axis=0), filled.max(axis=0), np.nan).astype(np.float32)
    year = np.asarray(years, np.float32)[filled.argmax(axis=0)]
    year = np.where(finite.any(axis=0), year, np.nan).astype(np.float32)
    with xr.open_zarr(path) as ds:
        attrs = dict(ds.attrs)  # appending replaces the group's attributes: keep the grid's
    xr.Dataset(
        {
            "largest_score": (("band", "y", "x"), largest),
            "year_of_largest": (("band", "y", "x"), year),
        },
        attrs=attrs,
    ).to_zarr(
        path,
        mode="a",
        encoding={v: {"chunks": (1, 256, 256)} for v in ("largest_score", "year_of_largest")},
        zarr_format=3,
    )


def test_summary_variables_become_single_band_cogs_beside_the_scores(scores, tmp_path):
    _, values, _ = scores
    values[:, 0, 5:9, 7:11] = np.nan  # no score in any year: no largest, no year
    path = tmp_path / "summarised.zarr"
    write_scores(path, values, [2019, 2020, 2021], bands=BANDS)
    add_summary(path, values, [2019, 2020, 2021])
    seen = []

    files = export_scores(path, tmp_path / "cogs", progress=seen.append, strip_rows=100)

    expected = []
    for b in BANDS:
        expected += [score_file_name(b)] + [
            summary_file_name(b, v) for v in ("largest_score", "year_of_largest")
        ]
    assert files == [str(tmp_path / "cogs" / name) for name in expected]
    assert summary_file_name(BANDS[0], "year_of_largest") == f"{BANDS[0]}_year_of_largest.tif"
    assert seen[-1] == 1.0 and seen == sorted(seen)
    with xr.open_zarr(path) as ds:
        largest = ds["largest_score"].values
        year = ds["year_of_largest"].values
        x, y = ds["x"].values, ds["y"].values
    assert np.isnan(year[0, 5:9, 7:11]).all() and np.isnan(largest[0, 5:9, 7:11]).all()
    for b, label in enumerate(BANDS):
        score = gdal.Open(files[3 * b])
        for file, variable, reference, description in (
            (files[3 * b + 1], "largest_score", largest[b], "largest score over the years"),
            (files[3 * b + 2], "year_of_largest", year[b], "year of the largest score"),
        ):
            ds = gdal.Open(file)
            assert ds.GetMetadataItem("LAYOUT", "IMAGE_STRUCTURE") == "COG"
            assert ds.RasterCount == 1 and (ds.RasterYSize, ds.RasterXSize) == (600, 530)
            assert ds.GetGeoTransform() == score.GetGeoTransform()
            c, a, _, f, _, e = ds.GetGeoTransform()
            assert c + a / 2 == pytest.approx(x[0], abs=1e-12)
            assert f + e / 2 == pytest.approx(y[0], abs=1e-12)
            assert ds.GetSpatialRef().GetAuthorityCode(None) == "4326"
            assert ds.GetMetadataItem("SCORE") == label
            band = ds.GetRasterBand(1)
            assert band.DataType == gdal.GDT_Float32
            assert band.GetDescription() == description
            assert band.GetMetadataItem("SUMMARY") == variable
            assert math.isnan(band.GetNoDataValue())
            np.testing.assert_array_equal(band.ReadAsArray(), reference)
            count = score.GetRasterBand(1).GetOverviewCount()
            assert count >= 1 and band.GetOverviewCount() == count
            for k in range(count):
                ours, theirs = band.GetOverview(k), score.GetRasterBand(1).GetOverview(k)
                assert (ours.YSize, ours.XSize) == (theirs.YSize, theirs.XSize)
        # largest_score: each block's highest value, like the scores.
        level = largest[b]
        ds = gdal.Open(files[3 * b + 1])  # held: a band outliving its dataset crashes GDAL
        band = ds.GetRasterBand(1)
        for k in range(band.GetOverviewCount()):
            level = block_max_reference(level)
            np.testing.assert_array_equal(band.GetOverview(k).ReadAsArray(), level)
        # year_of_largest: a year one of the block's pixels has (nearest), not the latest one.
        ds = gdal.Open(files[3 * b + 2])
        band = ds.GetRasterBand(1)
        first = band.GetOverview(0).ReadAsArray()
        blocks = year[b]  # 600 x 530: every block is 2 x 2
        quarters = [blocks[i::2, j::2] for i in (0, 1) for j in (0, 1)]
        found = functools.reduce(
            np.logical_or,
            [(q == first) | (np.isnan(q) & np.isnan(first)) for q in quarters],
        )
        assert found.all()
        assert not np.array_equal(first, block_max_reference(year[b]), equal_nan=True)
        for k in range(band.GetOverviewCount()):
            got = band.GetOverview(k).ReadAsArray()
            assert set(np.unique(got[~np.isnan(got)])) <= {2019.0, 2020.0, 2021.0}


def test_cancel_during_a_summary_file_removes_it(scores, tmp_path):
    path, values, _ = scores
    add_summary(path, values, [2019, 2020, 2021])
    cogs = tmp_path / "cogs"
    started = f".{Path(summary_file_name(BANDS[0], 'largest_score')).stem}.partial.tif"

    def cancel():  # once the first summary file is being copied to a COG
        return (cogs / started).exists() and (
            cogs / summary_file_name(BANDS[0], "largest_score")
        ).exists()

    with pytest.raises(CancelledError):
        export_scores(path, cogs, cancel=cancel, strip_rows=100)
    # The finished score file stays, as for any finished file; the one cancelled is removed.
    assert [p.name for p in cogs.iterdir()] == [score_file_name(BANDS[0])]


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
