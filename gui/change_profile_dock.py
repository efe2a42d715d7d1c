"""The dock of "Explain change at a pixel": a pixel's scores, distances and medoids, as plots.

Reading (the scores, then the pixel's embeddings, possibly from a remote store) and drawing
happen in a QgsTask, so the map never waits. A newer click or a new frame of the temporal
controller supersedes a running request: only the latest one is shown. The plots mark the
controller's current year; a new frame redraws them from the pixel already read.
"""

from __future__ import annotations

import contextlib
import html

from qgis.core import QgsApplication, QgsTask
from qgis.gui import QgsDockWidget
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QPixmap
from qgis.PyQt.QtWidgets import QLabel, QScrollArea, QVBoxLayout, QWidget

TITLE = "Explain change at a pixel"
HINT = "Click a pixel of a change scores layer on the map."


def read_and_draw(task, store, x, y, crs_wkt, year, profile=None):
    """In the task's thread: the pixel's profile (read unless given), its plots as PNG bytes
    and the facts to show above them."""
    from ..algorithms.embedding_change_algorithm import reach_recorded_store
    from ..core.profile import read_pixel_profile
    from ..core.profile_report import figure_bytes, profile_figures, profile_summary

    if profile is None:
        profile = read_pixel_profile(
            store, x, y, point_crs=crs_wkt, credentials=reach_recorded_store
        )
    if task is not None and task.isCanceled():
        return None
    try:
        images = [figure_bytes(f, "png", dpi=80) for f in profile_figures(profile, year)]
    except ImportError:
        images = []  # no matplotlib: the facts alone
    return profile, images, profile_summary(profile), year


class ChangeProfileDock(QgsDockWidget):
    """Shows the story of the last pixel clicked with the map tool."""

    def __init__(self, canvas, parent=None):
        super().__init__(TITLE, parent)
        self.setObjectName("EmbeddingChangeProfileDock")
        self.canvas = canvas
        self.task = None
        self.request = 0  # the latest request's number: older results are dropped
        self.profile = None
        self.clicked = None  # (store, x, y, crs_wkt) of the pixel shown
        self.year_shown = None  # the frame's year marked on the plots

        body = QWidget()
        layout = QVBoxLayout(body)
        self.status = QLabel(HINT)
        self.status.setWordWrap(True)
        self.facts = QLabel()
        self.facts.setWordWrap(True)
        self.facts.setTextFormat(Qt.RichText)
        self.facts.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.plots = [QLabel(), QLabel()]
        for widget in (self.status, self.facts, *self.plots):
            layout.addWidget(widget)
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        self.setWidget(scroll)
        canvas.temporalRangeChanged.connect(self.redraw_for_frame)

    def current_year(self) -> int | None:
        """The temporal controller's year on the map, None when the map is not temporal."""
        if not self.canvas.mapSettings().isTemporal():
            return None
        begin = self.canvas.temporalRange().begin()
        return begin.date().year() if begin.isValid() else None

    def explain(self, store: str, x: float, y: float, crs_wkt: str) -> None:
        """Read and show the pixel under (x, y) (in the CRS crs_wkt) of the scores at `store`."""
        if not store:
            self.show_message("No change scores layer under that point. " + HINT)
            return
        from ..dependencies.check import dependency_report

        report = dependency_report(QgsApplication.qgisSettingsDirPath())
        if not report.ok:
            self.show_message(report.message())
            return
        self.clicked, self.profile = (store, x, y, crs_wkt), None
        self.status.setText(f"Reading the pixel at {x:.6f}, {y:.6f}…")
        self._start(None)

    def redraw_for_frame(self) -> None:
        if self.profile is not None:
            self._start(self.profile)

    def _start(self, profile) -> None:
        self._cancel_task()
        self.request += 1
        request = self.request
        store, x, y, crs_wkt = self.clicked
        self.task = QgsTask.fromFunction(
            f"{TITLE}: reading {x:.5f}, {y:.5f}",
            read_and_draw,
            store,
            x,
            y,
            crs_wkt,
            self.current_year(),
            profile,
            on_finished=lambda exception, result=None: self._finished(request, exception, result),
            flags=QgsTask.CanCancel,
        )
        QgsApplication.taskManager().addTask(self.task)

    def _finished(self, request: int, exception, result) -> None:
        if request != self.request:
            return  # a newer click or frame took over
        self.task = None
        if exception is not None:
            self.show_message(f"Could not explain this pixel: {exception}")
            return
        if result is None:
            return
        self.profile, images, facts, self.year_shown = result
        self.status.setText("")
        rows = "".join(
            f"<tr><td><b>{html.escape(label)}</b></td><td>{html.escape(text)}</td></tr>"
            for label, text in facts
        )
        self.facts.setText(f"<table>{rows}</table>")
        for label, png in zip(self.plots, [*images, None, None], strict=False):
            pixmap = QPixmap()
            if png is not None:
                pixmap.loadFromData(png, "PNG")
            label.setPixmap(pixmap)
            label.setVisible(png is not None)
        if not images:
            self.status.setText("matplotlib is not installed in QGIS's Python: no plots.")

    def show_message(self, text: str) -> None:
        self.status.setText(text)
        self.facts.setText("")
        for label in self.plots:
            label.clear()
            label.setVisible(False)

    def is_busy(self) -> bool:
        return self.task is not None

    def shutdown(self) -> None:
        """Stop listening and cancel the running read (the dock is going away)."""
        with contextlib.suppress(TypeError):
            self.canvas.temporalRangeChanged.disconnect(self.redraw_for_frame)
        self.request += 1
        self._cancel_task()

    def _cancel_task(self) -> None:
        if self.task is not None:
            # RuntimeError: the task manager has already finished and deleted it.
            with contextlib.suppress(RuntimeError):
                self.task.cancel()
            self.task = None
