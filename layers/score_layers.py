"""Score layers of a scores Zarr (time, band, y, x): built, styled, placed and animated.

A score band becomes a group: on QGIS < 3.38 one layer per year, each reading its 2-D slice
straight from the store (`ZARR:"path":/scores:<t>:<band>`, no copy); from 3.38 on one layer
whose bands are the years (a small VRT over the same slices). How they look is layers/styles.py,
how they move in time layers/temporal.py, where they sit layers/layer_tree.py.

After a Processing run the layers come in through layers/post_processor.py (the framework loads
them on the main thread); scripts load a finished store with `load_score_layers`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path

from osgeo import gdal
from qgis.core import QgsProject, QgsRasterLayer

from .layer_tree import place_in_layer_tree
from .score_slice import PROPERTY, ScoreSlice, default_band
from .sources import raster_layer, score_layer_uri, write_year_stack
from .styles import score_high, set_score_renderer
from .temporal import PER_BAND_TEMPORAL, animate_years, set_score_temporal

SliceSource = Callable[[int, int], str]  # (year index, band index) -> GDAL data source


def read_score_labels(store: str | Path, consolidated=None) -> tuple[list[int], list[str]]:
    """The years and band labels of a scores Zarr, as written by the engine (consolidated=False:
    a run's partial folder, read with zarr alone: no consolidated metadata yet, and fast)."""
    if consolidated is False:
        import zarr

        group = zarr.open_group(str(store), mode="r")
        return [int(y) for y in group["time"][...]], [str(b) for b in group["band"][...]]
    import xarray as xr

    with xr.open_zarr(store, consolidated=consolidated) as scores:
        years = [int(y) for y in scores["time"].values]
        bands = [str(b) for b in scores["band"].values]
    return years, bands


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
        layers = [raster_layer(source(t, b), str(year)) for t, year in enumerate(years)]
        bad = [layer.source() for layer in layers if not layer.isValid()]
        if bad:
            raise ValueError(f"GDAL {gdal.__version__} cannot read {bad[0]}")
        high = score_high(band, layers)
        for layer, year in zip(layers, years, strict=True):
            result.append((layer, ScoreSlice(store, bands, band, years, year, high)))
    return _with_run_details(result, **details)


def score_year_stack_layers(
    store: str | Path,
    years,
    bands,
    slice_source: SliceSource | None = None,
    vrt_folder=None,
    **details,
) -> list[tuple[QgsRasterLayer, ScoreSlice]]:
    """One raster layer per score band whose bands 1..T are the years (QGIS >= 3.38); their
    VRTs go in `vrt_folder` (default <store>/vrt)."""
    store = str(Path(store).absolute())
    source = slice_source or functools.partial(score_layer_uri, store)
    years, bands = tuple(int(y) for y in years), tuple(str(b) for b in bands)
    result = []
    for b, band in enumerate(bands):
        uris = [source(t, b) for t in range(len(years))]
        path = write_year_stack(store, band, years, uris, vrt_folder)
        layer = raster_layer(path, band)
        if not layer.isValid() or layer.bandCount() != len(years):
            raise ValueError(f"GDAL {gdal.__version__} cannot read {source(0, b)}")
        score = ScoreSlice(store, bands, band, years, None, score_high(band, [layer]))
        result.append((layer, score))
    return _with_run_details(result, **details)


def score_layer_pairs(
    store: str | Path,
    years,
    bands,
    slice_source: SliceSource | None = None,
    vrt_folder=None,
    **details,
) -> list[tuple[QgsRasterLayer, ScoreSlice]]:
    """The layers this QGIS animates best: one per score from 3.38 on, else one per year.

    details: run_name (the run's group name; default the store's folder name), scores_array
    (the array whose default score picks the first frame; default "scores"), crs (for
    stores whose CRS GDAL does not find). vrt_folder: where the year stacks' VRTs go.
    """
    if PER_BAND_TEMPORAL:
        return score_year_stack_layers(store, years, bands, slice_source, vrt_folder, **details)
    return score_slice_layers(store, years, bands, slice_source, **details)


def _with_run_details(
    pairs,
    run_name: str | None = None,
    scores_array: str = "scores",
    crs: str | None = None,
    focus_window: tuple[slice, slice] | None = None,
):
    """The pairs with the run's group name and the year of most change (of the default score,
    within `focus_window` (rows, columns) if given); `crs` (any text QGIS reads) for layers
    whose source declares none GDAL understands."""
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
        b = first.bands.index(band)
        shares = share_above_per_year(first.store, b, threshold, scores_array, focus_window)
        focus = first.years[max(range(len(shares)), key=lambda t: (shares[t], -t))]
    except Exception:  # noqa: BLE001 (a store we cannot reduce still loads, from its first year)
        focus = first.years[0]
    name = run_name or Path(first.store).name
    return [
        (layer, dataclasses.replace(score, run_name=name, focus_year=focus))
        for layer, score in pairs
    ]


def share_above_per_year(
    store: str, band_index: int, threshold: float, array="scores", window=None
):
    """Per year, the share of a score's valid pixels above `threshold` (0 for an empty year),
    over the whole grid or the (rows, columns) slices `window`.

    With the run's summary (core/summary.py) it reads two 2-D arrays instead of every year:
    pixels are counted in the year of their largest score, if that passes the threshold.
    """
    import dask.array as da
    import numpy as np
    import zarr

    rows, cols = window or (slice(None), slice(None))
    group = zarr.open_group(store, mode="r")
    if array == "scores" and "year_of_largest" in group and "largest_score" in group:
        years = np.asarray(group["time"][...], dtype=np.float32)
        largest = da.from_zarr(group["largest_score"])[band_index, rows, cols]
        year = da.from_zarr(group["year_of_largest"])[band_index, rows, cols]
        counts = [((year == y) & (largest > threshold)).sum() for y in years]
        valid = (~da.isnan(largest)).sum()
        *counts, valid = da.compute(*counts, valid)
        return list(np.asarray(counts) / max(int(valid), 1))
    values = da.from_zarr(group[array])[:, band_index, rows, cols]
    above, valid = da.compute(
        (values > threshold).sum(axis=(1, 2)), (~da.isnan(values)).sum(axis=(1, 2))
    )
    return list(above / np.maximum(valid, 1))


def style_score_layer(layer: QgsRasterLayer, score: ScoreSlice) -> None:
    """Colour ramp, name, temporal range(s) and the properties that say what the layer is."""
    set_score_renderer(layer, score)
    set_score_temporal(layer, score)
    layer.setCustomProperty(f"{PROPERTY}/store", score.store)
    layer.setCustomProperty(f"{PROPERTY}/band", score.band)
    layer.triggerRepaint()


def show_score_layer(layer: QgsRasterLayer, score: ScoreSlice, project: QgsProject, iface) -> None:
    """Everything a loaded score layer needs: style, time range, place in the tree, animation."""
    style_score_layer(layer, score)
    place_in_layer_tree(project, layer, score)
    animate_years(project, score.years, iface, score.focus_year)


def summary_pairs(pairs) -> list[tuple[QgsRasterLayer, ScoreSlice]]:
    """ "Year of largest change" and "Largest change" of the default score, if the store has a
    summary (layers/summary.py)."""
    from .summary import summary_layers

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
    from .summary import place_summary_layer

    project = project or QgsProject.instance()
    years, bands = labels or read_score_labels(store)
    pairs = score_layer_pairs(store, years, bands, slice_source, **details)
    for layer, score in pairs:
        style_score_layer(layer, score)
        project.addMapLayer(layer, False)
        place_in_layer_tree(project, layer, score)
    if pairs:  # once for all: each call moves the controller and redraws the map
        animate_years(project, pairs[0][1].years, iface, pairs[0][1].focus_year)
    for layer, score in summary_pairs(pairs):
        project.addMapLayer(layer, False)
        place_summary_layer(project, layer, score)
    return [layer for layer, _ in pairs]
