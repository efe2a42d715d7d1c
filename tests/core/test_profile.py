"""core/profile.py and core/profile_report.py: one pixel's scores, distances, medoids, report."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import xarray as xr

from embedding_change.core import compute_change_scores
from embedding_change.core.errors import WindowError
from embedding_change.core.profile import read_pixel_profile
from embedding_change.core.profile_report import change_profile
from embedding_change.core.synthetic import write_aef_like_store

# Debian's matplotlib calls pyparsing's old names, which newer pyparsing deprecates.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
LOO = "loo_medoid_alpha_earth_cosine_distance"
LOO_Z = f"{LOO}_robust_time_zscore"


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A small store with planted changes, its scores (both methods, raw and z) and the truth."""
    folder = tmp_path_factory.mktemp("profile")
    truth = write_aef_like_store(folder / "aef.zarr", shape=(160, 150), seed=5, n_events=4)
    compute_change_scores(
        folder / "aef.zarr", folder / "raw.zarr", robust_zscore=False, bbox=None
    ).close()
    compute_change_scores(folder / "aef.zarr", folder / "z.zarr").close()
    return folder, truth


def centre(truth, row, col):
    a, _, c, _, e, f = truth.grid.transform
    return c + a * (col + 0.5), f + e * (row + 0.5)


def reference_distances(raw: np.ndarray) -> np.ndarray:
    """Cosine distances of dequantised vectors, pair by pair; NaN for no-data years."""
    T = len(raw)
    out = np.full((T, T), np.nan)
    for i in range(T):
        for j in range(T):
            if raw[i, 0] == -128 or raw[j, 0] == -128:
                continue
            a = np.sign(raw[i]) * (raw[i] / 127.5) ** 2
            b = np.sign(raw[j]) * (raw[j] / 127.5) ** 2
            out[i, j] = 1 - a @ b / np.sqrt((a @ a) * (b @ b))
    return out


def test_the_profile_holds_the_pixels_scores_distances_and_medoids(scored):
    folder, truth = scored
    event = next(c for c in truth.changes if c.kind == "one_year")
    row, col = (event.rows[0] + event.rows[1]) // 2, (event.cols[0] + event.cols[1]) // 2
    x, y = centre(truth, row, col)

    profile = read_pixel_profile(folder / "raw.zarr", x, y)

    assert (profile.row, profile.col) == (row, col)
    assert (profile.x, profile.y) == pytest.approx((x, y))
    with xr.open_zarr(folder / "raw.zarr") as ds:
        expected = ds["scores"].sel(band=LOO).values[:, row, col]
    np.testing.assert_array_equal(profile.scores[LOO], expected)
    with xr.open_zarr(folder / "aef.zarr") as ds:
        raw = ds["embeddings"].values[:, :, row, col].astype(np.float64)
    np.testing.assert_allclose(profile.distances, reference_distances(raw), atol=1e-9)
    # The stored loo_medoid score of each year is its distance to its medoid.
    for k, medoid in enumerate(profile.medoid_years):
        m = profile.years.index(medoid)
        assert profile.distances[k, m] == pytest.approx(expected[k], abs=2e-6)
    k = profile.years.index(event.year)
    assert profile.medoid_years[k] != event.year
    assert int(np.nanargmax(profile.scores[LOO])) == k


def test_a_no_data_year_has_no_distances_and_no_medoid(scored):
    folder, truth = scored
    hole = next(c for c in truth.changes if c.kind == "no_data")
    row, col = hole.rows[0], hole.cols[0]
    profile = read_pixel_profile(folder / "z.zarr", *centre(truth, row, col))
    k = profile.years.index(hole.year)
    assert not profile.has_data[k]
    assert np.isnan(profile.distances[k]).all() and np.isnan(profile.distances[:, k]).all()
    assert profile.medoid_years[k] is None
    assert profile.has_data.sum() == len(profile.years) - 1


def test_a_point_in_another_crs_finds_the_same_pixel(scored):
    from osgeo import osr

    folder, truth = scored
    x, y = centre(truth, 20, 30)
    wgs84, mercator = osr.SpatialReference(), osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    mercator.ImportFromEPSG(3857)
    for srs in (wgs84, mercator):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    mx, my, _ = osr.CoordinateTransformation(wgs84, mercator).TransformPoint(x, y)
    profile = read_pixel_profile(folder / "z.zarr", mx, my, point_crs="EPSG:3857")
    assert (profile.row, profile.col) == (20, 30)


def test_a_point_outside_the_output_says_where_the_output_is(scored):
    folder, truth = scored
    x, y = centre(truth, -5, 10)
    with pytest.raises(WindowError, match="outside the scores output, which covers"):
        read_pixel_profile(folder / "z.zarr", x, y)


def test_without_its_embedding_store_the_profile_shows_the_scores_and_says_why(scored, tmp_path):
    folder, truth = scored
    shutil.copytree(folder / "aef.zarr", tmp_path / "aef.zarr")
    compute_change_scores(tmp_path / "aef.zarr", tmp_path / "z.zarr").close()
    shutil.rmtree(tmp_path / "aef.zarr")
    profile = read_pixel_profile(tmp_path / "z.zarr", *centre(truth, 3, 4))
    assert profile.distances is None
    assert "could not be read" in profile.note
    assert np.isfinite(profile.scores[LOO_Z]).any()


def test_the_report_and_table_hold_every_year(scored, tmp_path):
    folder, truth = scored
    x, y = centre(truth, 40, 50)
    profile = change_profile(
        folder / "z.zarr", x, y, html_path=tmp_path / "p.html", csv_path=tmp_path / "p.csv"
    )
    with open(tmp_path / "p.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["year"]) for r in rows] == profile.years
    assert float(rows[2][LOO_Z]) == pytest.approx(profile.scores[LOO_Z][2], abs=1e-6)
    assert rows[3]["loo_medoid_year"] == str(profile.medoid_years[3])
    assert float(rows[1][f"distance_to_{profile.years[4]}"]) == pytest.approx(
        profile.distances[1, 4], abs=1e-6
    )
    page = (tmp_path / "p.html").read_text()
    assert page.count("<svg") == 2
    assert "Leave-one-out medoids" in page and f"{profile.x:.6f}" in page


def test_a_pyramid_of_the_scores_leads_back_to_them(scored, tmp_path):
    from embedding_change.core import build_multiscales

    folder, truth = scored
    build_multiscales(folder / "z.zarr", tmp_path / "pyramid.zarr").close()
    x, y = centre(truth, 40, 50)
    profile = read_pixel_profile(tmp_path / "pyramid.zarr", x, y)
    assert profile.scores_url == str(folder / "z.zarr")
    assert (profile.row, profile.col) == (40, 50) and profile.distances is not None


def test_a_private_remote_source_is_reached_the_way_the_run_reached_it(private_s3, tmp_path):
    from embedding_change.core.credentials import AUTHCFG_NOTE

    secrets = {"key": private_s3.key, "secret": private_s3.secret}
    options = {"endpoint_url": private_s3.endpoint, **secrets, AUTHCFG_NOTE: "cfg0001"}
    compute_change_scores(private_s3.url, tmp_path / "s.zarr", storage_options=options).close()
    local = write_aef_like_store(
        tmp_path / "same.zarr", shape=private_s3.shape, seed=private_s3.seed
    )
    x, y = centre(local, 40, 50)
    asked = []

    def credentials(recorded, url):  # what the plugin does with the configuration's id
        asked.append((recorded, url))
        return {**recorded, **secrets}

    with xr.open_zarr(tmp_path / "s.zarr") as ds:
        recorded = ds.attrs["embedding_change:storage_options"]
    without = read_pixel_profile(tmp_path / "s.zarr", x, y)
    profile = read_pixel_profile(tmp_path / "s.zarr", x, y, credentials=credentials)

    assert recorded == {"endpoint_url": private_s3.endpoint, AUTHCFG_NOTE: "cfg0001"}
    assert asked == [(recorded, private_s3.url)]
    with xr.open_zarr(tmp_path / "same.zarr") as ds:
        raw = ds["embeddings"].values[:, :, 40, 50].astype(np.float64)
    np.testing.assert_allclose(profile.distances, reference_distances(raw), atol=1e-9)
    assert profile.note is None
    # The recorded endpoint alone: the server refuses the anonymous read, and the note says so.
    assert without.distances is None and "permission denied" in without.note
    assert private_s3.secret not in without.note


def test_credentials_that_cannot_be_found_leave_the_scores_and_a_note(scored):
    folder, truth = scored
    x, y = centre(truth, 10, 10)

    def missing(recorded, url):
        raise LookupError("no configuration cfg0002 in this profile")

    profile = read_pixel_profile(folder / "raw.zarr", x, y, credentials=missing)

    assert profile.distances is None and "no configuration cfg0002" in profile.note
    assert np.isfinite(profile.scores[LOO]).any()
