"""The desktop's Temporal Controller panel and the map say the year of the frame.

QGIS (3.22 to 3.40) has no setting for the panel's frame label: it writes "Current frame:
2019-01-01 00:00:00 ≤ t < 2020-01-01 00:00:00" itself, on every frame change. Its label is
rewritten to "Current frame: 2019" right after (our slot is connected after the panel's own, so
it runs last), for whole calendar-year frames only: a frame of another length keeps QGIS's text.
The map itself shows the year through QGIS's Title Label decoration with an expression
(`format_date(@map_start_time, 'yyyy')`), so exported animation frames carry it too; only when
the project has no title label of its own.
"""

from __future__ import annotations

from qgis.core import QgsDateTimeRange, QgsProject, QgsTemporalNavigationObject

PANEL_CLASS = "QgsTemporalControllerDockWidget"
FRAME_LABEL = "mCurrentRangeLabel"  # the panel's frame label (qgstemporalcontrollerwidgetbase.ui)
RELABELLED = "embedding_change_year_label"  # a property: our slot is connected to this label
TITLE_SCOPE = "TitleLabel"  # the Title Label decoration's project entries
YEAR_TITLE = "[% format_date(@map_start_time, 'yyyy') %]"


def frame_year(frame: QgsDateTimeRange) -> int | None:
    """The year of a frame that is exactly one calendar year (1 January to 1 January), else None."""
    begin, end = frame.begin(), frame.end()
    if not begin.isValid() or not end.isValid():
        return None
    whole_year = (
        begin.date().month() == 1
        and begin.date().day() == 1
        and begin.time().msecsSinceStartOfDay() == 0
    )
    return begin.date().year() if whole_year and end == begin.addYears(1) else None


def year_label_text(qgis_text: str, frame: QgsDateTimeRange) -> str:
    """The panel's text with the year alone: what QGIS wrote before the first ":" and the year."""
    year = frame_year(frame)
    if year is None or ":" not in qgis_text:
        return qgis_text
    return f"{qgis_text.split(':', 1)[0]}: {year}"


def show_year_in_frame_label(panel, controller: QgsTemporalNavigationObject) -> bool:
    """Keep the panel's frame label to the year while frames are whole years; False without one."""
    from qgis.PyQt.QtWidgets import QLabel

    label = panel.findChild(QLabel, FRAME_LABEL)
    if label is None:
        return False

    def relabel(*_) -> None:
        from qgis.PyQt import sip

        if sip.isdeleted(label) or sip.isdeleted(controller):
            return
        if controller.navigationMode() == QgsTemporalNavigationObject.Animated:
            frame = controller.dateTimeRangeForFrameNumber(controller.currentFrameNumber())
            label.setText(year_label_text(label.text(), frame))

    def relabel_later(*_) -> None:  # after the panel's own handlers of the same change
        from qgis.PyQt.QtCore import QTimer

        QTimer.singleShot(0, relabel)

    if not label.property(RELABELLED):
        controller.updateTemporalRange.connect(relabel)
        # What else makes the panel rewrite its label; not every QGIS has every signal
        # (3.22's navigationModeChanged cannot be connected from Python).
        for name in (
            "temporalExtentsChanged",
            "temporalFrameDurationChanged",
            "navigationModeChanged",
            "updateTemporalRange",
        ):
            try:
                getattr(controller, name).connect(relabel_later)
            except (AttributeError, TypeError):
                continue
        label.setProperty(RELABELLED, True)
    relabel()
    return True


def open_temporal_controller(iface) -> None:
    """Show the desktop's Temporal Controller panel, its dates and frame label as years (no-op
    without a QGIS main window)."""
    from qgis.PyQt.QtWidgets import QDateTimeEdit, QDockWidget

    window = iface.mainWindow() if hasattr(iface, "mainWindow") else None
    if window is None:
        return
    for dock in window.findChildren(QDockWidget):
        if dock.metaObject().className() == PANEL_CLASS:
            dock.show()
            dock.raise_()
            for edit in dock.findChildren(QDateTimeEdit):
                edit.setDisplayFormat("yyyy")
            show_year_in_frame_label(dock, iface.mapCanvas().temporalController())


def show_year_on_map(project: QgsProject, iface) -> bool:
    """The frame's year at the top of the map (QGIS's Title Label decoration), unless the project
    has a title label of its own; True when the year label is on."""
    label, _ = project.readEntry(TITLE_SCOPE, "/Label", "")
    if label and label != YEAR_TITLE:
        return False
    if label != YEAR_TITLE:
        project.writeEntry(TITLE_SCOPE, "/Label", YEAR_TITLE)
        project.writeEntry(TITLE_SCOPE, "/Enabled", True)
        project.writeEntry(TITLE_SCOPE, "/BackgroundColor", "255,255,255,170")
        _reload_title_decoration(iface)  # once: it redraws the map
    return True


def _reload_title_decoration(iface) -> None:
    """The desktop's decoration reads the project's entries only on project load: ask it now."""
    from qgis.PyQt.QtCore import QMetaObject, QObject

    window = iface.mainWindow() if iface is not None and hasattr(iface, "mainWindow") else None
    if window is None:
        return
    for item in window.findChildren(QObject):
        if item.metaObject().className() == "QgsDecorationTitle":
            QMetaObject.invokeMethod(item, "projectRead")
            iface.mapCanvas().refresh()
