"""core/summary.py: the year of the largest score and that score, per score and pixel."""

import numpy as np
import pytest
import xarray as xr

from embedding_change.core import compute_change_scores
from embedding_change.core.summary import LARGEST, YEAR_OF_LARGEST, summarise


def numpy_summary(scores: np.ndarray, years):
    """One pixel at a time: the largest finite score over the years, and its first year."""
    _, bands, ny, nx = scores.shape
    largest = np.full((bands, ny, nx), np.nan, np.float32)
    year = np.full((bands, ny, nx), np.nan, np.float32)
    for b, i, j in np.ndindex(bands, ny, nx):
        series = scores[:, b, i, j]
        finite = np.flatnonzero(np.isfinite(series))
        if finite.size:
            best = finite[np.argmax(series[finite])]
            largest[b, i, j], year[b, i, j] = series[best], years[best]
    return largest, year


def test_summarise_takes_the_first_largest_year_and_gives_nan_where_no_year_is_finite():
    scores = np.array(
        [[[[1.0, np.nan, 2.0]]], [[[5.0, np.nan, 2.0]]], [[[-np.inf, np.nan, np.nan]]]],
        np.float32,
    )
    largest, year = summarise(scores, [2019, 2020, 2021])
    np.testing.assert_array_equal(largest, [[[5.0, np.nan, 2.0]]])
    np.testing.assert_array_equal(year, [[[2020, np.nan, 2019]]])


@pytest.mark.slow
def test_a_run_writes_the_summary_beside_the_scores_equal_to_numpy(aef_store, tmp_path):
    path, _ = aef_store
    output = tmp_path / "scores.zarr"
    compute_change_scores(path, output, years=range(2018, 2025))

    with xr.open_zarr(output, consolidated=None) as ds:
        scores = ds["scores"].values
        years = [int(t) for t in ds["time"].values]
        assert ds[LARGEST].dims == ds[YEAR_OF_LARGEST].dims == ("band", "y", "x")
        assert list(ds[LARGEST]["band"].values) == list(ds["band"].values)
        largest, year = ds[LARGEST].values, ds[YEAR_OF_LARGEST].values
    assert scores.shape[0] == 7  # the scores stay (time, band, y, x)
    expected_largest, expected_year = numpy_summary(scores, years)
    np.testing.assert_array_equal(largest, expected_largest)
    np.testing.assert_array_equal(year, expected_year)
    assert np.isin(year[np.isfinite(year)], years).all()
