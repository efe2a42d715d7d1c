"""Processing algorithm "Load change scores": a scores Zarr or pyramid that exists, as layers.

Any Zarr with a (time, band, y, x) variable loads styled, named and on the temporal controller
like a fresh run's output: the plugin's own scores and pyramids, or a store another tool wrote
(variable `scores` or `embeddings`, x/y pixel-centre coordinates, a CRS as GDAL's `_CRS`, a
`proj:code` attribute or a CF `spatial_ref` variable).
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessingException,
    QgsProcessingOutputString,
    QgsProcessingParameterFile,
    QgsProcessingParameterString,
)

from ..layers.post_processor import register_score_layers
from ..layers.pyramid import pyramid_labels, register_pyramid_layers
from ..layers.sources import zarr_format_for_layers
from .embedding_change_algorithm import EmbeddingChangeAlgorithm

VARIABLES = ("scores", "embeddings")  # tried in this order when VARIABLE is empty


class LoadScoresAlgorithm(EmbeddingChangeAlgorithm):
    """Loads a finished scores store or pyramid as score layers, as after a run."""

    INPUT = "INPUT"
    VARIABLE = "VARIABLE"
    LAYERS = "LAYERS"

    def name(self):
        return "loadscores"

    def displayName(self):
        return "Load change scores"

    def tags(self):
        return ["load", "open", "zarr", "scores", "pyramid", "multiscales", "temporal"]

    def shortHelpString(self):
        return (
            "Loads a scores Zarr written earlier (by Change scores, Build multiscale pyramid or "
            "another tool) as the layers a run gives: a group per score, the LOO medoid z-score "
            "shown first, each year one frame of the temporal controller, starting at the year "
            "with the most change.\n\n"
            "Input: the Zarr folder (or an s3:// or https:// URL) of a (time, band, y, x) "
            "variable: <b>scores</b>, <b>embeddings</b>, or the one given as Variable. A "
            "multiscale pyramid loads with its coarser levels as overviews. QGIS 3.22 "
            "(GDAL 3.6) reads Zarr v2 only."
        )

    def initAlgorithm(self, config=None):
        self.addParameter(
            QgsProcessingParameterFile(
                self.INPUT,
                "Scores or pyramid (Zarr folder or URL)",
                behavior=QgsProcessingParameterFile.Folder,
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.VARIABLE, "Variable (empty: scores or embeddings)", optional=True
            )
        )
        self.addOutput(QgsProcessingOutputString(self.LAYERS, "Layers loaded"))

    def processAlgorithm(self, parameters, context, feedback):
        self.require_dependencies()
        source = self.parameterAsFile(parameters, self.INPUT, context).strip()
        variable = self.parameterAsString(parameters, self.VARIABLE, context).strip()
        if not source:
            raise QgsProcessingException("Give the scores Zarr folder or URL (INPUT).")
        feedback.pushInfo(f"Opening {source} …")
        layout = read_layout(source, variable)
        feedback.pushInfo(
            f"{layout.kind} {layout.variable}: years {layout.years[0]}–{layout.years[-1]}, "
            f"bands {', '.join(layout.bands)}."
        )
        try:
            if layout.kind == "Pyramid":
                loaded = register_pyramid_layers(
                    layout.path, layout.variable, context, load_check=self.id()
                )
            else:
                loaded = register_score_layers(
                    layout.path,
                    layout.years,
                    layout.bands,
                    context,
                    layout.slice_source,
                    load_check=self.id(),
                    scores_array=layout.variable,
                    crs=layout.crs,
                )
        except ValueError as exc:
            raise QgsProcessingException(
                f"{exc}. {gdal_hint(layout.zarr_format)}".replace("..", ".")
            ) from exc
        feedback.pushInfo(f"{loaded} score layers will load into the project.")
        return {self.LAYERS: loaded}


class StoreLayout:
    """What a scores Zarr holds and how GDAL reads its slices."""

    def __init__(self, path, kind, variable, years, bands, zarr_format, crs):
        self.path, self.kind, self.variable = path, kind, variable
        self.years, self.bands = years, bands
        self.zarr_format, self.crs = zarr_format, crs

    def slice_source(self, t: int, b: int) -> str:
        return f'ZARR:"{gdal_path(self.path)}":/{self.variable}:{t}:{b}'


def read_layout(source: str, variable: str = "") -> StoreLayout:
    """The store's kind (scores or pyramid), variable, years, band labels and CRS."""
    import zarr

    path = source if "://" in source else str(Path(source).absolute())
    try:
        group = zarr.open_group(path, mode="r")
    except Exception as exc:  # noqa: BLE001 (zarr raises many kinds; the message says it)
        raise QgsProcessingException(f"Cannot open {source} as a Zarr group: {exc}") from exc
    attrs = dict(group.attrs)
    if "multiscales" in attrs:
        finest = attrs["multiscales"]["layout"][0]["asset"]
        years, bands = pyramid_labels(group)
        chosen = variable or _find_variable(group[finest], source)
        return StoreLayout(path, "Pyramid", chosen, years, bands, _format(group), None)
    chosen = variable or _find_variable(group, source)
    array = group[chosen]
    dims = array.attrs.get("_ARRAY_DIMENSIONS") or getattr(array.metadata, "dimension_names", None)
    dims = list(dims or [])
    if array.ndim != 4 or (dims and dims[:2] != ["time", "band"]):
        raise QgsProcessingException(
            f"{source}/{chosen} has dims {dims or array.shape}; a scores store has "
            "(time, band, y, x)."
        )
    years = [_year(t) for t in group["time"][...]] if "time" in group else None
    bands = [str(b) for b in group["band"][...]] if "band" in group else None
    years = years or list(range(1, array.shape[0] + 1))
    bands = bands or [f"band {b + 1}" for b in range(array.shape[1])]
    return StoreLayout(path, "Scores", chosen, years, bands, _format(group), _crs(group, attrs))


def _find_variable(group, source: str) -> str:
    names = [name for name in VARIABLES if name in group]
    if not names:
        four_d = [name for name, array in group.arrays() if array.ndim == 4]
        if len(four_d) == 1:
            return four_d[0]
        raise QgsProcessingException(
            f"{source} has no variable {' or '.join(VARIABLES)}; give the variable of its "
            "(time, band, y, x) array."
        )
    return names[0]


def _year(value) -> int:
    """A time coordinate value as its year: an integer year or a datetime64."""
    import numpy as np

    value = np.asarray(value)
    if np.issubdtype(value.dtype, np.datetime64):
        return int(value.astype("datetime64[Y]").astype(int)) + 1970
    return int(value)


def _format(group) -> int:
    return int(group.metadata.zarr_format)


def _crs(group, attrs: dict) -> str | None:
    """The CRS a store declares: proj:code / proj:wkt2 / crs attributes, or spatial_ref."""
    for key in ("proj:wkt2", "proj:code", "crs"):
        if isinstance(attrs.get(key), str):
            return attrs[key]
    if "spatial_ref" in group:
        ref = dict(group["spatial_ref"].attrs)
        return ref.get("crs_wkt") or ref.get("spatial_ref")
    return None


def gdal_path(path: str) -> str:
    """A store URL as GDAL's virtual file system names it (s3:// -> /vsis3/, http -> /vsicurl/)."""
    if path.startswith("s3://"):
        return "/vsis3/" + path[len("s3://") :].rstrip("/")
    if path.startswith(("http://", "https://")):
        return "/vsicurl/" + path.rstrip("/")
    return path


def gdal_hint(zarr_format: int) -> str:
    if zarr_format == 3 and zarr_format_for_layers() == 2:
        return (
            "This QGIS's GDAL reads Zarr v2 only: write the store with zarr_format=2 "
            "(xarray: to_zarr(..., zarr_format=2)) or use QGIS 3.40 or newer."
        )
    return "Check that the store has x and y coordinates GDAL can read."
