"""algorithms/load_scores.py: existing stores load styled, named and on the time slider."""

from __future__ import annotations

import numpy as np
import pytest
from qgis.core import QgsProcessingException

from .conftest import (
    GSD,
    assert_layers_show_the_store,
    band_years,
    write_scores_store,
)

pytestmark = pytest.mark.qgis
ALGORITHM = "embeddingchange:loadscores"


def write_with_plain_xarray(path, variable="embeddings", years=range(2018, 2024), shape=(30, 40)):
    """What another tool's script writes: a (time, band, y, x) float variable, x/y pixel
    centres, the CRS as a proj:code attribute only, Zarr v2 for GDAL < 3.11; no plugin code."""
    import xarray as xr
    from osgeo import gdal

    ny, nx = shape
    rng = np.random.default_rng(4)
    values = rng.normal(scale=0.6, size=(len(years), 2, ny, nx)).astype("float32")
    values[2, 1, 5:15, 10:20] = 12.0  # loo_medoid: an event in the third year
    values[4, 0, :, :] = 7.0  # difference everywhere in the fifth (not the score shown first)
    data = xr.Dataset(
        {variable: (("time", "band", "y", "x"), values)},
        coords={
            "time": np.array(list(years), dtype="int32"),
            "band": ["difference_cosine_distance_robust_time_zscore", "loo_medoid_zscore"],
            "x": -105.3 + GSD * (np.arange(nx) + 0.5),
            "y": 40.05 - GSD * (np.arange(ny) + 0.5),
        },
        attrs={"proj:code": "EPSG:4326"},
    )
    version = int(gdal.VersionInfo("VERSION_NUM"))
    data.to_zarr(
        path,
        zarr_format=2 if version < 3110000 else 3,
        encoding={variable: {"_FillValue": np.nan}},
    )
    return values


def test_a_store_written_by_a_plain_xarray_script_loads_styled_named_and_temporal(
    provider, project, tmp_path, qgis_iface, temporal_navigation
):
    import processing

    path = tmp_path / "other_tool.zarr"
    values = write_with_plain_xarray(path)

    result = processing.runAndLoadResults(ALGORITHM, {"INPUT": str(path)})

    assert result["LAYERS"] > 0
    (run_group,) = project.layerTreeRoot().findGroups()
    assert run_group.name() == "other_tool.zarr"
    groups = run_group.findGroups()
    assert [g.name() for g in groups] == [
        "LOO medoid z-score",
        "Year-to-year difference raw cosine z-score",
    ]
    assert [g.isVisible() for g in groups] == [True, False]
    layers = [node.layer() for group in groups for node in group.findLayers()]
    for layer in layers:
        assert layer.crs().authid() == "EPSG:4326"
        assert layer.renderer().type() == "singlebandpseudocolor"
        assert set(band_years(layer).values()) <= set(range(2018, 2024))
    frame = temporal_navigation.dateTimeRangeForFrameNumber(
        temporal_navigation.currentFrameNumber()
    )
    assert frame.begin().date().year() == 2020  # the loo_medoid event's year
    from .conftest import ScoresStore

    x = -105.3 + GSD * (np.arange(40) + 0.5)
    y = 40.05 - GSD * (np.arange(30) + 0.5)
    store = ScoresStore(
        path,
        list(range(2018, 2024)),
        ["difference_cosine_distance_robust_time_zscore", "loo_medoid_zscore"],
        values,
        x,
        y,
    )
    assert_layers_show_the_store(layers, store)


def test_the_plugins_own_scores_and_pyramids_load_too(provider, project, tmp_path):
    import processing

    from embedding_change.core import build_multiscales
    from embedding_change.layers.sources import zarr_format_for_layers

    store = write_scores_store(tmp_path / "scores.zarr", shape=(300, 280))
    build_multiscales(store.path, tmp_path / "pyramid.zarr", zarr_format=zarr_format_for_layers())

    processing.runAndLoadResults(ALGORITHM, {"INPUT": str(store.path)})
    processing.runAndLoadResults(ALGORITHM, {"INPUT": str(tmp_path / "pyramid.zarr")})

    names = sorted(g.name() for g in project.layerTreeRoot().findGroups())
    assert names == ["pyramid.zarr", "scores.zarr"]
    for group in project.layerTreeRoot().findGroups():
        assert [g.name() for g in group.findGroups()] == [
            "LOO medoid z-score",
            "Year-to-year difference z-score",
        ]
    pyramid_group = project.layerTreeRoot().findGroup("pyramid.zarr")
    first = pyramid_group.findLayers()[0].layer()
    assert first.dataProvider().hasPyramids() or first.source().endswith(".vrt")


def test_a_folder_that_is_no_scores_store_says_what_it_needs(provider, tmp_path):
    import processing
    import zarr

    zarr.open_group(str(tmp_path / "empty.zarr"), mode="w")
    with pytest.raises(QgsProcessingException, match="has no variable scores or embeddings"):
        processing.run(ALGORITHM, {"INPUT": str(tmp_path / "empty.zarr")})
