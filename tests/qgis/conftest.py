"""QGIS fixtures: the provider, a canvas with a temporal controller, small scores stores, and
what a loaded score layer shows in either layout (a layer per year, or from QGIS 3.38 a layer
per score whose bands are the years)."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsLayerTreeModel,
    QgsProject,
    QgsRasterLayerTemporalProperties,
    QgsTemporalNavigationObject,
)
from qgis.gui import QgsLayerTreeView
from qgis.PyQt.QtWidgets import QApplication

ALGORITHM = "embeddingchange:changescores"
GSD = 8.983111749910169e-05
ZSCORE_BANDS = (
    "difference_alpha_earth_cosine_distance_robust_time_zscore",
    "loo_medoid_alpha_earth_cosine_distance_robust_time_zscore",
)
# QGIS 3.38 brought temporal ranges per raster band: from then on a score loads as one layer
# whose bands are the years, before it as one layer per year (layers/score_layers.py).
YEARS_AS_BANDS = Qgis.QGIS_VERSION_INT >= 33800


_PROVIDERS = []  # Python must keep registered providers alive (sip)


@pytest.fixture
def provider(qgis_processing):
    """The plugin's provider in the Processing registry, as the plugin registers it."""
    from embedding_change.provider.provider import EmbeddingChangeProvider

    registry = QgsApplication.processingRegistry()
    if registry.providerById("embeddingchange") is None:
        _PROVIDERS.append(EmbeddingChangeProvider())
        registry.addProvider(_PROVIDERS[-1])
    return registry.providerById("embeddingchange")


@pytest.fixture(scope="session")
def temporal_navigation(qgis_iface):
    """The canvas's temporal controller, a navigation object as in the QGIS desktop."""
    canvas = qgis_iface.mapCanvas()
    if not isinstance(canvas.temporalController(), QgsTemporalNavigationObject):
        navigation = QgsTemporalNavigationObject(canvas)
        canvas.setTemporalController(navigation)
    return canvas.temporalController()


def wait_for_background_tasks() -> None:
    """Handle events until the task manager has no task left, so that every result a task
    delivers to the main thread (layers, post-processing) has been delivered.

    QGIS 3.40 (not 3.22) runs a batch dialog's rows as tasks: their results arrive after the
    call that started them has returned."""
    manager = QgsApplication.taskManager()
    while manager.countActiveTasks():
        QApplication.processEvents()
    QApplication.processEvents()


@pytest.fixture
def project(qgis_new_project, qgis_iface, monkeypatch):
    """An empty project in a layer tree view, as in the desktop; its layers are removed
    afterwards (QGIS crashes at exit otherwise), once no background task can still add any.

    QGIS 3.44's Processing adds result layers through the window's layer tree view, which
    pytest-qgis's stand-in window lacks."""
    view = QgsLayerTreeView()
    view.setModel(QgsLayerTreeModel(QgsProject.instance().layerTreeRoot(), view))
    monkeypatch.setattr(qgis_iface, "layerTreeView", lambda: view, raising=False)
    yield qgis_new_project
    wait_for_background_tasks()
    QgsProject.instance().clear()
    view.deleteLater()


@dataclass
class ScoresStore:
    """A scores Zarr in the engine's layout and the values written to it."""

    path: Path
    years: list[int]
    bands: list[str]
    scores: np.ndarray  # (time, band, y, x)
    x: np.ndarray
    y: np.ndarray

    @property
    def bbox(self):
        half_x, half_y = (self.x[1] - self.x[0]) / 2, (self.y[0] - self.y[1]) / 2
        return (self.x[0] - half_x, self.y[-1] - half_y, self.x[-1] + half_x, self.y[0] + half_y)


def read_scores_store(path) -> ScoresStore:
    """A scores Zarr the engine wrote, with its values."""
    import xarray as xr

    with xr.open_zarr(path, consolidated=None) as ds:
        return ScoresStore(
            Path(path),
            [int(t) for t in ds["time"].values],
            [str(b) for b in ds["band"].values],
            ds["scores"].values,
            ds["x"].values,
            ds["y"].values,
        )


def write_scores_store(path, bands=ZSCORE_BANDS, years=range(2017, 2026), shape=(40, 50), seed=0):
    """A small scores(time, band, y, x) float32 Zarr as the engine writes it for the layers of
    this QGIS: v2 for GDAL < 3.11 (QGIS 3.22, 3.40), else v3.

    Ordinary scores are noise in [-1.5, 1.5]; year index 3 has 9.0 in rows 10..20, cols 5..15;
    the first year of the first band is NaN (difference has no previous year).
    """
    import xarray as xr
    from osgeo import osr

    from embedding_change.core.output import string_coordinate
    from embedding_change.layers.sources import zarr_format_for_layers

    zarr_format = zarr_format_for_layers()
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    years = np.array(list(years), dtype="int32")
    ny, nx = shape
    x = -105.3 + GSD * (np.arange(nx) + 0.5)
    y = 40.05 - GSD * (np.arange(ny) + 0.5)
    rng = np.random.default_rng(seed)
    noise = rng.normal(scale=0.5, size=(len(years), len(bands), ny, nx))
    scores = np.clip(noise, -1.5, 1.5).astype("float32")
    scores[3, :, 10:20, 5:15] = 9.0
    scores[0, 0] = np.nan
    data = xr.Dataset(
        {"scores": (("time", "band", "y", "x"), scores)},
        coords={
            "time": years,
            "band": string_coordinate(list(bands), zarr_format),
            "x": x,
            "y": y,
        },
        attrs={"proj:code": "EPSG:4326"},
    )
    data["scores"].attrs["_CRS"] = {"wkt": srs.ExportToWkt()}
    data.to_zarr(
        path,
        zarr_format=zarr_format,
        mode="w-",
        consolidated=True,
        encoding={"scores": {"chunks": (1, 1, 256, 256), "_FillValue": np.nan}},
    )
    return ScoresStore(Path(path), [int(t) for t in years], list(bands), scores, x, y)


def assert_consolidated_in_a_format_gdal_reads(path: Path) -> None:
    """The store is in the Zarr format this QGIS's GDAL reads (v2 before GDAL 3.11, else v3),
    with consolidated metadata."""
    from embedding_change.layers.sources import zarr_format_for_layers

    if zarr_format_for_layers() == 2:
        assert (path / ".zmetadata").is_file()
        assert not (path / "zarr.json").exists()
    else:
        metadata = json.loads((path / "zarr.json").read_text())
        assert metadata["zarr_format"] == 3
        assert metadata.get("consolidated_metadata") is not None


def score_layer_names(years) -> list[str]:
    """The layers of one score's group, in order, as the analyst sees them in the layer tree."""
    years = list(years)
    if YEARS_AS_BANDS:
        return [f"{years[0]}–{years[-1]}"]
    return [str(year) for year in years]


def band_years(layer) -> dict[int, int]:
    """{band number: year} of a loaded score layer, read from its temporal properties, which say
    what the temporal controller shows; every range must be one whole calendar year."""
    temporal = layer.temporalProperties()
    assert temporal.isActive()
    if YEARS_AS_BANDS:
        assert temporal.mode() == Qgis.RasterTemporalMode.FixedRangePerBand
        ranges = temporal.fixedRangePerBand()
        assert sorted(ranges) == list(range(1, layer.bandCount() + 1))
    else:
        assert temporal.mode() == QgsRasterLayerTemporalProperties.ModeFixedTemporalRange
        assert layer.bandCount() == 1
        ranges = {1: temporal.fixedTemporalRange()}
    years = {}
    for number, fixed in ranges.items():
        begin, end = fixed.begin(), fixed.end()
        assert _is_new_year(begin) and _is_new_year(end), (number, fixed)
        assert end.date().year() == begin.date().year() + 1, (number, fixed)
        years[number] = begin.date().year()
    return years


def _is_new_year(moment) -> bool:
    """Midnight at the start of 1 January."""
    date, time = moment.date(), moment.time()
    return (date.month(), date.day(), time.msecsSinceStartOfDay()) == (1, 1, 0)


def placed_slices(layer, store: ScoresStore) -> list[tuple[int, int, int]]:
    """Checks that a loaded score layer is valid and covers the store's box in its CRS; returns
    (band number, year index, band index) for each of its bands: which slice of the store the
    layer says each band shows."""
    assert layer.isValid()
    assert layer.crs().authid() == "EPSG:4326"
    extent = layer.extent()
    corners = (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
    assert corners == pytest.approx(store.bbox, abs=1e-9)
    b = store.bands.index(layer.customProperty("embedding_change/band"))
    return [(n, store.years.index(year), b) for n, year in sorted(band_years(layer).items())]


def band_values(layer, number: int = 1) -> np.ndarray:
    """A band of the layer over its whole extent as QGIS reads it, no data as NaN."""
    provider = layer.dataProvider()
    block = provider.block(number, layer.extent(), layer.width(), layer.height())
    values = np.frombuffer(bytes(block.data()), dtype=np.float32)
    return values.reshape(layer.height(), layer.width()).copy()


def assert_layers_show_the_store(layers, store: ScoresStore) -> None:
    """Every (year, score) slice of the store is shown by exactly one band of one layer, and
    that band reads exactly the slice's values."""
    shown = []
    for layer in layers:
        for number, t, b in placed_slices(layer, store):
            np.testing.assert_array_equal(band_values(layer, number), store.scores[t, b])
            shown.append((t, b))
    assert sorted(shown) == [
        (t, b) for t in range(len(store.years)) for b in range(len(store.bands))
    ]


def band_sources(layer) -> list[str]:
    """The GDAL data source each band of a score layer reads, in band order: the layer's own
    source, or from QGIS 3.38 the sources in its year-stack VRT."""
    if not YEARS_AS_BANDS:
        return [layer.source()]
    bands = ET.parse(layer.source()).getroot().iter("VRTRasterBand")
    return [band.find(".//SourceFilename").text for band in bands]


def years_drawn(layer, time_range) -> list[int]:
    """The years a score layer draws in a frame of the temporal controller: none when the
    frame misses its ranges, else the year of the band QGIS's renderer picks."""
    temporal = layer.temporalProperties()
    if not temporal.isVisibleInTemporalRange(time_range):
        return []
    number = temporal.bandForTemporalRange(layer, time_range) if YEARS_AS_BANDS else 1
    return [band_years(layer)[number]]


@pytest.fixture
def scores_store(tmp_path):
    return write_scores_store(tmp_path / "scores.zarr")


def store_extent(bbox, fraction=(0.0, 1.0, 0.0, 1.0), crs="EPSG:4326") -> str:
    """An EXTENT string for part of a (xmin, ymin, xmax, ymax) box: fractions of x then y."""
    xmin, ymin, xmax, ymax = bbox
    fx0, fx1, fy0, fy1 = fraction
    w, h = xmax - xmin, ymax - ymin
    return f"{xmin + fx0 * w!r},{xmin + fx1 * w!r},{ymin + fy0 * h!r},{ymin + fy1 * h!r} [{crs}]"


def block_max(values: np.ndarray) -> np.ndarray:
    """Each coarse pixel: the largest valid value of its 2 x 2 block (NaN if none), one by one."""
    *lead, ny, nx = values.shape
    result = np.full((*lead, math.ceil(ny / 2), math.ceil(nx / 2)), np.nan, np.float32)
    for index in np.ndindex(result.shape):
        *outer, i, j = index
        block = values[(*outer, slice(2 * i, 2 * i + 2), slice(2 * j, 2 * j + 2))]
        if not np.isnan(block).all():
            result[index] = np.nanmax(block)
    return result


def block_second_max(values: np.ndarray) -> np.ndarray:
    """Each coarse pixel: the second-largest valid value of its 2 x 2 block (the only one when
    one is valid, NaN if none), one by one."""
    *lead, ny, nx = values.shape
    result = np.full((*lead, math.ceil(ny / 2), math.ceil(nx / 2)), np.nan, np.float32)
    for index in np.ndindex(result.shape):
        *outer, i, j = index
        block = values[(*outer, slice(2 * i, 2 * i + 2), slice(2 * j, 2 * j + 2))].ravel()
        valid = np.sort(block[~np.isnan(block)])
        if valid.size:
            result[index] = valid[-2] if valid.size > 1 else valid[0]
    return result


def level_values(path, level: int) -> np.ndarray:
    """The scores of one pyramid level, read with xarray."""
    import xarray as xr

    with xr.open_zarr(path, group=str(level)) as ds:
        return ds["scores"].values
