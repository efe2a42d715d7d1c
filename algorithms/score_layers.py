"""How a score layer looks and moves in time: one module for loading, styling and animating scores.

A scores Zarr (time, band, y, x) becomes a group per score band. On QGIS < 3.38 the group holds
one layer per year: each reads its 2-D slice straight from the store
(`ZARR:"path":/scores:<t>:<band>`, no copy) and carries a fixed one-year temporal range. From
3.38 on the group holds one layer whose bands are the years (a small VRT over the same slices)
with a temporal range per band: QGIS draws the band of the frame's year. Either way a colour ramp
leaves ordinary values transparent so that high scores jump out, and the temporal controller
walks the years, one a frame.

After a Processing run the layers come in through `ScoreLayerPostProcessor` (the framework loads
them on the main thread); scripts load a finished store with `load_score_layers`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from osgeo import gdal
from qgis.core import (
    Qgis,
    QgsColorRampShader,
    QgsDateTimeRange,
    QgsInterval,
    QgsLayerTree,
    QgsLayerTreeGroup,
    QgsProcessingContext,
    QgsProcessingLayerPostProcessorInterface,
    QgsProject,
    QgsRasterLayer,
    QgsRasterLayerTemporalProperties,
    QgsRasterShader,
    QgsSingleBandPseudoColorRenderer,
    QgsTemporalNavigationObject,
    QgsUnitTypes,
)
from qgis.PyQt.QtCore import QDate, QDateTime, Qt, QTime
from qgis.PyQt.QtGui import QColor

from .layer_sources import score_layer_uri, write_year_stack

SliceSource = Callable[[int, int], str]  # (year index, band index) -> GDAL data source
PROPERTY = "embedding_change"  # prefix of the custom properties on our layers and groups
# QGIS 3.38 added temporal ranges per band: one layer per score, years as bands.
PER_BAND_TEMPORAL = Qgis.QGIS_VERSION_INT >= 33800

# Colour stops as fractions of the score called "high", colours from ColorBrewer's YlOrRd.
# Up to 3/8 of "high" a score is ordinary: fully transparent.
RAMP_STOPS = (
    (0.375, QColor(255, 255, 178, 0)),
    (0.5, QColor(254, 204, 92, 150)),
    (0.75, QColor(253, 141, 60, 220)),
    (1.0, QColor(189, 0, 38, 255)),
)
# A robust z-score of 8 is far out in any series. With the stops above, z <= 3 stays
# transparent (on 9 years of noise, a few percent of pixels pass 3), 4 is yellow, 6 orange and
# 8 or more dark red.
ZSCORE_HIGH = 8.0
# Plain distances have no fixed scale: "high" is their 99th percentile over all years.
DISTANCE_HIGH_QUANTILE = 0.99


def year_range(year: int) -> QgsDateTimeRange:
    """The calendar year as a layer's range: one frame of the controller shows exactly one year.

    Both ends are open: QGIS 3.22's overlap test ignores the frame's open end, so a layer
    starting at the frame's end (1 January next year) would show in two frames otherwise.
    """
    return QgsDateTimeRange(_new_year(year), _new_year(year + 1), False, False)


def years_range(first: int, last: int) -> QgsDateTimeRange:
    """From 1 January of `first` to 1 January after `last` (excluded), in UTC."""
    return QgsDateTimeRange(_new_year(first), _new_year(last + 1), True, False)


def _new_year(year: int) -> QDateTime:
    return QDateTime(QDate(year, 1, 1), QTime(0, 0, 0), Qt.UTC)


def read_score_labels(store: str | Path) -> tuple[list[int], list[str]]:
    """The years and band labels of a scores Zarr, as written by the engine."""
    import xarray as xr

    with xr.open_zarr(store, consolidated=None) as scores:
        years = [int(y) for y in scores["time"].values]
        bands = [str(b) for b in scores["band"].values]
    return years, bands


@dataclass(frozen=True)
class ScoreSlice:
    """Where a layer sits: which store, score band and year (kept on the layer as properties)."""

    store: str
    bands: tuple[str, ...]
    band: str
    years: tuple[int, ...]
    year: int | None  # None: the layer holds every year, band i + 1 is years[i]
    high: float

    @property
    def band_index(self) -> int:
        return self.bands.index(self.band)


def score_slice_layers(
    store: str | Path, years, bands, slice_source: SliceSource | None = None
) -> list[tuple[QgsRasterLayer, ScoreSlice]]:
    """One raster layer per (band, year) and what each one is; a band's years share a scale.

    `slice_source(t, b)` is the GDAL data source of year index t, band index b: by default the
    Zarr slice of the store; a pyramid gives VRTs with overviews instead.
    """
    store = str(Path(store).absolute())
    source = slice_source or functools.partial(score_layer_uri, store)
    years, bands = tuple(int(y) for y in years), tuple(str(b) for b in bands)
    result = []
    for b, band in enumerate(bands):
        layers = [_raster_layer(source(t, b), str(year)) for t, year in enumerate(years)]
        bad = [layer.source() for layer in layers if not layer.isValid()]
        if bad:
            raise ValueError(f"GDAL {gdal.__version__} cannot read {bad[0]}")
        high = score_high(band, layers)
        for layer, year in zip(layers, years, strict=True):
            result.append((layer, ScoreSlice(store, bands, band, years, year, high)))
    return result


def score_year_stack_layers(
    store: str | Path, years, bands, slice_source: SliceSource | None = None
) -> list[tuple[QgsRasterLayer, ScoreSlice]]:
    """One raster layer per score band whose bands 1..T are the years (QGIS >= 3.38)."""
    store = str(Path(store).absolute())
    source = slice_source or functools.partial(score_layer_uri, store)
    years, bands = tuple(int(y) for y in years), tuple(str(b) for b in bands)
    result = []
    for b, band in enumerate(bands):
        path = write_year_stack(store, band, years, [source(t, b) for t in range(len(years))])
        layer = _raster_layer(path, band)
        if not layer.isValid() or layer.bandCount() != len(years):
            raise ValueError(f"GDAL {gdal.__version__} cannot read {source(0, b)}")
        score = ScoreSlice(store, bands, band, years, None, score_high(band, [layer]))
        result.append((layer, score))
    return result


def score_layer_pairs(
    store: str | Path, years, bands, slice_source: SliceSource | None = None
) -> list[tuple[QgsRasterLayer, ScoreSlice]]:
    """The layers this QGIS animates best: one per score from 3.38 on, else one per year."""
    if PER_BAND_TEMPORAL:
        return score_year_stack_layers(store, years, bands, slice_source)
    return score_slice_layers(store, years, bands, slice_source)


def _raster_layer(uri: str, name: str) -> QgsRasterLayer:
    # A slice that is all no data (the first year of "difference") makes GDAL print
    # "Failed to compute statistics" while QGIS sets up its default renderer: expected, quiet.
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        return QgsRasterLayer(uri, name, "gdal")
    finally:
        gdal.PopErrorHandler()


def score_high(band: str, layers: list[QgsRasterLayer]) -> float:
    """The score shown dark red: fixed for z-scores, else the 99th percentile over the years."""
    if "zscore" in band:
        return ZSCORE_HIGH
    highs = []
    for layer in layers:
        provider = layer.dataProvider()
        for number in range(1, layer.bandCount() + 1):
            _, upper = provider.cumulativeCut(number, 0.0, DISTANCE_HIGH_QUANTILE, layer.extent())
            if math.isfinite(upper) and upper > 0:
                highs.append(upper)
    return max(highs, default=1.0)


def style_score_layer(layer: QgsRasterLayer, score: ScoreSlice) -> None:
    """Colour ramp, name, temporal range(s) and the properties that say what the layer is."""
    ramp = QgsColorRampShader(0.0, score.high)
    ramp.setColorRampType(QgsColorRampShader.Interpolated)
    # Not clipped: values under the first stop take its transparent colour, values over the
    # last one stay dark red.
    ramp.setClip(False)
    ramp.setColorRampItemList(
        [
            QgsColorRampShader.ColorRampItem(
                fraction * score.high, colour, f"{fraction * score.high:.3g}"
            )
            for fraction, colour in RAMP_STOPS
        ]
    )
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(RAMP_STOPS[0][0] * score.high)
    renderer.setClassificationMax(score.high)
    layer.setRenderer(renderer)

    temporal = layer.temporalProperties()
    if score.year is None:
        # The renderer draws the band whose range holds the frame (QgsRasterLayerRenderer sets
        # its input band from bandForTemporalRange); half-open years: one band per frame.
        layer.setName(f"{score.years[0]}–{score.years[-1]}")
        temporal.setFixedRangePerBand(
            {
                number: QgsDateTimeRange(_new_year(year), _new_year(year + 1), True, False)
                for number, year in enumerate(score.years, start=1)
            }
        )
        temporal.setMode(Qgis.RasterTemporalMode.FixedRangePerBand)
    else:
        layer.setName(str(score.year))
        temporal.setMode(QgsRasterLayerTemporalProperties.ModeFixedTemporalRange)
        temporal.setFixedTemporalRange(year_range(score.year))
        layer.setCustomProperty(f"{PROPERTY}/year", score.year)
    temporal.setIsActive(True)

    layer.setCustomProperty(f"{PROPERTY}/store", score.store)
    layer.setCustomProperty(f"{PROPERTY}/band", score.band)
    layer.triggerRepaint()


def place_in_layer_tree(project: QgsProject, layer: QgsRasterLayer, score: ScoreSlice) -> None:
    """Group "<store name>" > group per band (in store order) > layers by year, at the top."""
    root = project.layerTreeRoot()
    run_group = _child_group(root, f"{PROPERTY}/store", score.store, Path(score.store).name, 0)
    # One score on the map at a time (they would cover each other); checking another group
    # switches to it.
    if not run_group.isMutuallyExclusive():
        run_group.setIsMutuallyExclusive(True)
    band_group = _child_group(
        run_group,
        f"{PROPERTY}/band_index",
        score.band_index,
        score.band,
        _band_group_position(run_group, score.band_index),
    )
    position = sum(
        int(node.layer().customProperty(f"{PROPERTY}/year", 0)) < (score.year or 0)
        for node in band_group.findLayers()
        if node.layer() is not None
    )
    node = root.findLayer(layer.id())
    if node is None:
        node = band_group.insertLayer(position, layer)
    else:
        # Processing adds the layer at the desktop's insertion point (often the layer added just
        # before, inside this group): take it out and put it back at its year's place.
        # The copy goes in before the original leaves, or the project drops the layer.
        old_parent, clone = node.parent(), node.clone()
        if old_parent is band_group and band_group.children().index(node) <= position:
            position += 1
        band_group.insertChildNode(position, clone)
        old_parent.removeChildNode(node)
        node = clone
        if not old_parent.children() and old_parent not in (root, run_group, band_group):
            # Processing's "results group" setting left an empty group behind.
            old_parent.parent().removeChildNode(old_parent)
    node.setExpanded(False)  # a list of years; the legend is the same for all of them
    # Checked, even if it passed through the one-score-at-a-time group and got unchecked there.
    node.setItemVisibilityChecked(True)


def _child_group(parent: QgsLayerTreeGroup, key: str, value, name: str, position: int):
    for group in parent.findGroups():
        if group.customProperty(key) == value:
            return group
    group = parent.insertGroup(position, name)
    group.setCustomProperty(key, value)
    return group


def _group_index(group: QgsLayerTreeGroup) -> int:
    return int(group.customProperty(f"{PROPERTY}/band_index", -1))


def _band_group_position(run_group: QgsLayerTreeGroup, band_index: int) -> int:
    """Before the first group of a later band: counts the layers Processing may have put there."""
    children = run_group.children()
    later = (
        i
        for i, child in enumerate(children)
        if QgsLayerTree.isGroup(child) and _group_index(child) > band_index
    )
    return next(later, len(children))


def animate_years(project: QgsProject, years, iface=None) -> None:
    """Point the temporal controller at the years, one year a frame, from the first year.

    The project's time settings always (saved with the project, read by the desktop on load);
    the canvas's navigation object too when there is a QGIS window.
    """
    extent = years_range(min(years), max(years))
    settings = project.timeSettings()
    settings.setTemporalRange(extent)
    settings.setTimeStep(1)
    settings.setTimeStepUnit(QgsUnitTypes.TemporalYears)
    settings.setFramesPerSecond(1)
    controller = iface.mapCanvas().temporalController() if iface is not None else None
    if isinstance(controller, QgsTemporalNavigationObject):
        controller.setNavigationMode(QgsTemporalNavigationObject.Animated)
        controller.setFrameDuration(QgsInterval(1, QgsUnitTypes.TemporalYears))
        controller.setTemporalExtents(extent)
        controller.setFramesPerSecond(1)
        controller.setCurrentFrameNumber(0)


def _iface():
    from qgis.utils import iface

    return iface


def show_score_layer(layer: QgsRasterLayer, score: ScoreSlice, project: QgsProject, iface) -> None:
    """Everything a loaded score layer needs: style, time range, place in the tree, animation."""
    style_score_layer(layer, score)
    place_in_layer_tree(project, layer, score)
    animate_years(project, score.years, iface)


class ScoreLayerPostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Runs on the main thread once Processing has added a score layer to the project."""

    # sip does not keep Python subclasses alive once they are handed to C++: the instances
    # live here (a few small objects per run) until the process ends.
    _alive: list[ScoreLayerPostProcessor] = []

    def __init__(self, score: ScoreSlice):
        super().__init__()
        self.score = score

    @classmethod
    def create(cls, score: ScoreSlice) -> ScoreLayerPostProcessor:
        processor = cls(score)
        cls._alive.append(processor)
        return processor

    def postProcessLayer(self, layer, context, feedback):  # noqa: ARG002 (QGIS's signature)
        project = context.project() or QgsProject.instance()
        show_score_layer(layer, self.score, project, _iface())


def register_score_layers(
    store: str | Path,
    years,
    bands,
    context: QgsProcessingContext,
    slice_source: SliceSource | None = None,
) -> int:
    """Ask Processing to load the score layers when the run ends; returns how many.

    Called from processAlgorithm (possibly a worker thread): the layers go to the context's
    temporary store, which Processing hands to the main thread with the results.
    """
    if context.project() is None:
        return 0
    pairs = score_layer_pairs(store, years, bands, slice_source)
    for layer, score in pairs:
        context.temporaryLayerStore().addMapLayer(layer)
        details = QgsProcessingContext.LayerDetails(layer.name(), context.project(), "OUTPUT")
        details.forceName = True
        details.setPostProcessor(ScoreLayerPostProcessor.create(score))
        context.addLayerToLoadOnCompletion(layer.id(), details)
    return len(pairs)


def load_score_layers(
    store: str | Path,
    project: QgsProject | None = None,
    iface=None,
    *,
    labels: tuple | None = None,
    slice_source: SliceSource | None = None,
):
    """Load a finished scores Zarr into a project (scripts, the console); returns the layers.

    `labels` are (years, bands), read from the store when not given.
    """
    project = project or QgsProject.instance()
    years, bands = labels or read_score_labels(store)
    pairs = score_layer_pairs(store, years, bands, slice_source)
    for layer, score in pairs:
        project.addMapLayer(layer, False)
        show_score_layer(layer, score, project, iface)
    return [layer for layer, _ in pairs]
