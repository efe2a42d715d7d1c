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

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from osgeo import gdal
from qgis.core import (
    Qgis,
    QgsColorRampLegendNodeSettings,
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

# Colour stops as fractions of the score called "high". Up to 3/8 of "high" a score is
# ordinary: fully transparent. Each score has its own ColorBrewer ramp, so the map says which
# score it shows: loo_medoid YlOrRd, difference BuPu, anything else YlGnBu.
THRESHOLD_FRACTION = 0.375
RAMPS = {
    "loo_medoid": ((255, 255, 178), (254, 204, 92), (253, 141, 60), (189, 0, 38)),
    "difference": ((237, 248, 251), (158, 188, 218), (140, 107, 177), (110, 1, 107)),
    "other": ((255, 255, 204), (161, 218, 180), (65, 182, 196), (37, 52, 148)),
}
RAMP_FRACTIONS = ((THRESHOLD_FRACTION, 0), (0.5, 150), (0.75, 220), (1.0, 255))  # (stop, alpha)
# What the analyst calls each score (group names) and the score shown first: loo_medoid marks a
# one-year event in its year only, difference in the event year and the year after.
METHOD_TITLES = {"loo_medoid": "LOO medoid", "difference": "Year-to-year difference"}
METRIC_TITLES = {"alpha_earth_cosine": "", "cosine": "raw cosine", "euclidean": "euclidean"}
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


def animation_extent(first: int, last: int) -> QgsDateTimeRange:
    """The temporal controller's extent for the years: one frame per year, none extra.

    It ends on 31 December of `last`: QGIS counts frames as the extent over 365.25 days,
    rounded up, which gives a 12th, empty frame for 11 calendar years with 3 leap days.
    """
    return QgsDateTimeRange(_new_year(first), _new_year(last + 1).addDays(-1), True, False)


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
    run_name: str = ""  # the run's group: the output's name, or extent and time when temporary
    focus_year: int | None = None  # the year with the most change: the first frame shown

    @property
    def band_index(self) -> int:
        return self.bands.index(self.band)

    @property
    def threshold(self) -> float:
        """Scores up to this are ordinary: transparent on the map."""
        return THRESHOLD_FRACTION * self.high

    @property
    def title(self) -> str:
        return score_title(self.band)

    @property
    def unit(self) -> str:
        return score_unit(self.band)


def score_method(band: str) -> str:
    return next((m for m in METHOD_TITLES if band.startswith(m)), "other")


def score_title(band: str) -> str:
    """ "loo_medoid_alpha_earth_cosine_distance_robust_time_zscore" -> "LOO medoid z-score"."""
    method = score_method(band)
    if method == "other":
        return band
    metric = next((m for m in sorted(METRIC_TITLES, key=len, reverse=True) if f"_{m}_" in band), "")
    parts = [METHOD_TITLES[method], METRIC_TITLES.get(metric, metric)]
    parts.append("z-score" if "zscore" in band else "distance")
    return " ".join(part for part in parts if part)


def score_unit(band: str) -> str:
    if "zscore" in band:
        return "robust z-score"
    metric = next((m for m in METRIC_TITLES if f"_{m}_" in band), "")
    return "cosine distance" if "cosine" in metric else "distance"


def default_band(bands) -> str:
    """The score shown first: loo_medoid's z-score, else loo_medoid, else the first."""
    return min(bands, key=lambda band: (score_method(band) != "loo_medoid", "zscore" not in band))


def band_rank(bands, band: str) -> int:
    """Place of a score's group in the run's group: the default score first, then store order."""
    first = default_band(bands)
    return -1 if band == first else list(bands).index(band)


def score_slice_layers(
    store: str | Path, years, bands, slice_source: SliceSource | None = None, **details
) -> list[tuple[QgsRasterLayer, ScoreSlice]]:
    """One raster layer per (band, year) and what each one is; a band's years share a scale.

    `slice_source(t, b)` is the GDAL data source of year index t, band index b: by default the
    Zarr slice of the store; a pyramid gives VRTs with overviews instead. `details`: see
    `score_layer_pairs`.
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
    return _with_run_details(result, **details)


def score_year_stack_layers(
    store: str | Path, years, bands, slice_source: SliceSource | None = None, **details
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
    return _with_run_details(result, **details)


def score_layer_pairs(
    store: str | Path, years, bands, slice_source: SliceSource | None = None, **details
) -> list[tuple[QgsRasterLayer, ScoreSlice]]:
    """The layers this QGIS animates best: one per score from 3.38 on, else one per year.

    details: run_name (the run's group name; default the store's folder name), scores_array
    (the array whose default score picks the first frame; default "scores"), crs (for
    stores whose CRS GDAL does not find).
    """
    if PER_BAND_TEMPORAL:
        return score_year_stack_layers(store, years, bands, slice_source, **details)
    return score_slice_layers(store, years, bands, slice_source, **details)


def _with_run_details(
    pairs, run_name: str | None = None, scores_array: str = "scores", crs: str | None = None
):
    """The pairs with the run's group name and the year of most change (of the default score);
    `crs` (any text QGIS reads) for layers whose source declares none GDAL understands."""
    if not pairs:
        return pairs
    if crs:
        from qgis.core import QgsCoordinateReferenceSystem

        declared = QgsCoordinateReferenceSystem(crs)
        for layer, _ in pairs:
            if declared.isValid() and not layer.crs().isValid():
                layer.setCrs(declared)
    first = pairs[0][1]
    band = default_band(first.bands)
    threshold = next(score.threshold for _, score in pairs if score.band == band)
    try:
        shares = share_above_per_year(first.store, first.bands.index(band), threshold, scores_array)
        focus = first.years[max(range(len(shares)), key=lambda t: (shares[t], -t))]
    except Exception:  # noqa: BLE001 (a store we cannot reduce still loads, from its first year)
        focus = first.years[0]
    name = run_name or Path(first.store).name
    return [
        (layer, dataclasses.replace(score, run_name=name, focus_year=focus))
        for layer, score in pairs
    ]


def share_above_per_year(store: str, band_index: int, threshold: float, array="scores"):
    """Per year, the share of a score's valid pixels above `threshold` (0 for an empty year).

    With the run's summary (core/summary.py) it reads two 2-D arrays instead of every year:
    pixels are counted in the year of their largest score, if that passes the threshold.
    """
    import dask.array as da
    import numpy as np
    import zarr

    group = zarr.open_group(store, mode="r")
    if array == "scores" and "year_of_largest" in group and "largest_score" in group:
        years = np.asarray(group["time"][...], dtype=np.float32)
        largest = da.from_zarr(group["largest_score"])[band_index]
        year = da.from_zarr(group["year_of_largest"])[band_index]
        counts = [((year == y) & (largest > threshold)).sum() for y in years]
        valid = (~da.isnan(largest)).sum()
        *counts, valid = da.compute(*counts, valid)
        return list(np.asarray(counts) / max(int(valid), 1))
    values = da.from_zarr(group[array])[:, band_index]
    above, valid = da.compute(
        (values > threshold).sum(axis=(1, 2)), (~da.isnan(values)).sum(axis=(1, 2))
    )
    return list(above / np.maximum(valid, 1))


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


def ramp_items(score: ScoreSlice) -> list[QgsColorRampShader.ColorRampItem]:
    """The score's ramp stops, labelled for the legend: threshold, unit, the dark end."""
    colours = RAMPS[score_method(score.band)]
    items = []
    for (fraction, alpha), rgb in zip(RAMP_FRACTIONS, colours, strict=True):
        value = fraction * score.high
        if fraction == THRESHOLD_FRACTION:
            label = f"≤ {value:.3g}: transparent (ordinary)"
        elif fraction == 1.0:
            label = f"≥ {value:.3g} {score.unit}"
        else:
            label = f"{value:.3g}"
        items.append(QgsColorRampShader.ColorRampItem(value, QColor(*rgb, alpha), label))
    return items


def style_score_layer(layer: QgsRasterLayer, score: ScoreSlice) -> None:
    """Colour ramp, name, temporal range(s) and the properties that say what the layer is."""
    set_score_renderer(layer, score)
    _set_temporal(layer, score)
    layer.setCustomProperty(f"{PROPERTY}/store", score.store)
    layer.setCustomProperty(f"{PROPERTY}/band", score.band)
    layer.triggerRepaint()


def set_score_renderer(layer: QgsRasterLayer, score: ScoreSlice) -> None:
    """The score's colour ramp on band 1, transparent up to the threshold."""
    ramp = QgsColorRampShader(0.0, score.high)
    ramp.setColorRampType(QgsColorRampShader.Interpolated)
    # Not clipped: values under the first stop take its transparent colour, values over the
    # last one stay at the darkest colour.
    ramp.setClip(False)
    ramp.setColorRampItemList(ramp_items(score))
    # The legend lists the stops with their labels (the unit, the transparent threshold)
    # instead of a bare gradient from 0 to "high".
    legend = QgsColorRampLegendNodeSettings()
    legend.setUseContinuousLegend(False)
    ramp.setLegendSettings(legend)
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(score.threshold)
    renderer.setClassificationMax(score.high)
    layer.setRenderer(renderer)


def _set_temporal(layer: QgsRasterLayer, score: ScoreSlice) -> None:
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


def place_in_layer_tree(project: QgsProject, layer: QgsRasterLayer, score: ScoreSlice) -> None:
    """Group of the run > group per score (the default score first) > layers by year, on top."""
    root = project.layerTreeRoot()
    run_group = run_group_of(root, score)
    rank = band_rank(score.bands, score.band)
    band_group = _child_group(
        run_group,
        f"{PROPERTY}/band_index",
        score.band_index,
        score.title,
        _band_group_position(run_group, rank),
    )
    band_group.setCustomProperty(f"{PROPERTY}/rank", rank)
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
    # The default score is the one on the map, whichever score's layers came in first.
    if rank < 0:
        band_group.setItemVisibilityChecked(True)
    elif any(_group_rank(g) < 0 for g in run_group.findGroups()):
        band_group.setItemVisibilityChecked(False)


def run_group_of(root, score: ScoreSlice) -> QgsLayerTreeGroup:
    """The run's group (made at the top if new); it shows one score at a time."""
    run_name = score.run_name or Path(score.store).name
    run_group = _child_group(root, f"{PROPERTY}/store", score.store, run_name, 0)
    # One score on the map at a time (they would cover each other); checking another group
    # switches to it.
    if not run_group.isMutuallyExclusive():
        run_group.setIsMutuallyExclusive(True)
    return run_group


def _child_group(parent: QgsLayerTreeGroup, key: str, value, name: str, position: int):
    for group in parent.findGroups():
        if group.customProperty(key) == value:
            return group
    group = parent.insertGroup(position, name)
    group.setCustomProperty(key, value)
    return group


def _group_rank(group: QgsLayerTreeGroup) -> int:
    return int(group.customProperty(f"{PROPERTY}/rank", 10**6))


def _band_group_position(run_group: QgsLayerTreeGroup, rank: int) -> int:
    """Before the first group of a later rank: counts the layers Processing may have put there."""
    children = run_group.children()
    later = (
        i
        for i, child in enumerate(children)
        if QgsLayerTree.isGroup(child) and _group_rank(child) > rank
    )
    return next(later, len(children))


def animate_years(project: QgsProject, years, iface=None, focus_year: int | None = None) -> None:
    """Point the temporal controller at the years, one year a frame.

    The project's time range becomes the union of what it had and these years (it never
    shrinks, so earlier results stay reachable). The first time, the current frame is
    `focus_year` (the year with the most change); later the frame the analyst left stays. The
    project's time settings always (saved with the project, read by the desktop on load); the
    canvas's navigation object and the Temporal Controller panel too when there is a window.
    """
    first, last = min(years), max(years)
    settings = project.timeSettings()
    animated_before = project.readBoolEntry(PROPERTY, "animated", False)[0]
    previous = settings.temporalRange()
    if animated_before and previous.begin().isValid() and previous.end().isValid():
        first = min(first, previous.begin().date().year())
        last = max(last, previous.end().addMSecs(-1).date().year())
    settings.setTemporalRange(years_range(first, last))
    settings.setTimeStep(1)
    settings.setTimeStepUnit(QgsUnitTypes.TemporalYears)
    settings.setFramesPerSecond(1)
    project.writeEntryBool(PROPERTY, "animated", True)
    controller = iface.mapCanvas().temporalController() if iface is not None else None
    if not isinstance(controller, QgsTemporalNavigationObject):
        return
    shown = None
    if animated_before and controller.navigationMode() == QgsTemporalNavigationObject.Animated:
        current = controller.dateTimeRangeForFrameNumber(controller.currentFrameNumber())
        shown = current.begin().date().year()
    controller.setNavigationMode(QgsTemporalNavigationObject.Animated)
    controller.setFrameDuration(QgsInterval(1, QgsUnitTypes.TemporalYears))
    controller.setTemporalExtents(animation_extent(first, last))
    controller.setFramesPerSecond(1)
    year = shown if shown is not None else (focus_year or min(years))
    controller.setCurrentFrameNumber(max(0, year - first))
    open_temporal_controller(iface)


def open_temporal_controller(iface) -> None:
    """Show the desktop's Temporal Controller panel (no-op without a QGIS main window)."""
    from qgis.PyQt.QtWidgets import QDockWidget

    window = iface.mainWindow() if hasattr(iface, "mainWindow") else None
    if window is None:
        return
    for dock in window.findChildren(QDockWidget):
        if dock.metaObject().className() == "QgsTemporalControllerDockWidget":
            dock.show()
            dock.raise_()
            _show_years_only(dock)


def _show_years_only(dock) -> None:
    """The panel's date editors show the year alone (the frame label is QGIS's own text)."""
    from qgis.PyQt.QtWidgets import QDateTimeEdit

    for edit in dock.findChildren(QDateTimeEdit):
        edit.setDisplayFormat("yyyy")


def _iface():
    from qgis.utils import iface

    return iface


def show_score_layer(layer: QgsRasterLayer, score: ScoreSlice, project: QgsProject, iface) -> None:
    """Everything a loaded score layer needs: style, time range, place in the tree, animation."""
    style_score_layer(layer, score)
    place_in_layer_tree(project, layer, score)
    animate_years(project, score.years, iface, score.focus_year)


class ScoreLayerPostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Runs on the main thread once Processing has added a score layer to the project."""

    # sip does not keep Python subclasses alive once they are handed to C++: the instances
    # live here (a few small objects per run) until the process ends.
    _alive: list[ScoreLayerPostProcessor] = []

    def __init__(self, score: ScoreSlice, load_check: str | None = None, summary=False):
        super().__init__()
        self.score = score
        self.load_check = load_check
        self.summary = summary

    @classmethod
    def create(cls, score: ScoreSlice, load_check=None, summary=False) -> ScoreLayerPostProcessor:
        processor = cls(score, load_check, summary)
        cls._alive.append(processor)
        return processor

    def postProcessLayer(self, layer, context, feedback):  # noqa: ARG002 (QGIS's signature)
        project = context.project() or QgsProject.instance()
        if self.load_check and batch_loading_is_off(self.load_check):
            # The batch dialog gives every row the project whatever its "Load layers on
            # completion" says (for folder outputs): the layer leaves as soon as it came in.
            project.removeMapLayer(layer.id())
            return
        if self.summary:
            from .summary_layers import place_summary_layer

            place_summary_layer(project, layer, self.score)
            return
        show_score_layer(layer, self.score, project, _iface())


def batch_loading_is_off(algorithm_id: str) -> bool:
    """True while a batch dialog of the algorithm is open with "Load layers on completion" off."""
    from qgis.PyQt.QtWidgets import QApplication

    try:
        from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog
    except ImportError:  # no Processing plugin: no batch dialog either
        return False
    for widget in QApplication.topLevelWidgets():
        if isinstance(widget, BatchAlgorithmDialog) and widget.isVisible():
            if widget.algorithm().id() != algorithm_id:
                continue
            check = getattr(widget.mainWidget(), "checkLoadLayersOnCompletion", None)
            if check is not None and not check.isChecked():
                return True
    return False


def register_score_layers(
    store: str | Path,
    years,
    bands,
    context: QgsProcessingContext,
    slice_source: SliceSource | None = None,
    load_check: str | None = None,
    **details,
) -> int:
    """Ask Processing to load the score layers when the run ends; returns how many.

    Called from processAlgorithm (possibly a worker thread): the layers go to the context's
    temporary store, which Processing hands to the main thread with the results. `details`:
    see `score_layer_pairs`. load_check: the algorithm's id, so that the layers stay out when
    the batch dialog running it has "Load layers on completion" off.
    """
    if context.project() is None:
        return 0
    pairs = score_layer_pairs(store, years, bands, slice_source, **details)
    summary = summary_pairs(pairs)
    for layer, score in pairs + summary:
        context.temporaryLayerStore().addMapLayer(layer)
        details = QgsProcessingContext.LayerDetails(layer.name(), context.project(), "OUTPUT")
        details.forceName = True
        is_summary = bool(layer.customProperty(f"{PROPERTY}/summary", False))
        details.setPostProcessor(ScoreLayerPostProcessor.create(score, load_check, is_summary))
        context.addLayerToLoadOnCompletion(layer.id(), details)
    return len(pairs) + len(summary)


def summary_pairs(pairs) -> list[tuple[QgsRasterLayer, ScoreSlice]]:
    """ "Year of largest change" and "Largest change" of the default score, if the store has a
    summary (algorithms/summary_layers.py)."""
    from .summary_layers import summary_layers

    if not pairs:
        return []
    band = default_band(pairs[0][1].bands)
    score = next(score for _, score in pairs if score.band == band)
    return [(layer, score) for layer in summary_layers(score)]


def load_score_layers(
    store: str | Path,
    project: QgsProject | None = None,
    iface=None,
    *,
    labels: tuple | None = None,
    slice_source: SliceSource | None = None,
    **details,
):
    """Load a finished scores Zarr into a project (scripts, the console); returns the layers.

    `labels` are (years, bands), read from the store when not given.
    """
    project = project or QgsProject.instance()
    years, bands = labels or read_score_labels(store)
    from .summary_layers import place_summary_layer

    pairs = score_layer_pairs(store, years, bands, slice_source, **details)
    for layer, score in pairs:
        project.addMapLayer(layer, False)
        show_score_layer(layer, score, project, iface)
    for layer, score in summary_pairs(pairs):
        project.addMapLayer(layer, False)
        place_summary_layer(project, layer, score)
    return [layer for layer, _ in pairs]


def scores_store_of(value, project: QgsProject | None = None) -> str | None:
    """The scores store behind a loaded score layer or group (the object, its id or name).

    None when `value` is none of them (e.g. a folder path, which the caller uses as it is).
    """
    from qgis.core import QgsMapLayer

    key = f"{PROPERTY}/store"
    if isinstance(value, QgsMapLayer):
        return value.customProperty(key) or None
    if isinstance(value, QgsLayerTreeGroup):
        stores = [n.layer().customProperty(key) for n in value.findLayers() if n.layer()]
        return value.customProperty(key) or next((s for s in stores if s), None)
    if not isinstance(value, str) or not value.strip() or Path(value).exists():
        return None
    project = project or QgsProject.instance()
    layers = [project.mapLayer(value)] if project.mapLayer(value) else []
    layers += project.mapLayersByName(value)
    for layer in layers:
        if layer.customProperty(key):
            return layer.customProperty(key)
    for group in project.layerTreeRoot().findGroups(True):
        if group.name() == value:
            return scores_store_of(group)
    return None


def is_temporary_output(path: str | Path) -> bool:
    """True for an output in Processing's temporary folder (removed when QGIS exits)."""
    from qgis.core import QgsProcessingUtils

    temporary = Path(QgsProcessingUtils.tempFolder()).absolute()
    return Path(path).absolute().is_relative_to(temporary)


def temporary_run_name(bbox, when=None) -> str:
    """A temporary output's group name: its extent and the time of the run."""
    import datetime

    when = when or datetime.datetime.now()
    xmin, ymin, xmax, ymax = bbox
    return f"Change {xmin:.4f}, {ymin:.4f} – {xmax:.4f}, {ymax:.4f} at {when:%H:%M:%S}"
