"""layers/temporal_controller.py and the year layer's time: the Temporal Controller panel and the
map say the frame's year; from QGIS 3.38 "Year of largest change" plays with the frames."""

from __future__ import annotations

import numpy as np
import pytest
from qgis.core import (
    QgsExpression,
    QgsExpressionContext,
    QgsExpressionContextUtils,
    QgsInterval,
    QgsMapSettings,
    QgsProject,
    QgsTemporalNavigationObject,
    QgsUnitTypes,
)
from qgis.gui import QgsTemporalControllerWidget
from qgis.PyQt.QtWidgets import QLabel

from embedding_change.layers import temporal_controller
from embedding_change.layers.score_layers import load_score_layers
from embedding_change.layers.temporal import animation_extent, years_range

from .conftest import YEARS_AS_BANDS
from .test_score_layers import rendered_frame

pytestmark = pytest.mark.qgis


@pytest.fixture
def panel(qgis_app):
    """QGIS's own Temporal Controller panel widget, as the desktop's dock holds it."""
    widget = QgsTemporalControllerWidget()
    yield widget
    widget.deleteLater()


def animate(controller, first=2017, last=2025, frame=0):
    controller.setNavigationMode(QgsTemporalNavigationObject.Animated)
    controller.setFrameDuration(QgsInterval(1, QgsUnitTypes.TemporalYears))
    controller.setTemporalExtents(animation_extent(first, last))
    controller.setCurrentFrameNumber(frame)


def frame_label(panel) -> str:
    return panel.findChild(QLabel, temporal_controller.FRAME_LABEL).text()


def test_the_panels_frame_label_shows_the_year_alone_on_every_frame(panel):
    controller = panel.temporalController()
    animate(controller)
    assert "2017-01-01 00:00:00" in frame_label(panel)  # QGIS's own text, before
    assert temporal_controller.show_year_in_frame_label(panel, controller)
    assert frame_label(panel).endswith(": 2017")
    for frame, year in ((3, 2020), (8, 2025), (0, 2017)):
        controller.setCurrentFrameNumber(frame)
        assert frame_label(panel).endswith(f": {year}"), frame_label(panel)
        assert "00:00" not in frame_label(panel)
    controller.next()
    assert frame_label(panel).endswith(": 2018")


def test_frames_that_are_not_whole_years_keep_qgiss_label(panel):
    controller = panel.temporalController()
    animate(controller)
    temporal_controller.show_year_in_frame_label(panel, controller)
    temporal_controller.show_year_in_frame_label(panel, controller)  # twice: one slot
    controller.setFrameDuration(QgsInterval(1, QgsUnitTypes.TemporalMonths))
    controller.setCurrentFrameNumber(14)  # March 2018
    assert "2018-03-01 00:00:00" in frame_label(panel)


def test_frame_year_is_only_given_for_one_calendar_year():
    assert temporal_controller.frame_year(years_range(2019, 2019)) == 2019
    assert temporal_controller.frame_year(years_range(2019, 2020)) is None
    text = "Current frame: 2019-01-01 00:00:00 ≤ <i>t</i> &lt; 2020-01-01 00:00:00"
    assert temporal_controller.year_label_text(text, years_range(2019, 2019)) == (
        "Current frame: 2019"
    )


def test_the_map_title_shows_the_frames_year(project, scores_store, qgis_iface):
    load_score_layers(scores_store.path, project, qgis_iface)
    label, _ = project.readEntry("TitleLabel", "/Label", "")
    assert label == temporal_controller.YEAR_TITLE
    assert project.readBoolEntry("TitleLabel", "/Enabled", False)[0]
    # What the decoration draws: the expression in the canvas's context for a frame.
    settings = QgsMapSettings()
    settings.setIsTemporal(True)
    settings.setTemporalRange(years_range(2021, 2021))
    context = QgsExpressionContext()
    context.appendScope(QgsExpressionContextUtils.mapSettingsScope(settings))
    assert QgsExpression.replaceExpressionText(label, context) == "2021"


def test_a_projects_own_title_label_is_kept(project, scores_store, qgis_iface):
    project.writeEntry("TitleLabel", "/Label", "Boulder, my study")
    project.writeEntry("TitleLabel", "/Enabled", True)
    load_score_layers(scores_store.path, project, qgis_iface)
    assert project.readEntry("TitleLabel", "/Label", "")[0] == "Boulder, my study"


def test_a_year_label_the_analyst_switched_off_stays_off(project, scores_store, qgis_iface):
    load_score_layers(scores_store.path, project, qgis_iface)
    project.writeEntry("TitleLabel", "/Enabled", False)
    load_score_layers(scores_store.path, project, qgis_iface)
    assert not project.readBoolEntry("TitleLabel", "/Enabled", True)[0]


@pytest.mark.skipif(not YEARS_AS_BANDS, reason="'represents temporal values' came in QGIS 3.38")
def test_year_of_largest_change_shows_each_frames_year_only(project, aef_store, tmp_path):
    from embedding_change.core import compute_change_scores
    from embedding_change.layers.sources import zarr_format_for_layers
    from embedding_change.layers.summary import YEAR_TITLE

    path, _ = aef_store
    output = tmp_path / "summary.zarr"
    compute_change_scores(path, output, zarr_format=zarr_format_for_layers())
    load_score_layers(output, project)
    (year_layer,) = project.mapLayersByName(YEAR_TITLE)
    provider = year_layer.dataProvider()
    block = provider.block(1, year_layer.extent(), year_layer.width(), year_layer.height())
    values = np.frombuffer(bytes(block.data()), np.int16).reshape(
        year_layer.height(), year_layer.width()
    )
    years = sorted(int(v) for v in np.unique(values) if v)
    assert years, "the store has changes above the threshold"
    for year in range(min(years) - 1, max(years) + 2):
        painted = rendered_frame([year_layer], years_range(year, year))[..., 3] > 0
        np.testing.assert_array_equal(painted, values == year, err_msg=str(year))
    assert QgsProject.instance() is project
