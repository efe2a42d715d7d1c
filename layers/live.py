"""Score layers that appear with a run's first tiles and fill in as its tiles land.

For a run started from the desktop's toolbar button (Change scores' LIVE parameter), while
processAlgorithm runs on a task's thread. The engine writes into a hidden partial folder
(`.<name>.partial-<id>`) and renames it when every tile is written (core/output.py), so an
output that exists is complete for every other reader. The live layers read that partial folder
(missing chunks read as no data, i.e. transparent) and are re-pointed at the final output with
`setDataSource` when the run ends: style, time and place in the tree stay. Writing in place with
a completion marker instead would show every other reader (scripts, Load change scores, a
second QGIS) an output that looks finished while it is not.

The engine reports each tile from a worker thread (`on_tile`); a Qt signal carries it to the
main thread, where the layers are made on the first tile and repainted at most every
REPAINT_MS milliseconds. A failed or cancelled run takes its layers away.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from pathlib import Path

from qgis.core import QgsApplication, QgsDataProvider, QgsProject
from qgis.PyQt.QtCore import QObject, Qt, QThread, QTimer, pyqtSignal, pyqtSlot

from .score_slice import PROPERTY
from .temporal import PER_BAND_TEMPORAL

REPAINT_MS = 700  # at most one repaint of the layers per this many milliseconds


def can_show_live(context) -> bool:
    """Only in the desktop, for a run on a task's thread (the main thread must be free to draw)
    into the desktop's project."""
    from qgis.utils import iface

    app = QgsApplication.instance()
    return (
        iface is not None
        and context.project() is QgsProject.instance()
        and app is not None
        and QThread.currentThread() is not app.thread()
    )


@contextlib.contextmanager
def quiet_gdal():
    """GDAL's warnings off: a closed partial source's .aux.xml has nowhere to go."""
    from osgeo import gdal

    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        yield
    finally:
        gdal.PopErrorHandler()


class LiveScoreLayers(QObject):
    """The live layers of one run; made on the run's thread, living on the main thread."""

    tile_written = pyqtSignal(str, int, int, int, int)
    run_finished = pyqtSignal(str)
    run_failed = pyqtSignal()

    # sip keeps no Python reference for queued slots: runs live here until their end.
    _running: list[LiveScoreLayers] = []

    def __init__(self, final: str, run_name: str | None = None):
        super().__init__()
        self.final = str(Path(final).absolute())
        self.run_name = run_name or Path(final).name
        self.partial: str | None = None
        self.pairs = []  # (layer, ScoreSlice) on the map
        self.tiles: list[tuple[int, int, int, int]] = []  # (y0, x0, height, width) shown
        self.repaints = 0
        self.first_tile_at = self.layers_added_at = 0.0  # time.monotonic() of each, once
        self.finished = False
        self.given_up = False  # showing it live failed: the layers load at the end
        self.vrt_folder = None  # the year stacks' VRTs while the run writes (QGIS >= 3.38)
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(REPAINT_MS)
        self.timer.timeout.connect(self._repaint)
        self.moveToThread(QgsApplication.instance().thread())
        self.tile_written.connect(self._show_tile, Qt.QueuedConnection)
        self.run_finished.connect(self._finish, Qt.QueuedConnection)
        self.run_failed.connect(self._remove, Qt.QueuedConnection)
        LiveScoreLayers._running.append(self)

    # Called on the run's threads.
    def on_tile(self, url: str, y0: int, x0: int, height: int, width: int) -> None:
        """The engine's on_tile: hands the tile to the main thread."""
        self.tile_written.emit(url, y0, x0, height, width)

    def finish(self) -> None:
        """The run renamed its output into place: re-point the layers (on the main thread)."""
        self.run_finished.emit(self.final)

    def discard(self) -> None:
        """The run failed or was cancelled: its partial folder is gone, and so go the layers."""
        self.run_failed.emit()

    # On the main thread.
    @pyqtSlot(str, int, int, int, int)
    def _show_tile(self, url: str, y0: int, x0: int, height: int, width: int) -> None:
        if self.finished or self.given_up:
            return
        self.tiles.append((y0, x0, height, width))
        self.first_tile_at = self.first_tile_at or time.monotonic()
        if not self.pairs:
            if not Path(url).exists():  # renamed already: the finish makes the layers
                return
            self.partial = url
            try:  # the first frame: the year with the most change in this (central) tile
                self._add_layers(url, (slice(y0, y0 + height), slice(x0, x0 + width)))
            except Exception as exc:  # noqa: BLE001 (the run goes on; the layers load at its end)
                self._give_up(exc)
                return
        if not self.timer.isActive():
            self.timer.start()

    def _add_layers(self, store: str, focus_window=None) -> None:
        from qgis.utils import iface

        from .layer_tree import place_in_layer_tree
        from .score_layers import read_score_labels, score_layer_pairs, style_score_layer
        from .temporal import animate_years

        project = QgsProject.instance()
        years, bands = read_score_labels(store, consolidated=None if store == self.final else False)
        if PER_BAND_TEMPORAL and store != self.final:
            self.vrt_folder = Path(tempfile.mkdtemp(prefix="embedding-change-live-"))
        self.pairs = score_layer_pairs(
            store,
            years,
            bands,
            run_name=self.run_name,
            vrt_folder=self.vrt_folder,
            focus_window=focus_window,
        )
        for layer, score in self.pairs:
            layer.setCustomProperty(f"{PROPERTY}/live", store != self.final)
            # Styled and timed before it joins the project: the desktop's Temporal Controller
            # would otherwise reset its extent when the layer's source changes at the finish.
            style_score_layer(layer, score)
            project.addMapLayer(layer, False)
            place_in_layer_tree(project, layer, score)
        if self.pairs:  # once for all: each call moves the controller and redraws the map
            first = self.pairs[0][1]
            animate_years(project, first.years, iface, first.focus_year)
        self.layers_added_at = time.monotonic()

    def _give_up(self, exc: Exception) -> None:
        """Showing the run live failed: no live layers; they load when it ends."""
        from qgis.core import Qgis, QgsMessageLog

        QgsMessageLog.logMessage(
            f"Showing the scores while they are computed stopped: {exc}",
            "Embedding change",
            Qgis.Warning,
        )
        self._remove_layers()
        self.partial = None
        self.given_up = True

    def _keep_loaded(self) -> None:
        """Forget the layers the analyst removed meanwhile (or a closed project took)."""
        from qgis.PyQt import sip

        project = QgsProject.instance()
        self.pairs = [
            (layer, score)
            for layer, score in self.pairs
            if not sip.isdeleted(layer) and project.mapLayer(layer.id()) is layer
        ]

    @pyqtSlot()
    def _repaint(self) -> None:
        if self.finished or not self.partial or not Path(self.partial).exists():
            return
        self._keep_loaded()
        self.repaints += 1
        for layer, _ in self.pairs:
            # GDAL keeps the blocks it read (missing chunks as no data) until its dataset is
            # opened again: the map would keep the first tiles only.
            layer.dataProvider().reloadData()
            layer.triggerRepaint()

    @pyqtSlot(str)
    def _finish(self, final: str) -> None:
        from .score_layers import summary_pairs
        from .summary import place_summary_layer

        self.finished = True
        self.timer.stop()
        project = QgsProject.instance()
        had_layers = bool(self.pairs)
        self._keep_loaded()
        if self.pairs:
            self._repoint(final)
        elif not had_layers:  # no tile reached the main thread in time, or showing them failed
            self._add_layers(final)
        else:  # the analyst removed them all: nothing to re-point
            self._forget()
            return
        for layer, score in summary_pairs(self.pairs):
            project.addMapLayer(layer, False)
            place_summary_layer(project, layer, score)
        self._forget()

    def _repoint(self, final: str) -> None:
        """The layers (and the run's group) read the finished output from now on."""
        import dataclasses

        from .layer_tree import run_group_of
        from .sources import score_layer_uri, write_year_stack
        from .styles import score_high, set_score_renderer

        project = QgsProject.instance()
        group = run_group_of(project.layerTreeRoot(), self.pairs[0][1])
        group.setCustomProperty(f"{PROPERTY}/store", final)
        repointed = []
        for layer, score in self.pairs:
            score = dataclasses.replace(score, store=final)
            b = score.band_index
            if score.year is None:  # a year stack: its VRT, now over the final slices
                uris = [score_layer_uri(final, t, b) for t in range(len(score.years))]
                source = write_year_stack(final, score.band, score.years, uris)
            else:
                source = score_layer_uri(final, score.years.index(score.year), b)
            with quiet_gdal():  # closing the partial source: GDAL cannot save its .aux.xml there
                layer.setDataSource(source, layer.name(), "gdal", QgsDataProvider.ProviderOptions())
            layer.setCustomProperty(f"{PROPERTY}/store", final)
            layer.setCustomProperty(f"{PROPERTY}/live", False)
            repointed.append((layer, score))
        # Plain distances are scaled by their 99th percentile: now over every tile.
        for band in {score.band for _, score in repointed if "zscore" not in score.band}:
            layers = [layer for layer, score in repointed if score.band == band]
            high = score_high(band, layers)
            for i, (layer, score) in enumerate(repointed):
                if score.band == band and high != score.high:
                    repointed[i] = (layer, dataclasses.replace(score, high=high))
                    set_score_renderer(layer, repointed[i][1])
        self.pairs = repointed
        for layer, _ in self.pairs:
            layer.triggerRepaint()

    @pyqtSlot()
    def _remove(self) -> None:
        self.finished = True
        self.timer.stop()
        self._remove_layers()
        self._forget()

    def _remove_layers(self) -> None:
        project = QgsProject.instance()
        self._keep_loaded()
        if self.pairs:
            from .layer_tree import run_group_of

            group = run_group_of(project.layerTreeRoot(), self.pairs[0][1])
            with quiet_gdal():
                project.removeMapLayers([layer.id() for layer, _ in self.pairs])
            if not group.findLayers():
                group.parent().removeChildNode(group)
        self.pairs = []

    def _forget(self) -> None:
        if self.vrt_folder is not None:
            shutil.rmtree(self.vrt_folder, ignore_errors=True)
            self.vrt_folder = None
        if self in LiveScoreLayers._running:
            LiveScoreLayers._running.remove(self)
