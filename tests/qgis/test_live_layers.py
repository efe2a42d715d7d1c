"""layers/live.py: a run from the toolbar button shows its score layers while it runs.

The run goes as in the desktop: the algorithm in a QgsProcessingAlgRunnerTask on the task
manager's thread, the layers on the main thread. The test holds the run after some tiles (its
feedback waits before the next task starts; one worker thread, so no other tile is written
meanwhile), looks at the layers, then lets the run finish."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from qgis.core import (
    QgsApplication,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
)
from qgis.PyQt.QtWidgets import QApplication

from embedding_change.core.output import OUTPUT_CHUNK
from embedding_change.core.store import open_embedding_store
from embedding_change.layers.live import LiveScoreLayers
from embedding_change.layers.temporal import years_range

from .conftest import ALGORITHM, YEARS_AS_BANDS, band_values, band_years, store_extent
from .test_score_layers import rendered_frame

pytestmark = pytest.mark.qgis
TIMEOUT = 120


class HeldFeedback(QgsProcessingFeedback):
    """Holds the run (before its next task starts) each time the share of tiles written passes
    one of `hold_at` (percent), until `release()`; the engine asks isCanceled before every task
    (and the run's own thread polls it too: every caller waits)."""

    def __init__(self, *hold_at: float):
        super().__init__()
        self.hold_at = list(hold_at)
        self.held = threading.Event()
        self.changed = threading.Condition()

    def isCanceled(self):  # noqa: N802 (QGIS's name)
        deadline = time.monotonic() + TIMEOUT
        with self.changed:
            while self.hold_at and self.progress() >= self.hold_at[0]:
                self.held.set()
                if not self.changed.wait(max(0.0, deadline - time.monotonic())):
                    break
        return super().isCanceled()

    def release(self, for_good=True):
        with self.changed:
            if for_good:
                self.hold_at.clear()
            elif self.hold_at:
                self.hold_at.pop(0)
            self.held.clear()
            self.changed.notify_all()


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        QApplication.processEvents()
        time.sleep(0.01)


@pytest.fixture
def start_run(provider, project, qgis_iface, aef_store, tmp_path):
    """Starts Change scores on the task manager as the desktop's dialog does; returns
    (task, feedback, output). Waits for it at the end, whatever the test did."""
    started = []

    def start(live: bool, hold_at=(40.0,)):
        path, _ = aef_store
        output = tmp_path / "live.zarr"
        parameters = {
            "STORE": str(path),
            "EXTENT": store_extent(open_embedding_store(path).grid.bbox),
            "SCHEDULER": "sync",  # one worker: nothing is written while the run is held
            "LIVE": live,
            "OUTPUT": str(output),
        }
        algorithm = QgsApplication.processingRegistry().createAlgorithmById(ALGORITHM)
        context = QgsProcessingContext()
        context.setProject(QgsProject.instance())
        feedback = HeldFeedback(*hold_at)
        task = QgsProcessingAlgRunnerTask(algorithm, parameters, context, feedback)
        outcome = {}

        def executed(ok, results):  # what the dialog does when its task ends
            from processing.gui.Postprocessing import handleAlgorithmResults

            if ok:
                handleAlgorithmResults(algorithm, context, QgsProcessingFeedback())
            outcome.update(ok=ok, results=results)

        task.executed.connect(executed)
        started.append((task, feedback, context, algorithm, outcome))
        QgsApplication.taskManager().addTask(task)
        return feedback, output, outcome

    yield start
    for _, feedback, *_ in started:
        feedback.release()
    wait_until(lambda: not QgsApplication.taskManager().countActiveTasks(), "the runs to end")
    QApplication.processEvents()


def live_run() -> LiveScoreLayers:
    wait_until(lambda: LiveScoreLayers._running, "the run's live layers")
    return LiveScoreLayers._running[-1]


def score_layers(project):
    return [
        layer
        for layer in project.mapLayers().values()
        if layer.customProperty("embedding_change/band")
        and not layer.customProperty("embedding_change/summary")
    ]


def years_of(layer) -> dict[int, int]:
    """Band number -> year of a loaded score layer, either layout."""
    if YEARS_AS_BANDS:
        return band_years(layer)
    return {1: int(layer.customProperty("embedding_change/year"))}


def painted_at_half_size(layers, year) -> np.ndarray:
    """Where the map paints the layers for the year, drawn at half resolution as a zoomed-out
    canvas reads them (GDAL's block cache is in that path), one value per 2 x 2 store pixels."""
    from qgis.core import QgsMapRendererSequentialJob, QgsMapSettings
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor, QImage

    first = layers[0]
    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(first.crs())
    settings.setExtent(first.extent())
    settings.setOutputSize(QSize(first.width() // 2, first.height() // 2))
    settings.setBackgroundColor(QColor(0, 0, 0, 0))
    settings.setIsTemporal(True)
    settings.setTemporalRange(years_range(year, year))
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage().convertToFormat(QImage.Format_RGBA8888)
    rows = np.frombuffer(bytes(image.constBits().asarray(image.sizeInBytes())), np.uint8)
    rows = rows.reshape(image.height(), image.bytesPerLine())[:, : image.width() * 4]
    return rows.reshape(image.height(), image.width(), 4)[..., 3] > 0


def reads(layer) -> str:
    """Where a layer reads: its source, and the sources of its VRT (a year stack)."""
    source = layer.source()
    return source + (Path(source).read_text() if source.endswith(".vrt") else "")


def tile_mask(tiles, shape) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for y0, x0, h, w in tiles:
        mask[y0 : y0 + h, x0 : x0 + w] = True
    return mask


def test_layers_appear_mid_run_with_the_written_tiles_only_and_read_the_output_after(
    start_run, project
):
    feedback, output, outcome = start_run(live=True, hold_at=(20.0, 60.0))
    wait_until(feedback.held.is_set, "the run to be held")
    live = live_run()
    wait_until(lambda: live.pairs and live.repaints, "the layers and a repaint")
    # The map reads what was there at the first repaint; more tiles come, the map shows them.
    loo = [lyr for lyr, s in live.pairs if s.band.startswith("loo")]
    year = next(iter(years_of(loo[0]).values()))
    early = painted_at_half_size(loo, year)
    early_tiles, repaints = list(live.tiles), live.repaints
    feedback.release(for_good=False)
    wait_until(lambda: len(live.tiles) > len(early_tiles), "more tiles")
    wait_until(feedback.held.is_set, "the run to be held again")
    wait_until(lambda: live.repaints > repaints, "another repaint")

    # Mid-run: the layers are there, reading the hidden partial folder; the output is not.
    assert not output.exists()
    layers = score_layers(project)
    assert layers and {layer.id() for layer in layers} == {lyr.id() for lyr, _ in live.pairs}
    assert all(".live.zarr.partial-" in reads(layer) for layer in layers)
    tiles = list(live.tiles)
    assert 0 < len(tiles) < 9  # a 600 x 560 window: 3 x 3 tiles
    # The centre first: the tile holding the window's centre is the first one written.
    assert tiles[0][:2] == (OUTPUT_CHUNK, OUTPUT_CHUNK)
    shape = (layers[0].height(), layers[0].width())
    written = tile_mask(tiles, shape)
    snapshot = {
        (layer.id(), number): band_values(layer, number)
        for layer in layers
        for number in years_of(layer)
    }
    for values in snapshot.values():
        assert not np.isfinite(values[~written]).any()  # nothing where no tile was written
    # What the map paints: the loo_medoid z-score of the year drawn, inside the tiles only,
    # and every tile written since the first picture too (no block GDAL kept from before).
    painted = rendered_frame(loo, years_range(year, year))[..., 3] > 0
    assert painted.any() and not painted[~written].any()
    early_tiles_half = tile_mask(early_tiles, shape)[::2, ::2][: early.shape[0], : early.shape[1]]
    assert early.any() and not early[~early_tiles_half].any()
    later = painted_at_half_size(loo, year)
    for y0, x0, h, w in tiles[len(early_tiles) :]:
        assert later[y0 // 2 : (y0 + h) // 2, x0 // 2 : (x0 + w) // 2].any(), (y0, x0)

    feedback.release()
    wait_until(lambda: "ok" in outcome and not LiveScoreLayers._running, "the run to end")
    assert outcome["ok"]

    # After: the same layers, now reading the finished output, every tile filled in.
    assert output.exists()
    assert not list(output.parent.glob(".live.zarr.partial-*"))
    assert {layer.id() for layer in score_layers(project)} == set(snapshot_ids(snapshot))
    with xr.open_zarr(output, consolidated=None) as ds:
        scores = ds["scores"].values
        years = [int(t) for t in ds["time"].values]
        bands = [str(b) for b in ds["band"].values]
    for layer in score_layers(project):
        assert layer.isValid() and str(output) in reads(layer)
        assert ".partial-" not in reads(layer)
        assert layer.customProperty("embedding_change/store") == str(output)
        assert layer.renderer().type() == "singlebandpseudocolor"
        assert layer.temporalProperties().isActive()
        b = bands.index(layer.customProperty("embedding_change/band"))
        for number, year in years_of(layer).items():
            final = scores[years.index(year), b]
            np.testing.assert_array_equal(band_values(layer, number), final)
            # the mid-run values were the final ones, where they were shown
            np.testing.assert_array_equal(snapshot[(layer.id(), number)][written], final[written])
    (run_group,) = project.layerTreeRoot().findGroups()
    assert run_group.name() == "live.zarr"
    assert run_group.customProperty("embedding_change/store") == str(output)
    assert project.mapLayersByName("Year of largest change")


def snapshot_ids(snapshot) -> set[str]:
    return {layer_id for layer_id, _ in snapshot}


def test_a_cancelled_run_takes_its_live_layers_away(start_run, project):
    feedback, output, outcome = start_run(live=True)
    wait_until(feedback.held.is_set, "the run to be held")
    live = live_run()
    wait_until(lambda: live.pairs, "the layers")
    feedback.cancel()
    feedback.release()
    wait_until(lambda: "ok" in outcome and not LiveScoreLayers._running, "the run to end")
    assert not outcome["ok"]
    assert not score_layers(project)
    assert not project.layerTreeRoot().findGroups()
    assert not output.exists()


def test_without_live_nothing_loads_before_the_run_ends(start_run, project):
    feedback, output, outcome = start_run(live=False)
    wait_until(feedback.held.is_set, "the run to be held")
    for _ in range(50):
        QApplication.processEvents()
        time.sleep(0.01)
    assert not project.mapLayers()
    assert not LiveScoreLayers._running
    feedback.release()
    wait_until(lambda: "ok" in outcome, "the run to end")
    assert outcome["ok"] and output.exists()
    layers = score_layers(project)  # loaded by Processing at the end, from the output
    assert layers and all(str(output) in layer.source() for layer in layers)


def test_the_toolbar_buttons_dialog_leaves_the_map_usable_and_asks_for_live_layers(
    provider, qgis_iface, monkeypatch
):
    from qgis.gui import QgsBrowserGuiModel
    from qgis.PyQt import sip

    from embedding_change.provider.plugin import EmbeddingChangePlugin

    browser = QgsBrowserGuiModel()  # the stand-in window has none; the dialog needs one
    monkeypatch.setattr(qgis_iface, "browserModel", lambda: browser, raising=False)
    plugin = EmbeddingChangePlugin(qgis_iface)  # its dialog, with the provider registered
    try:
        dialog = plugin.open_dialog()
        assert dialog.isVisible() and not dialog.isModal()
        assert QApplication.activeModalWidget() is None  # the map stays usable
        values = dialog.mainWidget().createProcessingParameters()
        assert values["LIVE"] is True and values["LOAD"] is True
        assert plugin.dialogs == [dialog]
    finally:
        plugin.unload()
    assert sip.isdeleted(dialog) or not dialog.isVisible()
