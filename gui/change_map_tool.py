"""The map tool "Explain change at a pixel": click a change scores layer, its story shows in a dock.

`ChangeExplainer` is everything the plugin adds for it: the action (toolbar and menu), the map
tool, a marker on the clicked pixel and the dock. Closing the dock or unloading the plugin takes
all of it away again.
"""

from __future__ import annotations

from qgis.core import (
    QgsApplication,
    QgsCoordinateTransform,
    QgsProject,
    QgsRasterLayer,
)
from qgis.gui import QgsMapToolEmitPoint, QgsVertexMarker
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import QAction

from .change_profile_dock import TITLE, ChangeProfileDock

STORE_PROPERTY = "embedding_change/store"  # set on every score layer (layers/score_layers.py)


def scores_store_at(canvas, point) -> str:
    """The scores output of the topmost score layer on the map under `point` (canvas CRS)."""
    project = QgsProject.instance()
    candidates = list(canvas.layers()) + list(project.mapLayers().values())
    for layer in candidates:
        if not isinstance(layer, QgsRasterLayer):
            continue
        store = layer.customProperty(STORE_PROPERTY)
        if not store:
            continue
        transform = QgsCoordinateTransform(
            canvas.mapSettings().destinationCrs(), layer.crs(), project
        )
        try:
            inside = layer.extent().contains(transform.transform(point))
        except Exception:  # a point the layer's CRS cannot hold
            continue
        if inside:
            return str(store)
    return ""


class ChangeMapTool(QgsMapToolEmitPoint):
    """Emits (scores store, x, y, canvas CRS as WKT) for each click; marks the clicked point."""

    pixelClicked = pyqtSignal(str, float, float, str)  # noqa: N815 (Qt's signal naming)

    def __init__(self, canvas):
        super().__init__(canvas)
        self.marker = None
        self.setCursor(Qt.CrossCursor)

    def canvasReleaseEvent(self, event):
        point = self.toMapCoordinates(event.pos())
        self.explain_point(point)

    def explain_point(self, point) -> None:
        canvas = self.canvas()
        self.mark(point)
        store = scores_store_at(canvas, point)
        crs = canvas.mapSettings().destinationCrs().toWkt()
        self.pixelClicked.emit(store, point.x(), point.y(), crs)

    def mark(self, point) -> None:
        if self.marker is None:
            self.marker = QgsVertexMarker(self.canvas())
            self.marker.setIconType(QgsVertexMarker.ICON_CROSS)
            self.marker.setColor(QColor(49, 54, 149))
            self.marker.setIconSize(14)
            self.marker.setPenWidth(2)
        self.marker.setCenter(point)

    def clear(self) -> None:
        if self.marker is not None:
            self.canvas().scene().removeItem(self.marker)
            self.marker = None


class ChangeExplainer:
    """The action, tool and dock of "Explain change at a pixel", made when first used."""

    def __init__(self, iface):
        self.iface = iface
        self.action = QAction(
            QgsApplication.getThemeIcon("/mActionIdentify.svg"), TITLE, iface.mainWindow()
        )
        self.action.setObjectName("embeddingChangeExplainPixel")
        self.action.setToolTip(f"{TITLE}: click a change scores pixel to see its years")
        self.action.setCheckable(True)
        self.action.triggered.connect(self.activate)
        self.tool = None
        self.dock = None

    def activate(self, checked: bool = True) -> None:
        canvas = self.iface.mapCanvas()
        if not checked:
            if self.tool is not None and canvas.mapTool() is self.tool:
                canvas.unsetMapTool(self.tool)
            return
        if self.dock is None:
            self.dock = ChangeProfileDock(canvas, self.iface.mainWindow())
            self.dock.closed.connect(self.close)
            self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        self.dock.show()
        if self.tool is None:
            self.tool = ChangeMapTool(canvas)
            self.tool.setAction(self.action)
            self.tool.pixelClicked.connect(self.dock.explain)
        canvas.setMapTool(self.tool)

    def close(self) -> None:
        """The dock was closed: the tool, its marker and the dock's pending read go too."""
        canvas = self.iface.mapCanvas()
        if self.tool is not None:
            if canvas.mapTool() is self.tool:
                canvas.unsetMapTool(self.tool)
            self.tool.clear()
            self.tool.deleteLater()
            self.tool = None
        if self.dock is not None:
            dock, self.dock = self.dock, None
            dock.shutdown()
            self.iface.removeDockWidget(dock)
            dock.deleteLater()
        self.action.setChecked(False)

    def unload(self) -> None:
        self.close()
        self.action.deleteLater()
