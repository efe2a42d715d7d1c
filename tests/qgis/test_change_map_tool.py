"""The map tool "Explain change at a pixel": click, background read, dock, frame, close."""

from __future__ import annotations

import pytest
from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsDateTimeRange,
    QgsPointXY,
    QgsProject,
)
from qgis.PyQt.QtCore import QDate, QDateTime, Qt, QTime

import embedding_change
from embedding_change.core import compute_change_scores
from embedding_change.core.store import open_embedding_store
from embedding_change.gui.change_map_tool import TITLE
from embedding_change.layers.score_layers import load_score_layers
from embedding_change.layers.sources import zarr_format_for_layers

from .conftest import wait_for_background_tasks

pytestmark = [pytest.mark.qgis, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def scores(aef_store, tmp_path_factory):
    path, truth = aef_store
    output = tmp_path_factory.mktemp("tool") / "scores.zarr"
    xmin, ymin, xmax, ymax = open_embedding_store(path).grid.bbox
    box = (xmin, ymin + 0.6 * (ymax - ymin), xmin + 0.4 * (xmax - xmin), ymax)
    compute_change_scores(path, output, bbox=box, zarr_format=zarr_format_for_layers()).close()
    return output, truth


@pytest.fixture
def plugin(qgis_iface, qgis_processing):
    """The plugin as QGIS loads it, before which nothing registered its provider."""
    registry = QgsApplication.processingRegistry()
    if registry.providerById("embeddingchange") is not None:
        registry.removeProvider("embeddingchange")
    plugin = embedding_change.classFactory(qgis_iface)
    plugin.initGui()
    yield plugin
    plugin.unload()


def pixel_centre(truth, row, col) -> QgsPointXY:
    a, _, c, _, e, f = truth.grid.transform
    return QgsPointXY(c + a * (col + 0.5), f + e * (row + 0.5))


def test_a_click_reads_in_the_background_and_the_dock_shows_the_pixel(
    plugin, project, qgis_iface, scores
):
    output, truth = scores
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:4326"))
    load_score_layers(output, QgsProject.instance())
    explainer = plugin.explainer
    assert explainer.action.text() == TITLE and explainer.action in plugin.toolbar.actions()

    explainer.action.trigger()
    assert canvas.mapTool() is explainer.tool and explainer.action.isChecked()
    dock = explainer.dock
    explainer.tool.explain_point(pixel_centre(truth, 20, 30))
    # The click returns at once: the read runs as a task.
    assert dock.profile is None and dock.is_busy()
    wait_for_background_tasks()

    assert (dock.profile.row, dock.profile.col) == (20, 30)
    assert dock.profile.distances is not None
    assert all(not label.pixmap().isNull() for label in dock.plots)
    assert "Leave-one-out medoids" in dock.facts.text()

    explainer.tool.explain_point(pixel_centre(truth, 5, 7))
    wait_for_background_tasks()
    assert (dock.profile.row, dock.profile.col) == (5, 7)
    assert explainer.tool.marker.center() == pixel_centre(truth, 5, 7)


def test_the_plots_follow_the_temporal_controllers_frame(plugin, project, qgis_iface, scores):
    output, truth = scores
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:4326"))
    load_score_layers(output, QgsProject.instance())
    plugin.explainer.action.trigger()
    dock = plugin.explainer.dock
    plugin.explainer.tool.explain_point(pixel_centre(truth, 10, 10))
    wait_for_background_tasks()
    assert dock.year_shown is None

    frame = QgsDateTimeRange(
        QDateTime(QDate(2021, 1, 1), QTime(0, 0), Qt.UTC),
        QDateTime(QDate(2022, 1, 1), QTime(0, 0), Qt.UTC),
    )
    canvas.setTemporalRange(frame)
    assert dock.current_year() == 2021
    wait_for_background_tasks()
    assert dock.year_shown == 2021
    assert not dock.plots[0].pixmap().isNull()


def test_a_click_off_the_scores_says_so(plugin, project, qgis_iface, scores):
    output, truth = scores
    qgis_iface.mapCanvas().setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:4326"))
    load_score_layers(output, QgsProject.instance())
    plugin.explainer.action.trigger()
    plugin.explainer.tool.explain_point(QgsPointXY(10.0, 10.0))
    wait_for_background_tasks()
    assert "No change scores layer" in plugin.explainer.dock.status.text()


def test_closing_the_dock_removes_the_tool_and_its_marker(plugin, project, qgis_iface, scores):
    output, truth = scores
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:4326"))
    load_score_layers(output, QgsProject.instance())
    explainer = plugin.explainer
    explainer.action.trigger()
    tool = explainer.tool
    tool.explain_point(pixel_centre(truth, 3, 3))
    marker = tool.marker
    assert marker in canvas.scene().items()

    explainer.dock.close()
    wait_for_background_tasks()

    assert explainer.dock is None and explainer.tool is None
    assert canvas.mapTool() is not tool
    assert marker not in canvas.scene().items()
    assert not explainer.action.isChecked()
    # The tool comes back on the next use.
    explainer.action.trigger()
    assert canvas.mapTool() is explainer.tool and explainer.dock.isVisible() is not None
