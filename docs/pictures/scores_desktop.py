"""Run inside the QGIS desktop: a run from the toolbar button, then the README's pictures of
what it loads (docs/qgis-*.png), quit. Under Xvfb, with the plugin enabled and the dialog's
remembered settings pointing at a generated store (SCORES_DATA/aef.zarr):

    Xvfb :66 -screen 0 1600x1000x24 -nolisten tcp &
    source scripts/setup.sh; unset QT_QPA_PLATFORM
    SCORES_DATA=/tmp/shots DISPLAY=:66 qgis --nologo --noversioncheck \
        --profiles-path PROFILES --code docs/pictures/scores_desktop.py
"""

import os
import traceback
from pathlib import Path

from qgis.core import QgsApplication, QgsCoordinateReferenceSystem, QgsProject, QgsRectangle
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QAction, QApplication, QDockWidget, QLabel
from qgis.utils import iface, plugins

DOCS = str(Path(__file__).resolve().parents[1]) if "__file__" in globals() else "docs"
DATA = os.environ.get("SCORES_DATA", "/tmp/shots")
LOG = Path(f"{DATA}/pictures.log")


def say(*args):
    with LOG.open("a") as log:
        print(*args, file=log)


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

    # What an earlier run left: the dialog opened from the button starts from it.
    settings = QgsSettings()
    settings.setValue(f"{STORE_SETTINGS}/STORE", json.dumps(f"{DATA}/aef.zarr"))
    settings.setValue(f"{SETTINGS}/METHODS", json.dumps([0, 1]))
    settings.setValue(f"{SETTINGS}/output_folder", DATA)

    project = QgsProject.instance()
    project.setCrs(QgsCoordinateReferenceSystem("EPSG:4326"))
    iface.mainWindow().resize(1600, 1000)
    xmin, ymin, xmax, ymax = open_embedding_store(f"{DATA}/aef.zarr").grid.bbox
    iface.mapCanvas().setExtent(QgsRectangle(xmin, ymin, xmax, ymax))
    later(1500, press_the_button)


def press_the_button():
    later(3000, shot_dialog)  # the dialog is modal: timers still run inside its event loop
    plugins["embedding_change"].action.trigger()


def shot_dialog():
    dialog = QApplication.activeModalWidget() or next(
        (
            w
            for w in QApplication.topLevelWidgets()
            if w.isVisible() and type(w).__name__ == "AlgorithmDialog"
        ),
        None,
    )
    say("dialog", type(dialog).__name__)
    if dialog is None:
        say([type(w).__name__ for w in QApplication.topLevelWidgets() if w.isVisible()])
        say("bar", [w.text() for w in iface.messageBar().findChildren(QLabel)][:5])
    dialog.resize(900, 880)
    later(1500, lambda: run_dialog(dialog))


def run_dialog(dialog):
    dialog.grab().save(f"{DOCS}/qgis-dialog.png")
    dialog.runAlgorithm()
    later(2000, lambda: wait_for_layers(dialog))


def wait_for_layers(dialog, tries=0):
    if not QgsProject.instance().mapLayers() and tries < 600:
        later(1000, lambda: wait_for_layers(dialog, tries + 1))
        return
    say("layers", len(QgsProject.instance().mapLayers()), "after", tries, "s")
    later(3000, lambda: close_dialog(dialog))


def close_dialog(dialog):
    dialog.close()
    root = QgsProject.instance().layerTreeRoot()
    (run_group,) = root.findGroups()
    run_group.setExpanded(True)
    for group in run_group.findGroups():
        group.setExpanded(group.isVisible())
        for i, node in enumerate(group.findLayers()):
            node.setExpanded(group.isVisible() and i == 0)  # one year's legend: all share it
    layers_panel = iface.mainWindow().findChild(QDockWidget, "Layers")
    if layers_panel is not None:
        iface.mainWindow().resizeDocks([layers_panel], [380], 0x1)  # Qt.Horizontal
    later(4000, shot_first_frame)


def temporal_dock():
    for dock in iface.mainWindow().findChildren(QDockWidget):
        if dock.metaObject().className() == "QgsTemporalControllerDockWidget":
            return dock
    return None


def shot_first_frame():
    dock = temporal_dock()
    say("temporal dock visible", dock is not None and dock.isVisible())
    frame = iface.mapCanvas().temporalRange()
    say("frame", frame.begin().toString(), frame.end().toString())
    iface.mainWindow().grab().save(f"{DOCS}/qgis-scores-first-frame.png")
    later(500, shot_legend)


def shot_legend():
    layers_panel = iface.mainWindow().findChild(QDockWidget, "Layers")
    (layers_panel or iface.layerTreeView()).grab().save(f"{DOCS}/qgis-legend.png")
    root = QgsProject.instance().layerTreeRoot()
    (run_group,) = root.findGroups()
    summary = [g for g in run_group.findGroups() if g.name().startswith("When it changed")]
    if summary:
        summary[0].setItemVisibilityChecked(True)
        summary[0].setExpanded(True)
        for node in summary[0].findLayers():
            node.setItemVisibilityChecked(node.name() == "Year of largest change")
            node.setExpanded(node.name() == "Year of largest change")
        for group in run_group.findGroups():
            if group is not summary[0]:
                group.setExpanded(False)
    later(4000, shot_summary)


def shot_summary():
    iface.mainWindow().grab().save(f"{DOCS}/qgis-summary.png")
    later(500, build_pyramid)


def build_pyramid():
    import processing

    (run_group,) = QgsProject.instance().layerTreeRoot().findGroups()
    store = run_group.customProperty("embedding_change/store")
    pyramid = f"{DATA}/pyramid.zarr"
    processing.runAndLoadResults(
        "embeddingchange:buildmultiscales", {"INPUT": run_group, "OUTPUT": pyramid}
    )
    say("pyramid from", store)
    later(4000, zoom_out)


def zoom_out():
    root = QgsProject.instance().layerTreeRoot()
    for group in root.findGroups():
        is_pyramid = group.customProperty("embedding_change/store", "").endswith("pyramid.zarr")
        group.setItemVisibilityChecked(is_pyramid)
        group.setExpanded(is_pyramid)
        for child in group.findGroups():
            child.setExpanded(False)
    canvas = iface.mapCanvas()
    extent = canvas.extent()
    extent.scale(3.0)
    canvas.setExtent(extent)
    later(5000, shot_pyramid)


def shot_pyramid():
    iface.mainWindow().grab().save(f"{DOCS}/qgis-pyramid-zoomed-out.png")
    say("pyramid picture")
    later(500, leave)


def leave():
    for action in iface.mainWindow().findChildren(QAction):
        if action.objectName() == "mActionTemporalController" and action.isChecked():
            action.trigger()
    QgsProject.instance().clear()
    say("bye")
    QgsApplication.exit(0)


later(8000, setup)
