"""Export change scores through processing.run: GeoTIFFs QGIS reads in the right place."""

from __future__ import annotations

import math

import numpy as np
import pytest
from qgis.core import QgsProcessingException, QgsRasterLayer

from .conftest import band_values, write_scores_store

pytestmark = pytest.mark.qgis
ALGORITHM = "embeddingchange:exportscores"


def test_processing_run_writes_geotiffs_qgis_places_and_reads(provider, scores_store, tmp_path):
    import processing

    result = processing.run(
        ALGORITHM, {"INPUT": str(scores_store.path), "OUTPUT": str(tmp_path / "cogs")}
    )

    assert result["OUTPUT"] == str(tmp_path / "cogs")
    assert len(result["FILES"]) == len(scores_store.bands)
    for b, path in enumerate(result["FILES"]):
        layer = QgsRasterLayer(path, "score", "gdal")
        assert layer.isValid() and layer.crs().authid() == "EPSG:4326"
        extent = layer.extent()
        corners = (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
        assert corners == pytest.approx(scores_store.bbox, abs=1e-9)
        assert layer.bandCount() == len(scores_store.years)
        for t, year in enumerate(scores_store.years):
            assert layer.bandName(t + 1).endswith(str(year))
            np.testing.assert_array_equal(band_values(layer, t + 1), scores_store.scores[t, b])
        assert math.isnan(layer.dataProvider().sourceNoDataValue(1))


def test_processing_run_writes_the_summary_files_qgis_places_and_reads(provider, tmp_path):
    import processing
    import xarray as xr

    from embedding_change.layers.sources import zarr_format_for_layers

    store = write_scores_store(tmp_path / "scores.zarr")
    finite = np.isfinite(store.scores)
    filled = np.where(finite, store.scores, -np.inf)
    reached = finite.any(axis=0)
    summary = {
        "largest_score": np.where(reached, filled.max(axis=0), np.nan),
        "year_of_largest": np.where(
            reached, np.asarray(store.years, np.float32)[filled.argmax(axis=0)], np.nan
        ),
    }
    with xr.open_zarr(store.path, consolidated=None) as ds:
        attrs = dict(ds.attrs)  # appending replaces the group's attributes: keep them
    xr.Dataset(
        {k: (("band", "y", "x"), v.astype(np.float32)) for k, v in summary.items()}, attrs=attrs
    ).to_zarr(store.path, mode="a", zarr_format=zarr_format_for_layers(), consolidated=True)
    with xr.open_zarr(store.path, consolidated=None) as ds:
        expected = {k: ds[k].values for k in summary}

    result = processing.run(ALGORITHM, {"INPUT": str(store.path), "OUTPUT": str(tmp_path / "cogs")})

    assert len(result["FILES"]) == 3 * len(store.bands)
    for b, label in enumerate(store.bands):
        for k, (variable, description) in enumerate(
            (
                ("largest_score", "largest score over the years"),
                ("year_of_largest", "year of the largest score"),
            )
        ):
            path = result["FILES"][3 * b + 1 + k]
            assert path == str(tmp_path / "cogs" / f"{label}_{variable}.tif")
            layer = QgsRasterLayer(path, variable, "gdal")
            assert layer.isValid() and layer.crs().authid() == "EPSG:4326"
            extent = layer.extent()
            corners = (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
            assert corners == pytest.approx(store.bbox, abs=1e-9)
            assert layer.bandCount() == 1
            assert layer.bandName(1).endswith(description)
            np.testing.assert_array_equal(band_values(layer, 1), expected[variable][b])
            assert math.isnan(layer.dataProvider().sourceNoDataValue(1))
    assert np.all(np.isin(expected["year_of_largest"], store.years))


def test_a_non_scores_input_is_refused(provider, tmp_path):
    import processing

    with pytest.raises(QgsProcessingException, match="not a change scores output"):
        processing.run(ALGORITHM, {"INPUT": str(tmp_path), "OUTPUT": str(tmp_path / "cogs")})
