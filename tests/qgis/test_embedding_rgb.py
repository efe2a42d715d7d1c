"""Embedding false colour through processing: pictures per year, loaded under the scores."""

from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import (
    QgsDateTimeRange,
    QgsLayerTree,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayerTemporalProperties,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QDate, QDateTime, Qt, QTime

from embedding_change.core.false_colour import embedding_false_colour
from embedding_change.core.store import open_embedding_store

from .conftest import store_extent, wait_for_background_tasks

pytestmark = pytest.mark.qgis
ALGORITHM = "embeddingchange:embeddingrgb"


def frame(year: int) -> QgsDateTimeRange:
    return QgsDateTimeRange(
        QDateTime(QDate(year, 1, 1), QTime(0, 0), Qt.UTC),
        QDateTime(QDate(year + 1, 1, 1), QTime(0, 0), Qt.UTC),
        True,
        False,
    )


def test_pictures_load_per_year_under_everything_and_equal_the_engines(
    provider, project, aef_store, tmp_path
):
    import processing

    path, _ = aef_store
    bbox = open_embedding_store(path).grid.bbox
    extent = store_extent(bbox, (0.0, 0.5, 0.5, 1.0))
    QgsProject.instance().addMapLayer(QgsVectorLayer("Point?crs=EPSG:4326", "on top", "memory"))
    processing.runAndLoadResults(
        ALGORITHM,
        {
            "STORE": str(path),
            "EXTENT": extent,
            "YEARS": "2019-2021",
            "OUTPUT": str(tmp_path / "rgb"),
        },
        feedback=QgsProcessingFeedback(),
    )
    wait_for_background_tasks()

    root = QgsProject.instance().layerTreeRoot()
    last = root.children()[-1]
    assert QgsLayerTree.isGroup(last) and last.name() == "False colour: rgb"
    layers = [node.layer() for node in last.findLayers()]
    assert [layer.name() for layer in layers] == ["2019", "2020", "2021"]
    for layer, year in zip(layers, (2019, 2020, 2021), strict=True):
        temporal = layer.temporalProperties()
        assert temporal.isActive()
        assert temporal.mode() == QgsRasterLayerTemporalProperties.ModeFixedTemporalRange
        assert temporal.isVisibleInTemporalRange(frame(year))
        assert not temporal.isVisibleInTemporalRange(frame(year + 1))
        assert layer.renderer().type() == "multibandcolor"

    xmin, ymin, xmax, ymax = bbox
    box = (xmin, ymin + 0.5 * (ymax - ymin), xmin + 0.5 * (xmax - xmin), ymax)
    expected = embedding_false_colour(path, tmp_path / "engine", bbox=box, years=[2019, 2020, 2021])
    for layer, file in zip(layers, expected.files, strict=True):
        np.testing.assert_array_equal(
            gdal.Open(layer.source()).ReadAsArray(), gdal.Open(file).ReadAsArray()
        )


def test_band_names_that_are_not_in_the_store_say_so(provider, aef_store, tmp_path):
    import processing

    path, _ = aef_store
    extent = store_extent(open_embedding_store(path).grid.bbox, (0.0, 0.2, 0.8, 1.0))
    with pytest.raises(QgsProcessingException, match="three of the store's band names"):
        processing.run(
            ALGORITHM,
            {
                "STORE": str(path),
                "EXTENT": extent,
                "BANDS": "A00,B7",
                "OUTPUT": str(tmp_path / "x"),
            },
        )
