"""Where score layers read their pixels: Zarr slices GDAL can open, and VRTs over them.

GDAL names a 2-D slice of the 4-D scores array ZARR:"store":/scores:<t>:<b>; VRTs stack the
years of a score as bands (QGIS >= 3.38) or give a pyramid slice its coarser levels as
overviews. VRTs go in <store>/vrt, which Zarr readers ignore (it is not a Zarr node).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from osgeo import gdal, osr
from qgis.core import QgsRasterLayer

SCORES_VARIABLE = "scores"
VRT_FOLDER = "vrt"


def zarr_format_for_layers() -> int:
    """The Zarr format this QGIS's GDAL can read: v2 before GDAL 3.11.

    GDAL 3.6 reads only v2; GDAL 3.10 (QGIS 3.40 on Debian 13) reads v3 only with the draft
    "endian" codec and fails on the "bytes" codec zarr-python 3 writes (renamed in GDAL 3.11).
    """
    return 3 if int(gdal.VersionInfo("VERSION_NUM")) >= 3110000 else 2


def score_layer_uri(store: str | Path, time_index: int, band_index: int) -> str:
    """GDAL's name for one 2-D slice of the 4-D scores array (the bare array path fails)."""
    return f'ZARR:"{Path(store).absolute()}":/{SCORES_VARIABLE}:{time_index}:{band_index}'


def vrt_folder(store: Path) -> Path:
    """<store>/vrt, or a temporary folder when the store is read-only."""
    folder = store / VRT_FOLDER
    try:
        folder.mkdir(exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix=f"{store.name}-vrt-"))


def safe_file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def write_year_stack(store: str, band: str, years, sources: list[str], folder=None) -> str:
    """A VRT with one band per year over the given slices (no copy); its path.

    It goes in `folder` if given, else where the pyramid VRTs go: <store>/vrt, or a temporary
    folder for a read-only store.
    """
    folder = Path(folder) if folder is not None else vrt_folder(Path(store))
    path = str(folder / f"{safe_file_name(band)}.vrt")
    stack = gdal.BuildVRT(path, sources, separate=True)
    if stack is None:
        raise ValueError(f"GDAL {gdal.__version__} cannot read {sources[0]}")
    srs = stack.GetSpatialRef()
    if srs is not None:
        # x/y (lon/lat) axis order, as the pyramid VRTs: GDAL tools misplace Zarr slices otherwise.
        srs = srs.Clone()
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        stack.SetSpatialRef(srs)
    for number, year in enumerate(years, start=1):
        stack.GetRasterBand(number).SetDescription(str(year))
    stack = None  # written on close
    return path


def raster_layer(uri: str, name: str) -> QgsRasterLayer:
    """A GDAL raster layer, quiet about slices that hold no data at all."""
    # A slice that is all no data (the first year of "difference") makes GDAL print
    # "Failed to compute statistics" while QGIS sets up its default renderer: expected, quiet.
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        return QgsRasterLayer(uri, name, "gdal")
    finally:
        gdal.PopErrorHandler()
