"""core/hotspots.py: regions over a threshold as polygons, checked against scipy.ndimage."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr
from osgeo import ogr
from scipy import ndimage

from embedding_change.core import compute_change_scores
from embedding_change.core.errors import CancelledError, ParameterError, StoreError
from embedding_change.core.grid import Grid
from embedding_change.core.hotspots import (
    HOTSPOTS_LAYER,
    REGIONS_LAYER,
    change_hotspots,
    pixel_row_areas,
)
from embedding_change.core.synthetic import AEF_GSD, write_aef_like_store

Z = "loo_medoid_alpha_earth_cosine_distance_robust_time_zscore"
STRUCTURE = {4: ndimage.generate_binary_structure(2, 1), 8: np.ones((3, 3), bool)}


def scores_grid(shape) -> Grid:
    return Grid((AEF_GSD, 0.0, -105.3, 0.0, -AEF_GSD, 40.05), shape, "EPSG:4326")


def write_scores(path, scores: np.ndarray, years, bands=(Z,)) -> Grid:
    """A scores Zarr as the engine writes it: (time, band, y, x) float32 and the grid attrs."""
    T, B, ny, nx = scores.shape
    grid = scores_grid((ny, nx))
    xr.Dataset(
        {"scores": (("time", "band", "y", "x"), scores.astype(np.float32))},
        coords={
            "time": np.asarray(years, np.int32),
            "band": np.asarray(bands, dtype=object),
            "y": grid.y_coords(0, ny),
            "x": grid.x_coords(0, nx),
        },
        attrs=grid.spatial_attrs(),
    ).to_zarr(path, encoding={"scores": {"chunks": (1, 1, 256, 256)}}, zarr_format=3)
    return grid


def features(path, layer=HOTSPOTS_LAYER) -> list[dict]:
    ds = ogr.Open(str(path))
    out = []
    for f in ds.GetLayerByName(layer):
        item = f.items()
        item["geometry"] = ogr.CreateGeometryFromWkb(f.GetGeometryRef().ExportToWkb())
        out.append(item)
    return out


def reference_regions(values: np.ndarray, threshold, min_pixels, connectivity):
    """scipy.ndimage's regions of one year: sorted (pixels, max, mean) of those kept."""
    with np.errstate(invalid="ignore"):
        mask = values >= threshold
    labels, n = ndimage.label(mask, STRUCTURE[connectivity])
    regions = []
    for i in range(1, n + 1):
        inside = values[labels == i]
        if inside.size >= min_pixels:
            regions.append((inside.size, float(inside.max()), float(inside.mean())))
    return sorted(regions)


def blobby_scores(rng, shape, years) -> np.ndarray:
    """Smooth noise scaled like z-scores: blobs of all sizes and shapes pass 3."""
    noise = rng.normal(size=(len(years), 1, *shape))
    smooth = ndimage.gaussian_filter(noise, sigma=(0, 0, 3, 3))
    return (smooth / smooth.std() * 1.6).astype(np.float32)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_regions_and_values_equal_scipy_labelling_across_strips(tmp_path, connectivity):
    years = [2019, 2020, 2021]
    scores = blobby_scores(np.random.default_rng(3), (300, 280), years)
    scores[1, 0, 40:90, 30:60] = np.nan  # no data inside and at the edge of regions
    write_scores(tmp_path / "s.zarr", scores, years)

    result = change_hotspots(
        tmp_path / "s.zarr", tmp_path / "h.gpkg", connectivity=connectivity, strip_rows=37
    )

    got = features(result.path)
    assert result.features == len(got) > 20
    pixel_area = AEF_GSD**2
    for k, year in enumerate(years):
        mine = [f for f in got if f["year"] == year]
        expected = reference_regions(scores[k, 0], 3.0, 4, connectivity)
        assert len(mine) == len(expected)
        found = sorted((f["pixels"], f["max_z"], f["mean_z"]) for f in mine)
        for (n, top, mean), (n_ref, top_ref, mean_ref) in zip(found, expected, strict=True):
            assert n == n_ref
            assert top == pytest.approx(top_ref, rel=1e-6)
            assert mean == pytest.approx(mean_ref, rel=1e-5)
        for f in mine:
            # The polygon is the region's pixels: its area in degrees is its pixel count.
            assert f["geometry"].GetArea() / pixel_area == pytest.approx(f["pixels"], rel=1e-6)
            assert f["score"] == Z
            assert (f["start_date"], f["end_date"]) == (
                f"{year}/01/01 00:00:00+00",
                f"{year}/12/31 23:59:59+00",
            )


def test_a_region_crossing_tile_edges_many_times_is_one_feature(tmp_path):
    scores = np.zeros((2, 1, 600, 560), np.float32)
    # A U: two arms down across the strip edges at rows 256 and 512, joined only at the bottom,
    # and across the tile edge at column 256.
    scores[0, 0, 100:560, 240:250] = 5.0
    scores[0, 0, 100:560, 300:310] = 5.0
    scores[0, 0, 550:560, 240:310] = 6.0
    # Second year: a diagonal chain across the row-256 edge, one region only with 8 neighbours.
    for i in range(20):
        scores[1, 0, 246 + i, 100 + i] = 4.0
    write_scores(tmp_path / "s.zarr", scores, [2020, 2021])

    four = change_hotspots(tmp_path / "s.zarr", tmp_path / "four.gpkg", connectivity=4)
    eight = change_hotspots(tmp_path / "s.zarr", tmp_path / "eight.gpkg", connectivity=8)

    (u,) = features(four.path)
    assert (u["year"], u["pixels"]) == (2020, 460 * 10 * 2 + 10 * 50)
    assert u["max_z"] == 6.0
    by_year = {f["year"]: f for f in features(eight.path)}
    assert by_year[2021]["pixels"] == 20
    assert len(features(eight.path)) == 2


def test_regions_under_the_minimum_size_are_left_out(tmp_path):
    scores = np.zeros((1, 1, 60, 60), np.float32)
    scores[0, 0, 5, 5] = 9.0  # 1 px
    scores[0, 0, 10, 10:12] = 9.0  # 2 px
    scores[0, 0, 20:22, 20] = 9.0  # 2 px
    scores[0, 0, 30, 30:33] = 9.0  # 3 px
    scores[0, 0, 40:42, 40:42] = 9.0  # 4 px: kept
    scores[0, 0, 50, 50] = 2.99  # under the threshold
    write_scores(tmp_path / "s.zarr", scores, [2020])

    result = change_hotspots(tmp_path / "s.zarr", tmp_path / "h.gpkg", min_pixels=4)

    (kept,) = features(result.path)
    assert kept["pixels"] == 4
    lat = 40.05 - AEF_GSD * 41
    expected_area = 4 * (6371007.181 * math.radians(AEF_GSD)) ** 2 * math.cos(math.radians(lat))
    assert kept["area_m2"] == pytest.approx(expected_area, rel=1e-4)
    ones = change_hotspots(tmp_path / "s.zarr", tmp_path / "ones.gpkg", min_pixels=1)
    assert sorted(f["pixels"] for f in features(ones.path)) == [1, 2, 2, 3, 4]


def test_all_no_data_gives_an_empty_layer(tmp_path):
    write_scores(tmp_path / "s.zarr", np.full((2, 1, 40, 30), np.nan, np.float32), [2020, 2021])
    result = change_hotspots(tmp_path / "s.zarr", tmp_path / "h.gpkg", merge_years=True)
    assert (result.features, result.regions) == (0, 0)
    assert features(result.path) == []
    assert features(result.path, REGIONS_LAYER) == []


def test_merging_joins_regions_of_consecutive_years_that_share_pixels(tmp_path):
    scores = np.zeros((4, 1, 80, 80), np.float32)
    scores[0, 0, 10:20, 10:20] = 5.0  # 2018
    scores[1, 0, 15:25, 15:25] = 7.0  # 2019, overlaps 2018
    scores[3, 0, 10:20, 10:20] = 5.0  # 2021: 2020 has nothing, so a region of its own
    scores[1, 0, 60:70, 60:70] = 4.0  # 2019 elsewhere
    write_scores(tmp_path / "s.zarr", scores, [2018, 2019, 2020, 2021])

    result = change_hotspots(tmp_path / "s.zarr", tmp_path / "h.gpkg", merge_years=True)

    assert (result.features, result.regions) == (4, 3)
    regions = sorted(features(result.path, REGIONS_LAYER), key=lambda r: r["first_year"])
    spans = sorted((r["first_year"], r["last_year"], r["years"], r["pixel_years"]) for r in regions)
    assert spans == [(2018, 2019, 2, 200), (2019, 2019, 1, 100), (2021, 2021, 1, 100)]
    joined = next(r for r in regions if r["years"] == 2)
    assert joined["max_z"] == 7.0
    assert joined["mean_z"] == pytest.approx((100 * 5 + 100 * 7) / 200)
    # Its polygon is the union of the two squares: 175 pixels.
    assert joined["geometry"].GetArea() / AEF_GSD**2 == pytest.approx(175, rel=1e-6)
    assert joined["area_m2"] == pytest.approx(175 * _pixel_m2(), rel=2e-3)
    by_year = {(f["year"], f["pixels"]): f["summary"] for f in features(result.path)}
    assert by_year[(2018, 100)] == joined["summary"]


def _pixel_m2() -> float:
    return (6371007.181 * math.radians(AEF_GSD)) ** 2 * math.cos(math.radians(40.05))


def test_chosen_years_only_and_the_default_score(tmp_path):
    scores = np.zeros((3, 2, 30, 30), np.float32)
    scores[:, 1, 5:10, 5:10] = 8.0
    scores[:, 0, 20:25, 20:25] = 8.0
    write_scores(tmp_path / "s.zarr", scores, [2020, 2021, 2022], bands=("difference_x", Z))
    result = change_hotspots(tmp_path / "s.zarr", tmp_path / "h.gpkg", years=[2022, 2020])
    assert result.score == Z
    assert result.years == (2020, 2022)
    assert sorted(f["year"] for f in features(result.path)) == [2020, 2022]


def test_bad_inputs_say_what_to_fix(tmp_path):
    write_scores(tmp_path / "s.zarr", np.zeros((2, 1, 10, 10), np.float32), [2020, 2021])
    with pytest.raises(ParameterError, match="has no score 'nope'"):
        change_hotspots(tmp_path / "s.zarr", tmp_path / "h.gpkg", score="nope")
    with pytest.raises(ParameterError, match="finite number"):
        change_hotspots(tmp_path / "s.zarr", tmp_path / "h.gpkg", threshold=float("nan"))
    with pytest.raises(ParameterError, match="4 or 8"):
        change_hotspots(tmp_path / "s.zarr", tmp_path / "h.gpkg", connectivity=6)
    with pytest.raises(ParameterError, match=r"\[2030\]"):
        change_hotspots(tmp_path / "s.zarr", tmp_path / "h.gpkg", years=[2030])
    with pytest.raises(StoreError, match="not a change scores output"):
        change_hotspots(tmp_path, tmp_path / "h.gpkg")
    assert not (tmp_path / "h.gpkg").exists()


def test_cancel_leaves_nothing_behind(tmp_path):
    write_scores(tmp_path / "s.zarr", np.full((2, 1, 100, 100), 5.0, np.float32), [2020, 2021])
    with pytest.raises(CancelledError):
        change_hotspots(tmp_path / "s.zarr", tmp_path / "h.gpkg", cancel=lambda: True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


def test_row_areas_of_a_projected_grid_are_the_pixel_size():
    from embedding_change.core.grid import spatial_reference

    grid = Grid((10.0, 0.0, 500000.0, 0.0, -10.0, 4400000.0), (3, 3), "EPSG:32613")
    np.testing.assert_array_equal(pixel_row_areas(grid, spatial_reference(grid.crs)), [100.0] * 3)


def test_planted_one_year_events_come_back_as_one_polygon_each(tmp_path):
    truth = write_aef_like_store(tmp_path / "aef.zarr", shape=(600, 560), seed=7)
    compute_change_scores(tmp_path / "aef.zarr", tmp_path / "s.zarr", methods=("loo_medoid",))

    result = change_hotspots(tmp_path / "s.zarr", tmp_path / "h.gpkg")

    got = features(result.path)
    events = [c for c in truth.changes if c.kind == "one_year"]
    assert events
    x0, y0 = truth.grid.transform[2], truth.grid.transform[5]
    for event in events:
        (r0, r1), (c0, c1) = event.rows, event.cols
        ring = ogr.Geometry(ogr.wkbLinearRing)
        for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1), (c0, r0)):
            ring.AddPoint_2D(x0 + c * AEF_GSD, y0 - r * AEF_GSD)
        box = ogr.Geometry(ogr.wkbPolygon)
        box.AddGeometry(ring)
        hits = [
            (f, f["geometry"].Intersection(box).GetArea() / box.GetArea())
            for f in got
            if f["year"] == event.year and f["geometry"].Intersects(box)
        ]
        big = [(f, share) for f, share in hits if share > 0.05]
        assert len(big) == 1, event
        feature, share = big[0]
        assert share >= 0.8
        assert (
            feature["geometry"].Intersection(box).GetArea() / feature["geometry"].GetArea() >= 0.8
        )
