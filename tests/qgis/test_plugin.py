"""provider/: the plugin loads, offers "Change scores for this view", and unloads cleanly."""

import configparser
from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsCoordinateReferenceSystem, QgsProject, QgsRectangle
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QEvent
from qgis.PyQt.QtWidgets import QApplication, QToolBar

import embedding_change
from embedding_change.provider.plugin import ACTION_TEXT, ALGORITHM_ID

pytestmark = pytest.mark.qgis

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def without_provider(qgis_processing):
    """Start as QGIS does, before the plugin registered anything."""
    registry = QgsApplication.processingRegistry()
    if registry.providerById("embeddingchange") is not None:
        registry.removeProvider("embeddingchange")


@pytest.fixture
def plugin(qgis_iface):
    plugin = embedding_change.classFactory(qgis_iface)
    plugin.initGui()
    yield plugin
    plugin.unload()


def test_metadata_has_what_the_plugin_repository_needs():
    metadata = configparser.ConfigParser()
    metadata.read(ROOT / "metadata.txt")
    general = metadata["general"]
    # email, tracker and repository are left out until the project has real ones
    # (tests/test_plugin_zip.py's xfail names them).
    for key in (
        "name", "qgisMinimumVersion", "qgisMaximumVersion", "description", "about", "version",
        "author", "tags", "icon", "license",
    ):  # fmt: skip
        assert general.get(key, "").strip(), key
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["hasProcessingProvider"] == "yes"
    assert (ROOT / general["icon"]).is_file()


def test_plugin_registers_the_provider_and_adds_the_button(plugin, qgis_iface):
    provider = QgsApplication.processingRegistry().providerById("embeddingchange")
    assert provider is not None and provider.name() == "Embedding change"
    assert not provider.icon().isNull()
    assert QgsApplication.processingRegistry().algorithmById(ALGORITHM_ID) is not None
    assert plugin.action.text() == ACTION_TEXT
    assert plugin.action in plugin.toolbar.actions()
    assert plugin.toolbar in qgis_iface.mainWindow().findChildren(QToolBar)


def test_unload_removes_everything_it_added(qgis_iface):
    plugin = embedding_change.classFactory(qgis_iface)
    plugin.initGui()
    action, toolbar = plugin.action, plugin.toolbar

    plugin.unload()
    QApplication.sendPostedEvents(None, QEvent.DeferredDelete)  # run the deleteLater()s

    assert QgsApplication.processingRegistry().providerById("embeddingchange") is None
    assert sip.isdeleted(action) and sip.isdeleted(toolbar)
    assert not [t for t in qgis_iface.mainWindow().findChildren(QToolBar) if not sip.isdeleted(t)
                and t.objectName() == "EmbeddingChangeToolbar"]  # fmt: skip


def test_dialog_opens_with_the_canvas_extent(plugin, qgis_iface, qgis_parent, monkeypatch):
    import processing
    from qgis.gui import QgsBrowserGuiModel

    # pytest-qgis's stand-in for QGIS's window has no browser model; the dialog needs one.
    browser = QgsBrowserGuiModel()
    monkeypatch.setattr(qgis_iface, "browserModel", lambda: browser, raising=False)

    canvas = qgis_iface.mapCanvas()
    qgis_parent.show()
    QApplication.processEvents()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:3857"))
    canvas.setExtent(QgsRectangle(-11720000, 4865000, -11710000, 4872000))
    QApplication.processEvents()
    view = canvas.extent()

    dialog = processing.createAlgorithmDialog(ALGORITHM_ID, plugin.dialog_parameters())
    try:
        values = dialog.mainWidget().createProcessingParameters()
    finally:
        dialog.close()
        qgis_parent.hide()

    algorithm = QgsApplication.processingRegistry().algorithmById(ALGORITHM_ID)
    context = processing.tools.dataobjects.createContext()
    context.setProject(QgsProject.instance())
    extent = algorithm.parameterAsExtent(values, "EXTENT", context)
    crs = algorithm.parameterAsExtentCrs(values, "EXTENT", context)
    assert crs.authid() == "EPSG:3857"
    for got, want in zip(
        (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()),
        (view.xMinimum(), view.yMinimum(), view.xMaximum(), view.yMaximum()),
        strict=True,
    ):
        assert got == pytest.approx(want, abs=1e-6)
