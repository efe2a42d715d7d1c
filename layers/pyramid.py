"""Score layers from a multiscale pyramid that stay fast when zoomed out.

GDAL's Zarr driver knows nothing of the multiscales convention, so QGIS would read level 0 at
full resolution for every view. Each (band, year) slice therefore gets a small GDAL VRT whose
raster is the slice of level /0 and whose overviews are the same slice of /1 ... /N: GDAL (and
so QGIS) then reads the coarsest level that is fine enough for the view. The layers are
styled, grouped and animated by layers/score_layers.py, like the layers of a scores Zarr.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from osgeo import osr
from qgis.core import QgsProcessingContext, QgsProject

from .post_processor import register_score_layers
from .score_layers import load_score_layers
from .sources import safe_file_name, vrt_folder


def pyramid_labels(group) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The years and band labels of the pyramid's finest level."""
    finest = group.attrs["multiscales"]["layout"][0]["asset"]
    years = tuple(int(y) for y in group[f"{finest}/time"][...])
    bands = tuple(str(b) for b in group[f"{finest}/band"][...])
    return years, bands


def write_slice_vrts(pyramid: str | Path, variable: str = "scores") -> dict[tuple[int, int], str]:
    """One VRT per (time index, band index) with the coarser levels as overviews; their paths."""
    import zarr  # the engine's dependency: imported when used, so the plugin loads without it

    pyramid = Path(pyramid).absolute()
    group = zarr.open_group(str(pyramid), mode="r")
    attrs = dict(group.attrs)
    levels = attrs["multiscales"]["layout"]
    finest = group[f"{levels[0]['asset']}/{variable}"]
    years, bands = pyramid_labels(group)
    srs_xml = _srs_element(attrs.get("proj:wkt2") or attrs.get("proj:code"))
    data_type = "Float64" if np.dtype(finest.dtype) == np.float64 else "Float32"
    folder = vrt_folder(pyramid)
    paths = {}
    for t, year in enumerate(years):
        for b, band in enumerate(bands):
            path = folder / f"{safe_file_name(band)}_{year}.vrt"
            path.write_text(
                _slice_vrt(pyramid, variable, levels, t, b, srs_xml, data_type, finest.chunks)
            )
            paths[(t, b)] = str(path)
    return paths


def _slice_vrt(pyramid, variable, levels, t, b, srs_xml, data_type, chunks) -> str:
    first = levels[0]
    ny, nx = first["spatial:shape"]
    a, rb, c, d, e, f = first["spatial:transform"]
    block_y, block_x = chunks[2:]

    def source(level: dict, tag: str) -> str:
        uri = escape(f'ZARR:"{pyramid}":/{level["asset"]}/{variable}:{t}:{b}')
        level_y, level_x = level["spatial:shape"]
        return (
            f'    <{tag}>\n      <SourceFilename relativeToVRT="0">{uri}</SourceFilename>\n'
            "      <SourceBand>1</SourceBand>\n"
            + (
                f'      <SourceProperties RasterXSize="{level_x}" RasterYSize="{level_y}" '
                f'DataType="{data_type}" BlockXSize="{block_x}" BlockYSize="{block_y}"/>\n'
                f'      <SrcRect xOff="0" yOff="0" xSize="{nx}" ySize="{ny}"/>\n'
                f'      <DstRect xOff="0" yOff="0" xSize="{nx}" ySize="{ny}"/>\n'
                if tag == "SimpleSource"
                else ""
            )
            + f"    </{tag}>\n"
        )

    overviews = "".join(source(level, "Overview") for level in levels[1:])
    return (
        f'<VRTDataset rasterXSize="{nx}" rasterYSize="{ny}">\n{srs_xml}'
        f"  <GeoTransform>{c!r}, {a!r}, {rb!r}, {f!r}, {d!r}, {e!r}</GeoTransform>\n"
        f'  <VRTRasterBand dataType="{data_type}" band="1" '
        f'blockXSize="{block_x}" blockYSize="{block_y}">\n'
        "    <NoDataValue>nan</NoDataValue>\n"
        f"{source(first, 'SimpleSource')}{overviews}"
        "  </VRTRasterBand>\n</VRTDataset>\n"
    )


def _srs_element(crs: str | None) -> str:
    """The CRS in x/y (lon/lat) axis order: GDAL's Zarr slices otherwise swap it (PLATFORM.md)."""
    from ..core.grid import spatial_reference  # imports zarr_cm: only once the plugin runs

    srs = spatial_reference(crs) if crs else None
    if srs is None:
        return ""
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    mapping = ",".join(str(axis) for axis in srs.GetDataAxisToSRSAxisMapping())
    return f'  <SRS dataAxisToSRSAxisMapping="{mapping}">{escape(srs.ExportToWkt())}</SRS>\n'


def pyramid_slices(pyramid: str | Path, variable: str = "scores"):
    """The pyramid's years, bands and a slice source giving the VRT of (year index, band index)."""
    import zarr

    vrts = write_slice_vrts(pyramid, variable)
    years, bands = pyramid_labels(zarr.open_group(str(Path(pyramid).absolute()), mode="r"))
    return years, bands, lambda t, b: vrts[(t, b)]


def pyramid_details(pyramid, variable: str, details: dict) -> dict:
    """Layer details for a pyramid: its first frame is picked on its finest level."""
    import zarr

    group = zarr.open_group(str(Path(pyramid).absolute()), mode="r")
    finest = group.attrs["multiscales"]["layout"][0]["asset"]
    return {"scores_array": f"{finest}/{variable}", **details}


def register_pyramid_layers(
    pyramid, variable: str, context: QgsProcessingContext, **details
) -> int:
    """Ask Processing to load the pyramid's score layers when the run ends; returns how many."""
    if context.project() is None:
        return 0
    years, bands, source = pyramid_slices(pyramid, variable)
    return register_score_layers(
        pyramid, years, bands, context, source, **pyramid_details(pyramid, variable, details)
    )


def load_pyramid_layers(
    pyramid, variable="scores", project: QgsProject | None = None, iface=None, **details
):
    """Load a finished pyramid into a project (scripts, the console); returns the layers."""
    years, bands, source = pyramid_slices(pyramid, variable)
    return load_score_layers(
        pyramid,
        project,
        iface,
        labels=(years, bands),
        slice_source=source,
        **pyramid_details(pyramid, variable, details),
    )
