"""When things changed, as two layers per run: "Year of largest change" and "Largest change".

Both show the default score (LOO medoid z-score when computed) from the summary the engine
writes beside the scores (core/summary.py). "Largest change" reads `largest_score` in place with
the score's ramp. "Year of largest change" is paletted, one colour per year with the years in the
legend (from QGIS 3.38 on, a frame of the Temporal Controller shows the pixels of its year); it
is transparent where the largest score stays at or under the score's threshold, so it
is a small GeoTIFF (years as int16, 0 = none, with overviews) written next to the store's VRTs:
GDAL has no mask for "another array below a value".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from osgeo import gdal
from qgis.core import (
    QgsLayerTreeGroup,
    QgsPalettedRasterRenderer,
    QgsProject,
    QgsRasterLayer,
)
from qgis.PyQt.QtGui import QColor

from .layer_tree import run_group_of
from .sources import safe_file_name, vrt_folder
from .styles import set_score_renderer
from .temporal import set_year_values_temporal

LARGEST = "largest_score"  # core.summary's names (a test keeps them equal)
YEAR_OF_LARGEST = "year_of_largest"
YEAR_TITLE = "Year of largest change"
LARGEST_TITLE = "Largest change"
# Viridis stops: early years dark blue, late years yellow; readable in print and for most
# colour-blind readers.
VIRIDIS = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))


def has_summary(store: str) -> bool:
    import zarr

    try:
        group = zarr.open_group(store, mode="r")
    except Exception:  # noqa: BLE001 (no group: no summary)
        return False
    return LARGEST in group and YEAR_OF_LARGEST in group


def year_colours(years) -> dict[int, QColor]:
    """One colour per year along the viridis ramp."""
    years = list(years)
    colours = {}
    for i, year in enumerate(years):
        position = i / max(len(years) - 1, 1) * (len(VIRIDIS) - 1)
        low = int(position)
        high, share = min(low + 1, len(VIRIDIS) - 1), position - int(position)
        rgb = [round(a + (b - a) * share) for a, b in zip(VIRIDIS[low], VIRIDIS[high], strict=True)]
        colours[year] = QColor(*rgb)
    return colours


def summary_layers(score) -> list[QgsRasterLayer]:
    """The two summary layers of the score's store for `score.band` ([] without a summary)."""
    if not has_summary(score.store):
        return []
    b = score.band_index
    largest = QgsRasterLayer(f'ZARR:"{score.store}":/{LARGEST}:{b}', LARGEST_TITLE, "gdal")
    if not largest.isValid():
        return []
    set_score_renderer(largest, score)
    year = QgsRasterLayer(masked_year_file(score), YEAR_TITLE, "gdal")
    year.setRenderer(year_renderer(year, score.years))
    set_year_values_temporal(year, score.years)
    for layer in (largest, year):
        layer.setCustomProperty("embedding_change/store", score.store)
        layer.setCustomProperty("embedding_change/band", score.band)
        layer.setCustomProperty("embedding_change/summary", True)
    return [year, largest]


def year_renderer(layer: QgsRasterLayer, years) -> QgsPalettedRasterRenderer:
    classes = [
        QgsPalettedRasterRenderer.Class(year, colour, str(year))
        for year, colour in year_colours(years).items()
    ]
    return QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes)


def masked_year_file(score) -> str:
    """year_of_largest where largest_score > the threshold, else 0 (no data), as a GeoTIFF."""
    import zarr

    group = zarr.open_group(score.store, mode="r")
    b = score.band_index
    largest = group[LARGEST][b]
    year = group[YEAR_OF_LARGEST][b]
    with np.errstate(invalid="ignore"):
        shown = np.isfinite(year) & (largest > score.threshold)
    years = np.where(shown, year, 0).astype(np.int16)
    source = gdal.Open(f'ZARR:"{score.store}":/{LARGEST}:{b}')
    path = vrt_folder(Path(score.store)) / f"{safe_file_name(score.band)}_{YEAR_OF_LARGEST}.tif"
    driver = gdal.GetDriverByName("GTiff")
    out = driver.Create(
        str(path),
        years.shape[1],
        years.shape[0],
        1,
        gdal.GDT_Int16,
        ["COMPRESS=DEFLATE", "TILED=YES"],
    )
    out.SetGeoTransform(source.GetGeoTransform())
    if source.GetSpatialRef() is not None:
        out.SetSpatialRef(source.GetSpatialRef())
    band = out.GetRasterBand(1)
    band.SetNoDataValue(0)
    band.WriteArray(years)
    levels = [2**k for k in range(1, 12) if max(years.shape) // 2**k >= 128]
    if levels:
        out.BuildOverviews("NEAREST", levels)
    out = None
    return str(path)


def place_summary_layer(project: QgsProject, layer: QgsRasterLayer, score) -> None:
    """In the run's group, a group "When it changed: <score>" after the scores, not shown at
    first (the run's group shows one child at a time: the default score)."""
    root = project.layerTreeRoot()
    parent = run_group_of(root, score)
    group = next(
        (g for g in parent.findGroups() if g.customProperty("embedding_change/summary")), None
    )
    if group is None:
        group = parent.addGroup(f"When it changed: {score.title}")
        group.setCustomProperty("embedding_change/summary", True)
        group.setCustomProperty("embedding_change/rank", 10**5)
        group.setItemVisibilityChecked(False)
    node = root.findLayer(layer.id())
    order = [YEAR_TITLE, LARGEST_TITLE]
    position = sum(
        order.index(n.name()) < order.index(layer.name())
        for n in group.findLayers()
        if n.name() in order
    )
    if node is None:
        node = group.insertLayer(position, layer)
    elif node.parent() is not group:
        old_parent, clone = node.parent(), node.clone()
        group.insertChildNode(position, clone)
        old_parent.removeChildNode(node)
        empty = isinstance(old_parent, QgsLayerTreeGroup) and not old_parent.children()
        if empty and old_parent not in (root, parent) and old_parent.parent() is not None:
            old_parent.parent().removeChildNode(old_parent)  # Processing's results group
        node = clone
    node.setItemVisibilityChecked(True)
