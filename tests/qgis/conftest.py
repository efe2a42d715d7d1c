"""QGIS fixtures: the provider, a canvas with a temporal controller, small scores stores."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from qgis.core import QgsApplication, QgsProject, QgsTemporalNavigationObject

ALGORITHM = "embeddingchange:changescores"
GSD = 8.983111749910169e-05
ZSCORE_BANDS = (
    "difference_alpha_earth_cosine_distance_robust_time_zscore",
    "loo_medoid_alpha_earth_cosine_distance_robust_time_zscore",
)


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


@pytest.fixture
def project(qgis_new_project):
    """An empty project; its layers are removed afterwards (QGIS crashes at exit otherwise)."""
    yield qgis_new_project
    QgsProject.instance().clear()


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
        return (
            self.x[0] - GSD / 2,
            self.y[-1] - GSD / 2,
            self.x[-1] + GSD / 2,
            self.y[0] + GSD / 2,
        )


def write_scores_store(path, bands=ZSCORE_BANDS, years=range(2017, 2026), shape=(40, 50), seed=0):
    """A small scores(time, band, y, x) float32 Zarr v2, as the engine writes it for GDAL 3.6.

    Ordinary scores are noise in [-1.5, 1.5]; year index 3 has 9.0 in rows 10..20, cols 5..15;
    the first year of the first band is NaN (difference has no previous year).
    """
    import xarray as xr
    from osgeo import osr

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
        coords={"time": years, "band": list(bands), "x": x, "y": y},
        attrs={"proj:code": "EPSG:4326"},
    )
    data["scores"].attrs["_CRS"] = {"wkt": srs.ExportToWkt()}
    data.to_zarr(
        path,
        zarr_format=2,
        mode="w-",
        consolidated=True,
        encoding={"scores": {"chunks": (1, 1, 256, 256), "_FillValue": np.nan}},
    )
    return ScoresStore(Path(path), [int(t) for t in years], list(bands), scores, x, y)


def placed_slice(layer, store: ScoresStore) -> tuple[int, int]:
    """Checks that a loaded score layer is valid and covers the store's box in its CRS; returns
    the (year index, band index) the layer says it shows."""
    assert layer.isValid()
    assert layer.crs().authid() == "EPSG:4326"
    extent = layer.extent()
    corners = (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
    assert corners == pytest.approx(store.bbox, abs=1e-9)
    t = store.years.index(int(layer.customProperty("embedding_change/year")))
    b = store.bands.index(layer.customProperty("embedding_change/band"))
    return t, b


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


def level_values(path, level: int) -> np.ndarray:
    """The scores of one pyramid level, read with xarray."""
    import xarray as xr

    with xr.open_zarr(path, group=str(level)) as ds:
        return ds["scores"].values
