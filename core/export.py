"""Export a scores output as Cloud-Optimized GeoTIFFs that any GIS reads.

One file per score, one band per year (band description = the year), float32, no data NaN,
DEFLATE-compressed, with overviews. GDAL's COG driver only copies a finished dataset, so each
score first goes to a plain tiled GeoTIFF written one row of tiles at a time (bounded memory),
which the COG copy then reads tile by tile; the plain file is deleted afterwards.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from osgeo import gdal

from .errors import CancelledError, OutputError
from .grid import spatial_reference
from .scores_output import gdal_geotransform, open_scores

STRIP_ROWS = 256
# Overviews keep each 2 x 2 block's highest score, so a small hotspot stays visible zoomed out.
# GDAL 3.6 has no "max" overview resampling: the engine computes them (max_overviews).
OVERVIEW_TILE = 256


def score_file_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label) + ".tif"


def export_scores(
    scores,
    folder,
    *,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    strip_rows: int = STRIP_ROWS,
) -> list[str]:
    """Write <folder>/<score label>.tif for every score of the output; returns the paths.

    The folder is created if needed; files of the same names in it are replaced.
    """
    source = open_scores(scores)
    folder = Path(folder).absolute()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create the output folder {folder}: {exc}") from exc
    years = [int(t) for t in source.times]
    ny, nx = source.grid.shape
    strips = [(r, min(r + strip_rows, ny)) for r in range(0, ny, strip_rows)]
    steps = len(source.bands) * (len(strips) + 1)
    done = 0

    def tick(fraction_of_step: float = 1.0) -> None:
        if cancel is not None and cancel():
            raise CancelledError("Export change scores was cancelled.")
        if progress is not None:
            progress(min((done + fraction_of_step) / steps, 1.0))

    written = []
    for b, label in enumerate(source.bands):
        path = folder / score_file_name(label)
        plain = folder / f".{path.stem}.partial.tif"
        try:
            _write_plain(plain, source, b, years, strips, lambda: tick(0))
            done += len(strips)

            def copied(fraction, message, data):  # noqa: ARG001 (GDAL's callback signature)
                try:
                    tick(fraction)
                except CancelledError:
                    return 0
                return 1

            _write_cog(plain, path, copied)
            if cancel is not None and cancel():
                raise CancelledError("Export change scores was cancelled.")
            done += 1
        except BaseException:
            if path.exists():
                path.unlink()
            raise
        finally:
            if plain.exists():
                plain.unlink()
        written.append(str(path))
    if progress is not None:
        progress(1.0)
    return written


def _write_plain(path: Path, source, b: int, years, strips, tick) -> None:
    ny, nx = source.grid.shape
    ds = gdal.GetDriverByName("GTiff").Create(
        str(path), nx, ny, len(years), gdal.GDT_Float32, ["TILED=YES", "BIGTIFF=IF_SAFER"]
    )
    if ds is None:
        raise OutputError(f"Cannot write {path}: {gdal.GetLastErrorMsg()}")
    ds.SetGeoTransform(gdal_geotransform(source.grid))
    srs = spatial_reference(source.grid.crs) if source.grid.crs else None
    if srs is not None:
        ds.SetSpatialRef(srs)
    for t, year in enumerate(years):
        band = ds.GetRasterBand(t + 1)
        band.SetNoDataValue(math.nan)
        band.SetDescription(str(year))
        band.SetMetadataItem("YEAR", str(year))
    ds.SetMetadataItem("SCORE", str(source.bands[b]))
    for r0, r1 in strips:
        tick()
        for t in range(len(years)):
            values = np.asarray(source.array[t, b, r0:r1, :], dtype=np.float32)
            ds.GetRasterBand(t + 1).WriteArray(values, 0, r0)
    max_overviews(ds, strips[0][1] - strips[0][0] if strips else STRIP_ROWS)
    ds.FlushCache()
    ds = None


def overview_factors(shape) -> list[int]:
    """2, 4, 8, ... until the coarsest level fits one 256 x 256 tile."""
    factors, factor = [], 2
    while max(shape) > OVERVIEW_TILE * factor // 2:
        factors.append(factor)
        factor *= 2
    return factors


def max_overviews(ds, strip_rows: int) -> None:
    """Overviews of every band in which each pixel is the highest valid value of its 2 x 2
    block of the level below (NaN only if all four are); one strip at a time."""
    factors = overview_factors((ds.RasterYSize, ds.RasterXSize))
    if not factors:
        return
    ds.BuildOverviews("NEAREST", factors)  # makes the levels; their values are replaced below
    for number in range(1, ds.RasterCount + 1):
        base = ds.GetRasterBand(number)
        finer = base
        for level in range(base.GetOverviewCount()):
            coarser = base.GetOverview(level)
            for r0 in range(0, coarser.YSize, strip_rows):
                r1 = min(r0 + strip_rows, coarser.YSize)
                rows = min(2 * r1, finer.YSize) - 2 * r0
                values = finer.ReadAsArray(0, 2 * r0, finer.XSize, rows)
                coarser.WriteArray(block_max(values, (r1 - r0, coarser.XSize)), 0, r0)
            coarser.FlushCache()
            finer = coarser


def block_max(values: np.ndarray, shape) -> np.ndarray:
    """Highest non-NaN value of each 2 x 2 block (edge blocks may be smaller); NaN if none."""
    h, w = shape
    padded = np.full((2 * h, 2 * w), np.nan, np.float32)
    padded[: values.shape[0], : values.shape[1]] = values
    quarters = (padded[0::2, 0::2], padded[0::2, 1::2], padded[1::2, 0::2], padded[1::2, 1::2])
    return functools.reduce(np.fmax, quarters)


def _write_cog(plain: Path, path: Path, callback) -> None:
    options = [
        "COMPRESS=DEFLATE",
        "PREDICTOR=YES",
        "BLOCKSIZE=256",
        "OVERVIEWS=FORCE_USE_EXISTING",
        "BIGTIFF=IF_SAFER",
    ]
    out = gdal.Translate(
        str(path), str(plain), format="COG", creationOptions=options, callback=callback
    )
    if out is None:
        raise OutputError(f"GDAL could not write the Cloud-Optimized GeoTIFF {path}.")
    out = None
