"""Run inside the QGIS desktop: load investigate_data.py's outputs, explain a pixel, take the
README's pictures (docs/investigate-*.png), quit. Under Xvfb, with the plugin enabled:

    Xvfb :77 -screen 0 1600x1000x24 -nolisten tcp &
    source scripts/setup.sh; unset QT_QPA_PLATFORM
    INVESTIGATE_DATA=/tmp/investigate DISPLAY=:77 qgis --nologo --noversioncheck \
        --profiles-path PROFILES --code docs/pictures/investigate_desktop.py
"""

import json
import os
import traceback
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface, plugins

DOCS = str(Path(__file__).resolve().parents[1]) if "__file__" in globals() else "docs"
DATA = os.environ.get("INVESTIGATE_DATA", "/tmp/investigate")
info = json.loads(Path(f"{DATA}/info.json").read_text())
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
            QgsApplication.exit(1)  # no half-made pictures, and no QGIS left running

    QTimer.singleShot(ms, run)


def setup():
    from embedding_change.algorithms.change_hotspots import HOTSPOT_STYLE, style_hotspot_layer
    from embedding_change.algorithms.embedding_rgb import (
        place_under_everything,
        style_false_colour_layer,
    )
    from embedding_change.layers.score_layers import load_score_layers

    project = QgsProject.instance()
    project.setCrs(QgsCoordinateReferenceSystem("EPSG:4326"))
    for path, year in zip(info["rgb_files"], info["years"], strict=True):
        layer = QgsRasterLayer(path, str(year), "gdal")
        project.addMapLayer(layer, False)
        style_false_colour_layer(layer, year)
        place_under_everything(project, layer, f"{DATA}/false-colour")
    load_score_layers(f"{DATA}/scores.zarr", project, iface)
    hot = QgsVectorLayer(f"{DATA}/hotspots.gpkg|layername=hotspots", "Change hotspots", "ogr")
    project.addMapLayer(hot)
    style_hotspot_layer(hot, HOTSPOT_STYLE)
    root = project.layerTreeRoot()
    scores_group = [g for g in root.findGroups() if g.customProperty("embedding_change/store")][0]
    loo = next(
        g
        for g in scores_group.findGroups()
        if str(g.findLayers()[0].layer().customProperty("embedding_change/band")).startswith(
            "loo_medoid"
        )
    )
    loo.setItemVisibilityChecked(True)
    scores_group.setExpanded(True)
    loo.setExpanded(False)
    for g in scores_group.findGroups():
        if g is not loo:
            g.setExpanded(False)
    xmin, ymin, xmax, ymax = info["bbox"]
    canvas = iface.mapCanvas()
    canvas.setExtent(QgsRectangle(xmin, ymin, xmax, ymax))
    controller = canvas.temporalController()
    controller.setCurrentFrameNumber(info["years"].index(info["event_year"]))
    iface.mainWindow().resize(1600, 1000)
    from qgis.PyQt.QtWidgets import QAction

    for action in iface.mainWindow().findChildren(QAction):
        if action.objectName() == "mActionTemporalController" and not action.isChecked():
            action.trigger()
    show_false_colour(False)
    say("setup done", canvas.temporalRange().begin().toString())
    later(4000, explain)


def show_false_colour(on):
    root = QgsProject.instance().layerTreeRoot()
    for g in root.findGroups():
        if g.customProperty("embedding_change/false_colour"):
            g.setItemVisibilityChecked(on)
        if g.customProperty("embedding_change/store"):
            g.setItemVisibilityChecked(not on)


def explain():
    explainer = plugins["embedding_change"].explainer
    explainer.action.trigger()
    explainer.dock.setMinimumWidth(560)
    explainer.tool.explain_point(QgsPointXY(info["x"], info["y"]))
    later(500, wait_for_dock)


def wait_for_dock(tries=0):
    explainer = plugins["embedding_change"].explainer
    if explainer.dock.profile is None and tries < 120:
        later(500, lambda: wait_for_dock(tries + 1))
        return
    say(
        "profile",
        explainer.dock.profile and (explainer.dock.profile.row, explainer.dock.profile.col),
        explainer.dock.status.text(),
    )
    later(4000, shot_dock)


def shot_dock():
    iface.mainWindow().grab().save(f"{DOCS}/investigate-dock.png")
    say("dock picture")
    x, y, d = info["x"], info["y"], 0.006
    iface.mapCanvas().setExtent(QgsRectangle(x - d, y - 0.75 * d, x + d, y + 0.75 * d))
    later(4000, shot_hotspots)


def shot_hotspots():
    iface.mapCanvas().grab().save(f"{DOCS}/investigate-hotspots.png")
    say("hotspots picture")
    xmin, ymin, xmax, ymax = info["bbox"]
    iface.mapCanvas().setExtent(QgsRectangle(xmin, ymin, xmax, ymax))
    show_false_colour(True)
    later(4000, shot_false_colour)


def shot_false_colour():
    iface.mapCanvas().grab().save(f"{DOCS}/investigate-false-colour.png")
    say("false colour picture")
    later(500, leave)


def leave():
    plugins["embedding_change"].explainer.close()
    QgsProject.instance().clear()
    say("bye")
    QgsApplication.exit(0)


later(8000, setup)
