"""Change hotspots through processing.run: polygons, their fields, time ranges and errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from qgis.core import (
    QgsDateTimeRange,
    QgsExpression,
    QgsFeatureRequest,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsVectorLayer,
    QgsVectorLayerTemporalContext,
    QgsVectorLayerTemporalProperties,
)
from qgis.PyQt.QtCore import QDate, QDateTime, Qt, QTime

from .conftest import ZSCORE_BANDS, wait_for_background_tasks

pytestmark = pytest.mark.qgis
ALGORITHM = "embeddingchange:changehotspots"
MODEL = Path(__file__).resolve().parents[2] / "models" / "change_scores.model3"


def frame(year: int) -> QgsDateTimeRange:
    """One frame of the temporal controller stepping a year at a time."""
    begin = QDateTime(QDate(year, 1, 1), QTime(0, 0), Qt.UTC)
    end = QDateTime(QDate(year + 1, 1, 1), QTime(0, 0), Qt.UTC)
    return QgsDateTimeRange(begin, end, True, False)


def years_shown(layer: QgsVectorLayer, year: int) -> list[int]:
    """The years of the features QGIS draws in the frame of `year`."""
    temporal = layer.temporalProperties()
    text = temporal.createFilterString(QgsVectorLayerTemporalContext(), frame(year))
    request = QgsFeatureRequest(QgsExpression(text)) if text else QgsFeatureRequest()
    return sorted(f["year"] for f in layer.getFeatures(request))


def test_processing_run_writes_one_polygon_for_the_planted_block(provider, scores_store, tmp_path):
    import processing

    output = tmp_path / "hotspots.gpkg"
    result = processing.run(ALGORITHM, {"INPUT": str(scores_store.path), "OUTPUT": str(output)})

    assert result["OUTPUT"] == str(output)
    assert result["SUMMARY"] is None
    layer = QgsVectorLayer(f"{output}|layername=hotspots", "hotspots", "ogr")
    assert layer.isValid() and layer.crs().authid() == "EPSG:4326"
    (feature,) = layer.getFeatures()
    # The conftest store: 9.0 in rows 10..20, cols 5..15 of year index 3 (2020), noise <= 1.5.
    assert feature["year"] == 2020
    assert feature["score"] == ZSCORE_BANDS[1]
    assert (feature["pixels"], feature["max_z"], feature["mean_z"]) == (100, 9.0, 9.0)
    box = feature.geometry().boundingBox()
    x0, y0 = scores_store.x[0], scores_store.y[0]
    gsd = scores_store.x[1] - x0
    assert box.xMinimum() == pytest.approx(x0 + 4.5 * gsd)
    assert box.xMaximum() == pytest.approx(x0 + 14.5 * gsd)
    assert box.yMaximum() == pytest.approx(y0 - 9.5 * gsd)
    assert feature["area_m2"] == pytest.approx(100 * 9.989 * 7.649, rel=0.005)  # 10 m x 7.6 m


def test_loaded_polygons_are_styled_and_follow_the_temporal_controller(
    provider, project, scores_store, tmp_path
):
    import processing

    output = tmp_path / "hotspots.gpkg"
    processing.runAndLoadResults(
        ALGORITHM,
        {"INPUT": str(scores_store.path), "MERGE_YEARS": True, "OUTPUT": str(output)},
        feedback=QgsProcessingFeedback(),
    )
    wait_for_background_tasks()

    layers = {layer.name(): layer for layer in QgsProject.instance().mapLayers().values()}
    hotspots = next(v for k, v in layers.items() if k != "Hotspot regions across years")
    regions = layers["Hotspot regions across years"]
    for layer in (hotspots, regions):
        temporal = layer.temporalProperties()
        assert temporal.isActive()
        assert temporal.mode() == (
            QgsVectorLayerTemporalProperties.ModeFeatureDateTimeStartAndEndFromFields
        )
    assert [years_shown(hotspots, year) for year in (2019, 2020, 2021)] == [[], [2020], []]
    (region,) = regions.getFeatures()
    assert (region["first_year"], region["last_year"], region["pixel_years"]) == (2020, 2020, 100)
    settings = QgsProject.instance().timeSettings().temporalRange()
    # 1 January 2017 to 31 December 2025, as the Temporal Controller's frames (layers/temporal.py)
    assert (settings.begin().date().year(), settings.end().date().year()) == (2017, 2025)


def test_threshold_years_and_score_choose_what_is_outlined(provider, scores_store, tmp_path):
    import processing

    parameters = {
        "INPUT": str(scores_store.path),
        "SCORE": ZSCORE_BANDS[0],
        "THRESHOLD": 1.0,
        "MIN_PIXELS": 1,
        "CONNECTIVITY": "8",
        "YEARS": "2019-2021",
        "OUTPUT": str(tmp_path / "h.gpkg"),
    }
    processing.run(ALGORITHM, parameters)
    layer = QgsVectorLayer(f"{tmp_path / 'h.gpkg'}|layername=hotspots", "h", "ogr")
    years = {f["year"] for f in layer.getFeatures()}
    assert years == {2019, 2020, 2021}
    assert {f["score"] for f in layer.getFeatures()} == {ZSCORE_BANDS[0]}
    assert max(f["pixels"] for f in layer.getFeatures()) >= 100


def test_bad_input_says_what_to_fix(provider, scores_store, tmp_path):
    import processing

    output = str(tmp_path / "h.gpkg")
    with pytest.raises(QgsProcessingException, match="not a change scores output"):
        processing.run(ALGORITHM, {"INPUT": str(tmp_path), "OUTPUT": output})
    with pytest.raises(QgsProcessingException, match="THRESHOLD"):
        processing.run(
            ALGORITHM, {"INPUT": str(scores_store.path), "THRESHOLD": "abc", "OUTPUT": output}
        )
    with pytest.raises(QgsProcessingException, match="has no score 'nope'"):
        processing.run(
            ALGORITHM, {"INPUT": str(scores_store.path), "SCORE": "nope", "OUTPUT": output}
        )
    with pytest.raises(QgsProcessingException, match="Cannot read the years"):
        processing.run(
            ALGORITHM, {"INPUT": str(scores_store.path), "YEARS": "last year", "OUTPUT": output}
        )


def test_the_shipped_model_outlines_hotspots_after_change_scores(provider, aef_store, tmp_path):
    import processing
    from qgis.core import QgsProcessingModelAlgorithm

    from embedding_change.core.hotspots import change_hotspots
    from embedding_change.core.store import open_embedding_store

    from .conftest import store_extent

    path, _ = aef_store
    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(MODEL))
    assert model.validate() == (True, [])
    outputs = {
        p.name().rsplit(":", 1)[-1]: p.name() for p in model.destinationParameterDefinitions()
    }
    assert {"scores", "hotspots"} <= set(outputs)
    bbox = open_embedding_store(path).grid.bbox
    results = processing.run(
        model,
        {
            "store": str(path),
            "area": store_extent(bbox, (0.0, 0.6, 0.4, 1.0)),
            "years": "",
            outputs["scores"]: str(tmp_path / "scores.zarr"),
            outputs["pyramid"]: str(tmp_path / "pyramid.zarr"),
            outputs["hotspots"]: str(tmp_path / "hotspots.gpkg"),
        },
        feedback=QgsProcessingFeedback(),
    )

    assert results[outputs["hotspots"]] == str(tmp_path / "hotspots.gpkg")
    expected = change_hotspots(tmp_path / "scores.zarr", tmp_path / "engine.gpkg", merge_years=True)
    got = QgsVectorLayer(f"{tmp_path / 'hotspots.gpkg'}|layername=hotspots", "h", "ogr")
    assert got.featureCount() == expected.features > 0
