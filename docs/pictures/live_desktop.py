"""Run inside the QGIS desktop: a run from the toolbar button, pictures of the map while its
tiles arrive and after (docs/qgis-live-*.png), then quit. Under Xvfb, with the plugin enabled
and a generated store big enough to take a while (LIVE_DATA/aef.zarr, e.g. 2048 x 2048):

    Xvfb :67 -screen 0 1600x1000x24 -nolisten tcp &
    source scripts/setup.sh; unset QT_QPA_PLATFORM
    LIVE_DATA=/tmp/live DISPLAY=:67 qgis --nologo --noversioncheck \
        --profiles-path PROFILES --code docs/pictures/live_desktop.py

LIVE_STORE takes another store (a URL too: an S3-compatible server's address then comes in
AWS_ENDPOINT_URL, as for the analyst). The log (LIVE_DATA/pictures.log) says when each tile
reached the map and what the map showed.
"""

import os
import time
import traceback
from pathlib import Path

from qgis.core import QgsApplication, QgsCoordinateReferenceSystem, QgsProject, QgsRectangle
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QAction, QApplication, QDockWidget
from qgis.utils import iface, plugins

DOCS = str(Path(__file__).resolve().parents[1]) if "__file__" in globals() else "docs"
DATA = os.environ.get("LIVE_DATA", "/tmp/live")
STORE = os.environ.get("LIVE_STORE", f"{DATA}/aef.zarr")
LOG = Path(f"{DATA}/pictures.log")
STARTED = []


def say(*args):
    with LOG.open("a") as log:
        print(f"{time.monotonic() - (STARTED or [time.monotonic()])[0]:7.2f}s", *args, file=log)


def later(ms, fn):
    def run():
        try:
            fn()
        except Exception:
            say(traceback.format_exc())

    QTimer.singleShot(ms, run)


def setup():
    import json

    from qgis.core import QgsSettings

    from embedding_change.algorithms.change_scores import SETTINGS
    from embedding_change.algorithms.embedding_change_algorithm import STORE_SETTINGS
    from embedding_change.core.store import open_embedding_store

    settings = QgsSettings()
    settings.setValue(f"{STORE_SETTINGS}/STORE", json.dumps(STORE))
    settings.setValue(f"{SETTINGS}/METHODS", json.dumps([0, 1]))
    settings.setValue(f"{SETTINGS}/output_folder", DATA)
    QgsProject.instance().setCrs(QgsCoordinateReferenceSystem("EPSG:4326"))
    iface.mainWindow().resize(1600, 1000)
    layers_panel = iface.mainWindow().findChild(QDockWidget, "Layers")
    if layers_panel is not None:
        iface.mainWindow().resizeDocks([layers_panel], [330], 0x1)  # Qt.Horizontal
    xmin, ymin, xmax, ymax = open_embedding_store(STORE).grid.bbox
    iface.mapCanvas().setExtent(QgsRectangle(xmin, ymin, xmax, ymax))
    later(1500, press_the_button)


def press_the_button():
    dialog = plugins["embedding_change"].open_dialog()  # what the toolbar button does
    say("dialog", type(dialog).__name__, "modal", dialog.isModal())
    dialog.move(1000, 80)
    dialog.resize(580, 700)
    later(1500, lambda: run_dialog(dialog))


def run_dialog(dialog):
    STARTED.append(time.monotonic())
    dialog.runAlgorithm()
    later(100, lambda: watch(dialog))


def live_run():
    from embedding_change.layers.live import LiveScoreLayers

    return LiveScoreLayers._running[-1] if LiveScoreLayers._running else None


def watch(dialog, shots=[0]):  # noqa: B006 (state across calls)
    live = live_run()
    layers = QgsProject.instance().mapLayers()
    if live is not None and live.tiles:
        if live.layers_added_at and not shots[1:]:
            shots.append(1)
            say(
                "first tile on the main thread after",
                f"{live.first_tile_at - STARTED[0]:.2f} s, layers on the map after",
                f"{live.layers_added_at - STARTED[0]:.2f} s",
            )
        say("tiles on the map", len(live.tiles), "layers", len(layers), "repaints", live.repaints)
        if shots[0] == 0 and len(live.tiles) >= 20 and live.repaints:
            shots[0] = 1
            # The analyst pans a little meanwhile: the map answers while the run goes on.
            canvas = iface.mapCanvas()
            extent = canvas.extent()
            extent.scale(1.1)
            canvas.setExtent(extent)
            later(2500, lambda: shot("qgis-live-mid-run.png", live))
    if live is None and shots[0] == 1 and dialog.results():
        say("finished", dialog.results())
        later(3000, lambda: shot("qgis-live-finished.png", None, leave))
        return
    later(250, lambda: watch(dialog))


def shot(name, live, then=None):
    from qgis.PyQt.QtWidgets import QLabel

    iface.mainWindow().grab().save(f"{DOCS}/{name}")
    layer = next(iter(QgsProject.instance().mapLayers().values()), None)
    say(name, "tiles", len(live.tiles) if live else "all", "source", layer and layer.source())
    controller = iface.mapCanvas().temporalController()
    label = iface.mainWindow().findChild(QLabel, "mCurrentRangeLabel")
    say("frames", controller.totalFrameCount(), "label", label and label.text())
    if then:
        later(500, then)


def leave():
    for action in iface.mainWindow().findChildren(QAction):
        if action.objectName() == "mActionTemporalController" and action.isChecked():
            action.trigger()
    for widget in QApplication.topLevelWidgets():
        if type(widget).__name__ == "AlgorithmDialog":
            widget.close()
    QgsProject.instance().clear()
    say("bye")
    QgsApplication.exit(0)


later(8000, setup)
