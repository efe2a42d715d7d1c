"""The plugin: registers the Processing provider, adds "Change scores for this view" and the
map tool "Explain change at a pixel".

The button and menu entry open the algorithm's dialog with the canvas extent filled in, not
modal, so the map stays usable: the dialog runs the algorithm as a background task and the
score layers appear and fill in while it runs (layers/live.py). When the engine's Python
packages are missing, a message-bar notice offers to install them (also in the menu, "Install
dependencies…").
Unloading removes all of it.
"""

from qgis.core import QgsApplication
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from ..gui.change_map_tool import ChangeExplainer
from ..gui.dependency_notice import INSTALL_TEXT, DependencyNotice
from ..resources import ICON
from .dependency_check import load_dependencies
from .provider import EmbeddingChangeProvider

ALGORITHM_ID = "embeddingchange:changescores"
MENU = "&Embedding change"
ACTION_TEXT = "Change scores for this view"
LOAD_ALGORITHM_ID = "embeddingchange:loadscores"
LOAD_TEXT = "Load change scores…"


class EmbeddingChangePlugin:
    """What QGIS loads through `classFactory`."""

    def __init__(self, iface, dependencies=None):
        self.iface = iface
        self.dependencies = dependencies  # classFactory's check, so start-up checks once
        self.provider = None
        self.action = None
        self.install_action = None
        self.load_action = None
        self.toolbar = None
        self.notice = None
        self.explainer = None
        self.dialogs = []  # the open Change scores dialogs (not modal: kept alive here)

    def initProcessing(self):
        """Called by QGIS and qgis_process: makes the algorithms available (no GUI needed)."""
        if self.provider is None:
            self.provider = EmbeddingChangeProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):
        self.initProcessing()
        self.action = QAction(QIcon(str(ICON)), ACTION_TEXT, self.iface.mainWindow())
        self.action.setObjectName("embeddingChangeScoresForView")
        self.action.setToolTip("Change scores for this view: score the years of the area on screen")
        self.action.triggered.connect(self.open_dialog)
        self.toolbar = self.iface.addToolBar("Embedding change")
        self.toolbar.setObjectName("EmbeddingChangeToolbar")
        self.toolbar.addAction(self.action)
        self.iface.addPluginToMenu(MENU, self.action)
        self.explainer = ChangeExplainer(self.iface)
        self.toolbar.addAction(self.explainer.action)
        self.iface.addPluginToMenu(MENU, self.explainer.action)

        self.notice = DependencyNotice(self.iface)
        self.install_action = QAction(INSTALL_TEXT, self.iface.mainWindow())
        self.install_action.setObjectName("embeddingChangeInstallDependencies")
        self.install_action.triggered.connect(self.notice.install)
        self.iface.addPluginToMenu(MENU, self.install_action)
        self.load_action = QAction(LOAD_TEXT, self.iface.mainWindow())
        self.load_action.setObjectName("embeddingChangeLoadScores")
        self.load_action.triggered.connect(self.open_load_dialog)
        self.iface.addPluginToMenu(MENU, self.load_action)
        self.notice.show(self.dependencies or load_dependencies())

    def unload(self):
        from qgis.PyQt import sip

        for dialog in self.dialogs:
            if not sip.isdeleted(dialog):
                dialog.close()
        self.dialogs = []
        if self.explainer is not None:
            self.iface.removePluginMenu(MENU, self.explainer.action)
            self.explainer.unload()
            self.explainer = None
        for action in (self.action, self.install_action, self.load_action):
            if action is not None:
                self.iface.removePluginMenu(MENU, action)
                action.deleteLater()
        self.action = self.install_action = self.load_action = None
        if self.notice is not None:
            self.notice.clear()
            self.notice = None
        if self.toolbar is not None:
            self.iface.mainWindow().removeToolBar(self.toolbar)
            self.toolbar.deleteLater()
            self.toolbar = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    def dialog_parameters(self):
        """The dialog's starting values: the last run's choices, the canvas extent in its CRS."""
        from ..algorithms.change_scores import remembered_parameters

        canvas = self.iface.mapCanvas()
        extent = canvas.extent()
        crs = canvas.mapSettings().destinationCrs()
        return {
            **remembered_parameters(),
            "LIVE": True,  # the layers appear and fill in while the run goes on
            "EXTENT": (
                f"{extent.xMinimum()!r},{extent.xMaximum()!r},"
                f"{extent.yMinimum()!r},{extent.yMaximum()!r} [{crs.authid()}]"
            ),
        }

    def open_dialog(self):
        """The Change scores dialog, not modal: the analyst pans and plays the years while the
        run fills the map (processing.execAlgorithmDialog would block the window)."""
        import processing
        from qgis.PyQt import sip

        self.dialogs = [d for d in self.dialogs if not sip.isdeleted(d) and d.isVisible()]
        dialog = processing.createAlgorithmDialog(ALGORITHM_ID, self.dialog_parameters())
        if dialog is None:
            return None
        canvas = self.iface.mapCanvas()
        tool = canvas.mapTool()

        def restore_map_tool():  # as execAlgorithmDialog does after its dialog
            if not sip.isdeleted(canvas) and canvas.mapTool() is not tool and tool is not None:
                canvas.setMapTool(tool)

        dialog.rejected.connect(restore_map_tool)  # closed (its `finished` is not QDialog's)
        dialog.setModal(False)
        dialog.show()
        self.dialogs.append(dialog)
        return dialog

    def open_load_dialog(self):
        import processing

        processing.execAlgorithmDialog(LOAD_ALGORITHM_ID, {})
