"""algorithms/score_layers.py: score layers read the store, sit in groups, move by year."""

from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import (
    QgsApplication,
    QgsLayerTree,
    QgsLayerTreeGroup,
    QgsLayerTreeRegistryBridge,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsRasterLayer,
    QgsUnitTypes,
)

from embedding_change.algorithms import layer_sources, score_layers

from .conftest import ALGORITHM, ZSCORE_BANDS, placed_slice, write_scores_store

pytestmark = pytest.mark.qgis


def layer_values(layer: QgsRasterLayer) -> np.ndarray:
    """The layer's band 1 over its whole extent, no data as NaN."""
    provider = layer.dataProvider()
    block = provider.block(1, layer.extent(), layer.width(), layer.height())
    values = np.frombuffer(bytes(block.data()), dtype=np.float32)
    return values.reshape(layer.height(), layer.width()).copy()


def rendered_rgba(layer: QgsRasterLayer) -> np.ndarray:
    """What the layer's renderer paints, pixel for pixel: (rows, cols, [r, g, b, a])."""
    block = layer.renderer().block(1, layer.extent(), layer.width(), layer.height())
    argb = np.frombuffer(bytes(block.data()), dtype=np.uint32).reshape(
        layer.height(), layer.width()
    )
    # Premultiplied ARGB32: alpha is exact, colours are scaled by it.
    return np.stack([(argb >> s) & 0xFF for s in (16, 8, 0, 24)], axis=-1)


def find_layer(layers, method: str, year: int) -> QgsRasterLayer:
    (layer,) = (
        layer
        for layer in layers
        if layer.name() == str(year)
        and layer.customProperty("embedding_change/band").startswith(method)
    )
    return layer


def score_groups(project) -> list[QgsLayerTreeGroup]:
    (run_group,) = project.layerTreeRoot().findGroups()
    return run_group.findGroups()


def test_each_layer_reads_its_year_and_band_slice_with_the_store_georeferencing(
    project, scores_store
):
    layers = score_layers.load_score_layers(scores_store.path, project)

    assert len(layers) == len(scores_store.years) * len(scores_store.bands)
    for layer in layers:
        t, b = placed_slice(layer, scores_store)
        np.testing.assert_array_equal(layer_values(layer), scores_store.scores[t, b])


def test_a_group_per_score_holds_one_layer_per_year_in_year_order(project, scores_store):
    score_layers.load_score_layers(scores_store.path, project)

    (run_group,) = project.layerTreeRoot().findGroups()
    assert run_group.name() == "scores.zarr"
    groups = score_groups(project)
    assert [g.name() for g in groups] == scores_store.bands
    for b, group in enumerate(groups):
        nodes = group.findLayers()
        assert [n.name() for n in nodes] == [str(y) for y in scores_store.years]
        assert [n.layer().source() for n in nodes] == [
            layer_sources.score_layer_uri(scores_store.path, t, b)
            for t in range(len(scores_store.years))
        ]


def test_each_frame_of_the_temporal_controller_shows_one_year_per_score(
    project, scores_store, qgis_iface, temporal_navigation
):
    score_layers.load_score_layers(scores_store.path, project, qgis_iface)

    assert temporal_navigation.totalFrameCount() == len(scores_store.years)
    assert temporal_navigation.navigationMode() == temporal_navigation.Animated
    duration = temporal_navigation.frameDuration()
    assert (duration.originalDuration(), duration.originalUnit()) == (
        1,
        QgsUnitTypes.TemporalYears,
    )
    for frame, year in enumerate(scores_store.years):
        frame_range = temporal_navigation.dateTimeRangeForFrameNumber(frame)
        for group in score_groups(project):
            shown = [
                node.name()
                for node in group.findLayers()
                if node.layer().temporalProperties().isVisibleInTemporalRange(frame_range)
            ]
            assert shown == [str(year)]
    settings = project.timeSettings()
    assert settings.temporalRange() == score_layers.years_range(2017, 2025)
    assert (settings.timeStep(), settings.timeStepUnit()) == (1, QgsUnitTypes.TemporalYears)


def test_layer_years_are_fixed_calendar_years(project, scores_store):
    layers = score_layers.load_score_layers(scores_store.path, project)

    for layer in layers:
        year = int(layer.name())
        temporal = layer.temporalProperties()
        assert temporal.isActive()
        assert temporal.mode() == temporal.ModeFixedTemporalRange
        fixed = temporal.fixedTemporalRange()
        assert (fixed.begin().date().year(), fixed.begin().date().dayOfYear()) == (year, 1)
        assert (fixed.end().date().year(), fixed.end().date().dayOfYear()) == (year + 1, 1)


def test_high_zscores_are_painted_opaque_red_and_ordinary_ones_transparent(project, scores_store):
    layers = score_layers.load_score_layers(scores_store.path, project)
    event = find_layer(layers, "loo_medoid", 2020)

    assert event.renderer().type() == "singlebandpseudocolor"
    rgba = rendered_rgba(event)
    assert (rgba[10:20, 5:15] == [189, 0, 38, 255]).all()  # z = 9: dark red, opaque
    values = scores_store.scores[3, 1]
    ordinary = np.ones(values.shape, bool)
    ordinary[10:20, 5:15] = False
    assert (rgba[ordinary][:, 3] == 0).all()

    ramp = event.renderer().shader().rasterShaderFunction()
    alpha = {z: ramp.shade(z)[4] for z in (-5.0, 0.0, 1.9, 3.0, 4.0, 6.0, 8.0, 30.0)}
    assert alpha[-5.0] == alpha[0.0] == alpha[1.9] == alpha[3.0] == 0
    assert 0 < alpha[4.0] < alpha[6.0] < alpha[8.0] == alpha[30.0] == 255


def test_no_data_is_transparent(project, scores_store):
    layers = score_layers.load_score_layers(scores_store.path, project)
    first_difference = find_layer(layers, "difference", 2017)
    assert (rendered_rgba(first_difference)[..., 3] == 0).all()


def test_plain_distances_share_a_scale_set_by_their_99th_percentile(project, tmp_path):
    import zarr

    store = write_scores_store(tmp_path / "distances.zarr", bands=("loo_medoid_cosine_distance",))
    rng = np.random.default_rng(1)
    years = len(store.years)
    # Year t spreads uniformly over [0, 1 + t/10]: the last year sets the scale.
    distances = (
        rng.uniform(0, 1, size=store.scores.shape)
        * (1 + np.arange(years) / 10)[:, None, None, None]
    )
    zarr.open_array(str(store.path / "scores"), mode="r+")[:] = distances.astype("float32")
    layers = score_layers.load_score_layers(store.path, project)

    expected = max(np.percentile(year, 99) for year in distances[:, 0])
    highs = {layer.renderer().classificationMax() for layer in layers}
    assert len(highs) == 1
    assert highs.pop() == pytest.approx(expected, rel=0.02)


def test_zarr_format_is_one_this_gdal_reads():
    version = int(gdal.VersionInfo("VERSION_NUM"))
    assert layer_sources.zarr_format_for_layers() == (2 if version < 3110000 else 3)


@pytest.mark.parametrize("results_group", ["", "Processing results"])
def test_layers_loaded_by_processing_end_up_styled_in_their_groups(
    project, scores_store, provider, results_group
):
    from processing.core.ProcessingConfig import ProcessingConfig
    from processing.gui.Postprocessing import handleAlgorithmResults

    context = QgsProcessingContext()
    context.setProject(project)
    count = score_layers.register_score_layers(
        scores_store.path, scores_store.years, scores_store.bands, context
    )
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(ALGORITHM)
    previous = ProcessingConfig.getSetting(ProcessingConfig.RESULTS_GROUP_NAME)
    ProcessingConfig.setSettingValue(ProcessingConfig.RESULTS_GROUP_NAME, results_group)
    try:
        assert handleAlgorithmResults(algorithm, context, QgsProcessingFeedback())
    finally:
        ProcessingConfig.setSettingValue(ProcessingConfig.RESULTS_GROUP_NAME, previous)

    assert count == len(project.mapLayers()) == len(ZSCORE_BANDS) * len(scores_store.years)
    root = project.layerTreeRoot()
    assert [g.name() for g in root.findGroups()] == ["scores.zarr"]  # no empty results group
    for group in score_groups(project):
        assert [n.name() for n in group.findLayers()] == [str(y) for y in scores_store.years]
        for node in group.findLayers():
            assert node.layer().renderer().type() == "singlebandpseudocolor"
            assert node.layer().temporalProperties().isActive()


def test_layers_keep_year_order_when_the_desktop_inserts_next_to_the_current_layer(
    project, scores_store, provider
):
    """The QGIS desktop adds each new layer where the layer tree's current layer is, which after
    the first score layer is inside its band group: the years must still come out in order."""
    from processing.gui.Postprocessing import handleAlgorithmResults

    bridge = project.layerTreeRegistryBridge()

    def insert_next_to(node, index_from, index_to):  # what the desktop's layer tree view does
        child = node.children()[index_to]
        if QgsLayerTree.isLayer(child):
            bridge.setLayerInsertionPoint(QgsLayerTreeRegistryBridge.InsertionPoint(node, index_to))

    root = project.layerTreeRoot()
    root.addedChildren.connect(insert_next_to)
    context = QgsProcessingContext()
    context.setProject(project)
    score_layers.register_score_layers(
        scores_store.path, scores_store.years, scores_store.bands, context
    )
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(ALGORITHM)
    try:
        assert handleAlgorithmResults(algorithm, context, QgsProcessingFeedback())
    finally:
        root.addedChildren.disconnect(insert_next_to)
        bridge.setLayerInsertionPoint(QgsLayerTreeRegistryBridge.InsertionPoint(root, 0))

    assert [g.name() for g in root.findGroups()] == ["scores.zarr"]
    assert [g.name() for g in score_groups(project)] == scores_store.bands
    for group in score_groups(project):
        assert [n.name() for n in group.findLayers()] == [str(y) for y in scores_store.years]
        assert not any(n.isExpanded() for n in group.findLayers())
        assert all(n.itemVisibilityChecked() for n in group.findLayers())


def test_one_score_group_is_shown_at_a_time(project, scores_store):
    score_layers.load_score_layers(scores_store.path, project)

    (run_group,) = project.layerTreeRoot().findGroups()
    first, second = score_groups(project)
    assert run_group.isMutuallyExclusive()
    assert (first.isVisible(), second.isVisible()) == (True, False)
    second.setItemVisibilityChecked(True)
    assert (first.isVisible(), second.isVisible()) == (False, True)
