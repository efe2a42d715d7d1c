"""How score layers move in time: one calendar year a frame of the Temporal Controller.

On QGIS < 3.38 a score is one layer per year, each with a fixed one-year range; from 3.38 on it
is one layer whose bands are the years, with a range per band (QGIS draws the band of the
frame's year). `animate_years` points the project and the controller at the years.
"""

from __future__ import annotations

from qgis.core import (
    Qgis,
    QgsDateTimeRange,
    QgsInterval,
    QgsProject,
    QgsRasterLayer,
    QgsRasterLayerTemporalProperties,
    QgsTemporalNavigationObject,
    QgsUnitTypes,
)
from qgis.PyQt.QtCore import QDate, QDateTime, Qt, QTime

from .score_slice import PROPERTY, ScoreSlice

# QGIS 3.38 added temporal ranges per band: one layer per score, years as bands.
PER_BAND_TEMPORAL = Qgis.QGIS_VERSION_INT >= 33800


def new_year(year: int) -> QDateTime:
    """1 January of `year`, 00:00 UTC."""
    return QDateTime(QDate(year, 1, 1), QTime(0, 0, 0), Qt.UTC)


def year_range(year: int) -> QgsDateTimeRange:
    """The calendar year as a layer's range: one frame of the controller shows exactly one year.

    Both ends are open: QGIS 3.22's overlap test ignores the frame's open end, so a layer
    starting at the frame's end (1 January next year) would show in two frames otherwise.
    """
    return QgsDateTimeRange(new_year(year), new_year(year + 1), False, False)


def years_range(first: int, last: int) -> QgsDateTimeRange:
    """From 1 January of `first` to 1 January after `last` (excluded), in UTC."""
    return QgsDateTimeRange(new_year(first), new_year(last + 1), True, False)


def animation_extent(first: int, last: int) -> QgsDateTimeRange:
    """The temporal controller's extent for the years: one frame per year, none extra.

    It ends on 31 December of `last`: QGIS counts frames as the extent over 365.25 days,
    rounded up, which gives a 12th, empty frame for 11 calendar years with 3 leap days.
    """
    return QgsDateTimeRange(new_year(first), new_year(last + 1).addDays(-1), True, False)


def set_score_temporal(layer: QgsRasterLayer, score: ScoreSlice) -> None:
    """The layer's name and temporal range(s): its year, or one range per band (year)."""
    temporal = layer.temporalProperties()
    if score.year is None:
        # The renderer draws the band whose range holds the frame (QgsRasterLayerRenderer sets
        # its input band from bandForTemporalRange); half-open years: one band per frame.
        layer.setName(f"{score.years[0]}–{score.years[-1]}")
        temporal.setFixedRangePerBand(
            {
                number: QgsDateTimeRange(new_year(year), new_year(year + 1), True, False)
                for number, year in enumerate(score.years, start=1)
            }
        )
        temporal.setMode(Qgis.RasterTemporalMode.FixedRangePerBand)
    else:
        layer.setName(str(score.year))
        temporal.setMode(QgsRasterLayerTemporalProperties.ModeFixedTemporalRange)
        temporal.setFixedTemporalRange(year_range(score.year))
        layer.setCustomProperty(f"{PROPERTY}/year", score.year)
    temporal.setIsActive(True)


# The year layer's pixel values are years. QGIS reads a value v as offset + v * scale; its
# projects keep no offset before year 1 (1 BC is written as ""), so the offset is 1 January of
# year 1 and the scale a little under a year: v lands mid-year v for the run's middle year and
# within the year v for a thousand years either side (see set_year_values_temporal).
YEAR_VALUES_OFFSET = QDateTime(QDate(1, 1, 1), QTime(0, 0, 0), Qt.UTC)


def set_year_values_temporal(layer: QgsRasterLayer, years) -> bool:
    """QGIS >= 3.38: the layer's pixel values are years, so a frame shows the pixels of its year
    (mode "represents temporal values"); False on older QGIS, where the layer stays timeless."""
    if not PER_BAND_TEMPORAL:
        return False
    middle = (min(years) + max(years)) / 2
    temporal = layer.temporalProperties()
    temporal.setMode(Qgis.RasterTemporalMode.RepresentsTemporalValues)
    temporal.setBandNumber(1)
    temporal.setTemporalRepresentationOffset(YEAR_VALUES_OFFSET)
    # 1 Jan of year 1 + v * (1 - 1/(2m)) years = the middle of year v when v = m.
    scale = 1 - 1 / (2 * middle)
    temporal.setTemporalRepresentationScale(QgsInterval(scale, QgsUnitTypes.TemporalYears))
    temporal.setIsActive(True)
    return True


def animate_years(project: QgsProject, years, iface=None, focus_year: int | None = None) -> None:
    """Point the temporal controller at the years, one year a frame.

    The project's time range becomes the union of what it had and these years (it never
    shrinks, so earlier results stay reachable). The first time, the current frame is
    `focus_year` (the year with the most change); later the frame the analyst left stays. The
    project's time settings always (saved with the project, read by the desktop on load); the
    canvas's navigation object and the Temporal Controller panel too when there is a window.
    """
    first, last = min(years), max(years)
    settings = project.timeSettings()
    animated_before = project.readBoolEntry(PROPERTY, "animated", False)[0]
    previous = settings.temporalRange()
    if animated_before and previous.begin().isValid() and previous.end().isValid():
        first = min(first, previous.begin().date().year())
        last = max(last, previous.end().addMSecs(-1).date().year())
    # Ends on 31 December, as the controller's extent: the desktop's panel resets its extent to
    # the project's range (a layer loaded later, a project opened again), and 1 January after
    # the last year would give it an empty frame more.
    settings.setTemporalRange(animation_extent(first, last))
    settings.setTimeStep(1)
    settings.setTimeStepUnit(QgsUnitTypes.TemporalYears)
    settings.setFramesPerSecond(1)
    project.writeEntryBool(PROPERTY, "animated", True)
    from .temporal_controller import open_temporal_controller, show_year_on_map

    _cosmetic(show_year_on_map, project, iface)
    controller = iface.mapCanvas().temporalController() if iface is not None else None
    if not isinstance(controller, QgsTemporalNavigationObject):
        return
    shown = None
    if animated_before and controller.navigationMode() == QgsTemporalNavigationObject.Animated:
        current = controller.dateTimeRangeForFrameNumber(controller.currentFrameNumber())
        shown = current.begin().date().year()
    controller.setNavigationMode(QgsTemporalNavigationObject.Animated)
    controller.setFrameDuration(QgsInterval(1, QgsUnitTypes.TemporalYears))
    controller.setTemporalExtents(animation_extent(first, last))
    controller.setFramesPerSecond(1)
    year = shown if shown is not None else (focus_year or min(years))
    controller.setCurrentFrameNumber(max(0, year - first))
    _cosmetic(open_temporal_controller, iface)


def _cosmetic(show, *args) -> None:
    """show(*args), whose failure (a QGIS whose panel differs) must never stop a result loading."""
    try:
        show(*args)
    except Exception as exc:  # noqa: BLE001
        from qgis.core import Qgis, QgsMessageLog

        QgsMessageLog.logMessage(f"{show.__name__}: {exc}", "Embedding change", Qgis.Warning)
