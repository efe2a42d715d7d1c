"""algorithms/embedding_change_algorithm.py: the store parameters every store-reading algorithm
shares (STORE typed or browsed to, VARIABLE, EXTENT, STORAGE_OPTIONS), declared and remembered
in one place."""

from __future__ import annotations

import pytest
from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFile,
    QgsSettings,
)
from qgis.gui import QgsFileWidget
from qgis.PyQt.QtTest import QTest

from embedding_change.algorithms.embedding_change_algorithm import AEF_STORE, STORE_SETTINGS
from embedding_change.core.run_size import DEFAULT_MAX_PIXELS
from embedding_change.core.store import open_embedding_store

from .conftest import store_extent

pytestmark = pytest.mark.qgis
STORE_READERS = ("embeddingchange:changescores", "embeddingchange:embeddingrgb")


@pytest.fixture
def no_remembered_store():
    QgsSettings().remove(STORE_SETTINGS)
    yield
    QgsSettings().remove(STORE_SETTINGS)


def definitions(algorithm_id):
    algorithm = QgsApplication.processingRegistry().algorithmById(algorithm_id)
    return {p.name(): p for p in algorithm.parameterDefinitions()}


@pytest.mark.parametrize("algorithm_id", STORE_READERS)
def test_store_readers_declare_the_same_store_parameters(provider, algorithm_id):
    parameters = definitions(algorithm_id)

    store = parameters["STORE"]
    assert isinstance(store, QgsProcessingParameterFile)
    assert store.behavior() == QgsProcessingParameterFile.Folder
    assert store.defaultValue() == AEF_STORE
    assert parameters["VARIABLE"].defaultValue() == "embeddings"
    assert parameters["EXTENT"].type() == "extent"
    options = parameters["STORAGE_OPTIONS"]
    assert options.flags() & QgsProcessingParameterDefinition.FlagAdvanced
    assert options.flags() & QgsProcessingParameterDefinition.FlagOptional
    limit = parameters["MAX_PIXELS"]
    assert limit.flags() & QgsProcessingParameterDefinition.FlagAdvanced
    assert limit.defaultValue() == DEFAULT_MAX_PIXELS == 50_000_000
    reference = definitions(STORE_READERS[0])
    for name in ("STORE", "VARIABLE", "EXTENT", "STORAGE_OPTIONS", "MAX_PIXELS"):
        assert parameters[name].toVariantMap() == reference[name].toVariantMap()


@pytest.mark.parametrize(
    "url", ["s3://us-west-2.opendata.source.coop/tge-labs/aef-mosaic/", "https://host/a.zarr"]
)
def test_a_url_is_a_valid_store_value(provider, url):
    store = definitions(STORE_READERS[0])["STORE"]
    assert store.checkValueIsAcceptable(url, QgsProcessingContext())


def test_the_dialog_offers_a_folder_browser_and_keeps_a_typed_url(
    provider, qgis_iface, monkeypatch
):
    import processing
    from qgis.gui import QgsBrowserGuiModel

    # pytest-qgis's stand-in for QGIS's window has no browser model; the dialog needs one.
    browser_model = QgsBrowserGuiModel()
    monkeypatch.setattr(qgis_iface, "browserModel", lambda: browser_model, raising=False)
    extent = "-105.3,-105.2,40.0,40.1 [EPSG:4326]"
    dialog = processing.createAlgorithmDialog(STORE_READERS[0], {"EXTENT": extent})
    try:
        wrapper = dialog.mainWidget().wrappers["STORE"]
        browser = wrapper.wrappedWidget()
        if not isinstance(browser, QgsFileWidget):
            browser = browser.findChild(QgsFileWidget)
        assert browser.storageMode() == QgsFileWidget.GetDirectory
        assert wrapper.parameterValue() == AEF_STORE

        browser.lineEdit().clear()
        QTest.keyClicks(browser.lineEdit(), "s3://bucket/aef.zarr")

        assert wrapper.parameterValue() == "s3://bucket/aef.zarr"
        chosen = dialog.mainWidget().createProcessingParameters()
        assert chosen["STORE"] == "s3://bucket/aef.zarr"
    finally:
        dialog.close()
        dialog.deleteLater()


def test_the_toolbar_dialog_starts_from_the_store_of_the_last_false_colour_run(
    provider, aef_store, tmp_path, no_remembered_store
):
    import processing

    from embedding_change.algorithms.change_scores import remembered_parameters

    path, _ = aef_store
    processing.run(
        "embeddingchange:embeddingrgb",
        {
            "STORE": str(path),
            "VARIABLE": "embeddings",
            "EXTENT": store_extent(open_embedding_store(path).grid.bbox, (0.0, 0.3, 0.7, 1.0)),
            "YEARS": "2019-2020",
            "OUTPUT": str(tmp_path / "rgb"),
        },
        feedback=QgsProcessingFeedback(),
    )

    remembered = remembered_parameters()
    assert remembered["STORE"] == str(path)
    assert remembered["VARIABLE"] == "embeddings"


@pytest.mark.parametrize("algorithm_id", STORE_READERS)
def test_an_extent_over_max_pixels_stops_with_its_size_and_the_ways_on(
    provider, algorithm_id, aef_store, tmp_path
):
    import processing

    path, _ = aef_store
    parameters = {
        "STORE": str(path),
        "EXTENT": store_extent(open_embedding_store(path).grid.bbox),
        "MAX_PIXELS": 100_000,
        "OUTPUT": str(tmp_path / "out"),
    }
    with pytest.raises(QgsProcessingException) as raised:
        processing.run(algorithm_id, parameters, feedback=QgsProcessingFeedback())

    message = str(raised.value)
    assert "560 x 600 = 0.3 Mpx" in message and "the limit is 0.1 Mpx" in message
    assert "zoom in" in message and "MAX_PIXELS" in message
    assert not (tmp_path / "out").exists()

    feedback = QgsProcessingFeedback()
    processing.run(algorithm_id, {**parameters, "MAX_PIXELS": 0}, feedback=feedback)  # no limit
    assert "Estimate: 560 x 600 = 0.3 Mpx over 9 years and 64 bands" in feedback.textLog()
