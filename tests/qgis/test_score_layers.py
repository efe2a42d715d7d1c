"""layers/score_layers.py: score layers read the store, sit in groups, move by year.

Before QGIS 3.38 a score is a group of layers, one per year; from 3.38 on it is one layer whose
bands are the years. The tests check what the analyst gets in the layout this QGIS loads."""

from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import (
    QgsApplication,
    QgsLayerTree,
    QgsLayerTreeGroup,
    QgsLayerTreeRegistryBridge,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsUnitTypes,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor, QImage

from embedding_change.layers import layer_tree, post_processor, score_layers, sources, temporal

from .conftest import (
    ALGORITHM,
    YEARS_AS_BANDS,
    ZSCORE_BANDS,
    assert_layers_show_the_store,
    band_sources,
    band_values,
    band_years,
    score_layer_names,
    write_scores_store,
    years_drawn,
)

pytestmark = pytest.mark.qgis

DARK_RED = [189, 0, 38, 255]  # loo_medoid's ramp (YlOrRd) at its top
DARK_PURPLE = [110, 1, 107, 255]  # difference's ramp (BuPu) at its top


def rendered_frame(layers, frame_range) -> np.ndarray:
    """What QGIS's map renderer paints for the layers in one frame of the temporal controller,
    one image pixel per store pixel: (rows, cols, [r, g, b, a]) on a transparent background."""
    first = layers[0]
    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(first.crs())
    settings.setExtent(first.extent())
    settings.setOutputSize(QSize(first.width(), first.height()))
    settings.setBackgroundColor(QColor(0, 0, 0, 0))
    settings.setIsTemporal(True)
    settings.setTemporalRange(frame_range)
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage().convertToFormat(QImage.Format_RGBA8888)
    rows = np.frombuffer(bytes(image.constBits().asarray(image.sizeInBytes())), np.uint8)
    rows = rows.reshape(image.height(), image.bytesPerLine())
    return rows[:, : image.width() * 4].reshape(image.height(), image.width(), 4)


def score_groups(project) -> list[QgsLayerTreeGroup]:
    (run_group,) = project.layerTreeRoot().findGroups()
    return run_group.findGroups()


def group_band(group) -> str:
    """The store's band label of a score group (the group's name is the analyst's title)."""
    return group.findLayers()[0].layer().customProperty("embedding_change/band")


def group_layers(project, method: str):
    """The layers of the score whose band label starts with `method`, in layer-tree order."""
    (group,) = (g for g in score_groups(project) if group_band(g).startswith(method))
    return [node.layer() for node in group.findLayers()]


TITLES = ["LOO medoid z-score", "Year-to-year difference z-score"]  # loo_medoid first
BANDS_SHOWN = [ZSCORE_BANDS[1], ZSCORE_BANDS[0]]


def frame_of(navigation, years, year: int):
    return navigation.dateTimeRangeForFrameNumber(list(years).index(year))


def test_layers_read_every_year_and_score_slice_with_the_store_georeferencing(
    project, scores_store
):
    layers = score_layers.load_score_layers(scores_store.path, project)

    names = score_layer_names(scores_store.years)
    assert len(layers) == len(names) * len(scores_store.bands)
    assert_layers_show_the_store(layers, scores_store)


def test_a_group_per_score_holds_its_years_in_year_order_read_from_the_store(project, scores_store):
    score_layers.load_score_layers(scores_store.path, project)

    (run_group,) = project.layerTreeRoot().findGroups()
    assert run_group.name() == "scores.zarr"
    groups = score_groups(project)
    assert [g.name() for g in groups] == TITLES
    assert [group_band(g) for g in groups] == BANDS_SHOWN
    for group in groups:
        b = scores_store.bands.index(group_band(group))
        layers = [node.layer() for node in group.findLayers()]
        assert [layer.name() for layer in layers] == score_layer_names(scores_store.years)
        assert [year for layer in layers for _, year in sorted(band_years(layer).items())] == (
            scores_store.years
        )
        # No copy: every year reads its slice of the store itself.
        assert [source for layer in layers for source in band_sources(layer)] == [
            sources.score_layer_uri(scores_store.path, t, b) for t in range(len(scores_store.years))
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
            drawn = [
                y for node in group.findLayers() for y in years_drawn(node.layer(), frame_range)
            ]
            assert drawn == [year]
    settings = project.timeSettings()
    assert settings.temporalRange() == temporal.animation_extent(2017, 2025)
    assert (settings.timeStep(), settings.timeStepUnit()) == (1, QgsUnitTypes.TemporalYears)


def test_each_year_is_one_whole_calendar_year_in_this_qgis_layout(project, scores_store):
    layers = score_layers.load_score_layers(scores_store.path, project)

    for layer in layers:
        years = band_years(layer)  # checks the mode and that each range is 1 Jan to 1 Jan
        if YEARS_AS_BANDS:
            assert list(years.values()) == scores_store.years
            assert all(layer.bandName(n).endswith(str(y)) for n, y in years.items())
        else:
            assert list(years.values()) == [int(layer.name())]


def test_high_zscores_are_painted_opaque_red_in_their_year_only_and_ordinary_ones_transparent(
    project, scores_store, qgis_iface, temporal_navigation
):
    score_layers.load_score_layers(scores_store.path, project, qgis_iface)
    layers = group_layers(project, "loo_medoid")

    event = rendered_frame(layers, frame_of(temporal_navigation, scores_store.years, 2020))
    assert (event[10:20, 5:15] == DARK_RED).all()  # z = 9 in 2020: dark red, opaque
    ordinary = np.ones(event.shape[:2], bool)
    ordinary[10:20, 5:15] = False
    assert (event[ordinary][:, 3] == 0).all()
    for year in (2017, 2019, 2021, 2025):  # the other years' frames do not show 2020's event
        calm = rendered_frame(layers, frame_of(temporal_navigation, scores_store.years, year))
        assert (calm[..., 3] == 0).all(), year

    ramp = layers[0].renderer().shader().rasterShaderFunction()
    alpha = {z: ramp.shade(z)[4] for z in (-5.0, 0.0, 1.9, 3.0, 4.0, 6.0, 8.0, 30.0)}
    assert alpha[-5.0] == alpha[0.0] == alpha[1.9] == alpha[3.0] == 0
    assert 0 < alpha[4.0] < alpha[6.0] < alpha[8.0] == alpha[30.0] == 255


def test_no_data_is_transparent(project, scores_store, qgis_iface, temporal_navigation):
    score_layers.load_score_layers(scores_store.path, project, qgis_iface)
    layers = group_layers(project, "difference")
    assert np.isnan(scores_store.scores[0, 0]).all()  # the first year has no difference

    first = rendered_frame(layers, frame_of(temporal_navigation, scores_store.years, 2017))
    event = rendered_frame(layers, frame_of(temporal_navigation, scores_store.years, 2020))
    assert (first[..., 3] == 0).all()
    # The same layers do paint where there is data, in their own ramp.
    assert (event[10:20, 5:15] == DARK_PURPLE).all()


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
    assert sources.zarr_format_for_layers() == (2 if version < 3110000 else 3)


@pytest.mark.parametrize("results_group", ["", "Processing results"])
def test_layers_loaded_by_processing_end_up_styled_in_their_groups(
    project, scores_store, provider, results_group
):
    from processing.core.ProcessingConfig import ProcessingConfig
    from processing.gui.Postprocessing import handleAlgorithmResults

    context = QgsProcessingContext()
    context.setProject(project)
    count = post_processor.register_score_layers(
        scores_store.path, scores_store.years, scores_store.bands, context
    )
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(ALGORITHM)
    previous = ProcessingConfig.getSetting(ProcessingConfig.RESULTS_GROUP_NAME)
    ProcessingConfig.setSettingValue(ProcessingConfig.RESULTS_GROUP_NAME, results_group)
    try:
        assert handleAlgorithmResults(algorithm, context, QgsProcessingFeedback())
    finally:
        ProcessingConfig.setSettingValue(ProcessingConfig.RESULTS_GROUP_NAME, previous)

    names = score_layer_names(scores_store.years)
    assert count == len(project.mapLayers()) == len(ZSCORE_BANDS) * len(names)
    root = project.layerTreeRoot()
    assert [g.name() for g in root.findGroups()] == ["scores.zarr"]  # no empty results group
    for group in score_groups(project):
        assert [n.name() for n in group.findLayers()] == names
        for node in group.findLayers():
            assert node.layer().renderer().type() == "singlebandpseudocolor"
    assert_layers_show_the_store(list(project.mapLayers().values()), scores_store)


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
    post_processor.register_score_layers(
        scores_store.path, scores_store.years, scores_store.bands, context
    )
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(ALGORITHM)
    try:
        assert handleAlgorithmResults(algorithm, context, QgsProcessingFeedback())
    finally:
        root.addedChildren.disconnect(insert_next_to)
        bridge.setLayerInsertionPoint(QgsLayerTreeRegistryBridge.InsertionPoint(root, 0))

    assert [g.name() for g in root.findGroups()] == ["scores.zarr"]
    assert [g.name() for g in score_groups(project)] == TITLES
    for group in score_groups(project):
        layers = [node.layer() for node in group.findLayers()]
        assert [layer.name() for layer in layers] == score_layer_names(scores_store.years)
        assert [year for layer in layers for year in band_years(layer).values()] == (
            scores_store.years
        )
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


def shown_year(navigation) -> int:
    """The year of the temporal controller's current frame."""
    frame = navigation.dateTimeRangeForFrameNumber(navigation.currentFrameNumber())
    return frame.begin().date().year()


def test_the_first_frame_is_the_year_with_the_most_loo_medoid_change(
    project, tmp_path, qgis_iface, temporal_navigation
):
    import zarr

    store = write_scores_store(tmp_path / "event.zarr")
    scores = zarr.open_array(str(store.path / "scores"), mode="r+")
    values = scores[:]
    values[3, :, 10:20, 5:15] = 0.0  # no event in 2020 ...
    values[6, 1, 0:30, 0:30] = 5.0  # ... but a large one in loo_medoid in 2023
    values[1, 0, :, :] = 9.0  # and difference all high in 2018: not the score shown first
    scores[:] = values
    temporal_navigation.setCurrentFrameNumber(0)

    score_layers.load_score_layers(store.path, project, qgis_iface)

    shares = (values[:, 1] > 3).mean(axis=(1, 2))
    assert store.years[int(np.argmax(shares))] == 2023
    assert shown_year(temporal_navigation) == 2023
    assert temporal_navigation.navigationMode() == temporal_navigation.Animated


def test_loo_medoid_is_the_score_on_the_map_and_difference_has_its_own_ramp(project, scores_store):
    score_layers.load_score_layers(scores_store.path, project)

    groups = score_groups(project)
    assert [g.name() for g in groups] == TITLES
    assert [g.isVisible() for g in groups] == [True, False]
    loo, difference = (group_layers(project, m)[0] for m in ("loo_medoid", "difference"))
    top = [
        layer.renderer().shader().rasterShaderFunction().shade(30.0)[1:]
        for layer in (loo, difference)
    ]
    assert [tuple(colour) for colour in top] == [tuple(DARK_RED), tuple(DARK_PURPLE)]


def test_the_legend_names_the_unit_the_transparent_threshold_and_the_ramp_ends(
    project, scores_store
):
    score_layers.load_score_layers(scores_store.path, project)

    layer = group_layers(project, "loo_medoid")[0]
    labels = [label for label, _ in layer.renderer().legendSymbologyItems()]
    assert labels == [
        "≤ 3: transparent (ordinary)",
        "4",
        "6",
        "≥ 8 robust z-score",
    ]
    colours = [colour.alpha() for _, colour in layer.renderer().legendSymbologyItems()]
    assert colours == [0, 150, 220, 255]
    assert (
        not layer.renderer().shader().rasterShaderFunction().legendSettings().useContinuousLegend()
    )


def test_a_later_run_widens_the_time_range_and_keeps_the_analysts_frame(
    project, tmp_path, qgis_iface, temporal_navigation
):
    first = write_scores_store(tmp_path / "first.zarr", years=range(2019, 2026))
    second = write_scores_store(tmp_path / "second.zarr", years=range(2015, 2021))
    score_layers.load_score_layers(first.path, project, qgis_iface)
    assert shown_year(temporal_navigation) == 2022  # the event is at year index 3
    temporal_navigation.setCurrentFrameNumber(2)  # the analyst goes to 2021

    score_layers.load_score_layers(second.path, project, qgis_iface)

    assert project.timeSettings().temporalRange() == temporal.animation_extent(2015, 2025)
    assert temporal_navigation.temporalExtents() == temporal.animation_extent(2015, 2025)
    assert temporal_navigation.totalFrameCount() == 11
    assert shown_year(temporal_navigation) == 2021
    # Every year of both results is one frame away.
    for group in project.layerTreeRoot().findGroups():
        for node in group.findLayers():
            for year in band_years(node.layer()).values():
                frame = temporal_navigation.dateTimeRangeForFrameNumber(year - 2015)
                assert year in years_drawn(node.layer(), frame)


def test_a_temporary_output_is_named_by_its_extent_and_time(tmp_path):
    import datetime

    from qgis.core import QgsProcessingUtils

    assert layer_tree.is_temporary_output(f"{QgsProcessingUtils.tempFolder()}/abc/OUTPUT")
    assert not layer_tree.is_temporary_output(tmp_path / "kept.zarr")
    name = layer_tree.temporary_run_name(
        (-105.3, 40.0, -105.2, 40.1), datetime.datetime(2026, 12, 1, 10, 5, 7)
    )
    assert name == "Change -105.3000, 40.0000 – -105.2000, 40.1000 at 10:05:07"


def test_a_run_loads_the_year_and_size_of_the_largest_change(
    project, aef_store, tmp_path, qgis_iface, temporal_navigation
):
    """Year of largest change: paletted, a colour and legend entry per year, transparent where
    the largest z-score stays at or under 3; Largest change: the score's ramp."""
    from embedding_change.core import compute_change_scores, summary
    from embedding_change.layers.sources import zarr_format_for_layers
    from embedding_change.layers.summary import LARGEST, YEAR_OF_LARGEST

    assert (LARGEST, YEAR_OF_LARGEST) == (summary.LARGEST, summary.YEAR_OF_LARGEST)
    path, _ = aef_store
    output = tmp_path / "summary.zarr"
    compute_change_scores(path, output, zarr_format=zarr_format_for_layers())
    score_layers.load_score_layers(output, project, qgis_iface)

    (run_group,) = project.layerTreeRoot().findGroups()
    names = [g.name() for g in run_group.findGroups()]
    assert names == TITLES + ["When it changed: LOO medoid z-score"]
    assert [g.isVisible() for g in run_group.findGroups()] == [True, False, False]
    year_layer, largest_layer = (n.layer() for n in run_group.findGroups()[2].findLayers())
    assert (year_layer.name(), largest_layer.name()) == (
        "Year of largest change",
        "Largest change",
    )
    import xarray as xr

    with xr.open_zarr(output, consolidated=None) as ds:
        b = list(ds["band"].values).index(ZSCORE_BANDS[1])
        scores = ds["scores"].values[:, b]
        years = [int(t) for t in ds["time"].values]
    finite = np.isfinite(scores).any(axis=0)
    largest = np.where(finite, np.nanmax(np.where(np.isfinite(scores), scores, -np.inf), 0), np.nan)
    year = np.asarray(years)[np.argmax(np.where(np.isfinite(scores), scores, -np.inf), 0)]
    expected_year = np.where(finite & (largest > 3), year, 0)
    # The first frame: the year in which most pixels have their largest change above 3.
    counts = [(expected_year == y).sum() for y in years]
    assert shown_year(temporal_navigation) == years[int(np.argmax(counts))]
    np.testing.assert_array_equal(band_values(largest_layer), largest.astype(np.float32))
    provider = year_layer.dataProvider()
    block = provider.block(1, year_layer.extent(), year_layer.width(), year_layer.height())
    shown = np.frombuffer(bytes(block.data()), np.int16).reshape(expected_year.shape)
    np.testing.assert_array_equal(shown, expected_year)
    assert provider.sourceNoDataValue(1) == 0
    renderer = year_layer.renderer()
    assert renderer.type() == "paletted"
    assert [c.label for c in renderer.classes()] == [str(y) for y in years]
    assert len({c.color.name() for c in renderer.classes()}) == len(years)
    assert largest_layer.renderer().type() == "singlebandpseudocolor"
