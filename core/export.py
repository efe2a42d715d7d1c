"""Export a scores output as Cloud-Optimized GeoTIFFs that any GIS reads.

One file per score, one band per year (band description = the year), float32, no data NaN,
DEFLATE-compressed, with overviews. GDAL's COG driver only copies a finished dataset, so each
score first goes to a plain tiled GeoTIFF written one row of tiles at a time (bounded memory),
which the COG copy then reads tile by tile; the plain file is deleted afterwards.

Outputs that hold the run's summary (core/summary.py) also give, per score, one single-band
file for each summary variable: <score>_largest_score.tif (overviews keep each block's highest
value, like the scores) and <score>_year_of_largest.tif (nearest-neighbour overviews, so a
coarse pixel holds a year one of its pixels has, not the latest one). Older outputs without
the summary export the score files only.
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
from .store import zarr_store
from .summary import LARGEST, SUMMARY, YEAR_OF_LARGEST

STRIP_ROWS = 256
# Overviews keep each 2 x 2 block's highest score, so a small hotspot stays visible zoomed out.
# GDAL 3.6 has no "max" overview resampling: the engine computes them (max_overviews).
OVERVIEW_TILE = 256


def score_file_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label) + ".tif"


def summary_file_name(label: str, variable: str) -> str:
    """<score>_largest_score.tif, <score>_year_of_largest.tif."""
    return f"{Path(score_file_name(label)).stem}_{variable}.tif"


def export_scores(
    scores,
    folder,
    *,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    strip_rows: int = STRIP_ROWS,
) -> list[str]:
    """Write <folder>/<score label>.tif for every score of the output, followed by
    <score label>_largest_score.tif and <score label>_year_of_largest.tif if the output has
    the run's summary; returns the paths.

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
    summary = _summary_arrays(source)
    steps = len(source.bands) * (len(strips) + 1) * (1 + len(summary))
    done = 0

    def tick(fraction_of_step: float = 1.0) -> None:
        if cancelled():
            raise CancelledError("Export change scores was cancelled.")
        if progress is not None:
            progress(min((done + fraction_of_step) / steps, 1.0))

    def copied(fraction, message, data):  # noqa: ARG001 (GDAL's callback signature)
        try:
            tick(fraction)
        except CancelledError:
            stopped.append(True)
            return 0
        return 1

    def cancelled() -> bool:
        return cancel is not None and cancel()

    stopped = []  # set when `copied` stopped a COG copy
    written = []
    for b, label in enumerate(source.bands):
        files = [
            (
                score_file_name(label),
                [(str(year), {"YEAR": str(year)}) for year in years],
                functools.partial(_read_scores, source.array, b, len(years)),
                max_overviews,
            )
        ]
        for variable, array in summary.items():
            files.append(
                (
                    summary_file_name(label, variable),
                    [(SUMMARY[variable], {"SUMMARY": variable})],
                    functools.partial(_read_summary, array, b),
                    nearest_overviews if variable == YEAR_OF_LARGEST else max_overviews,
                )
            )
        for name, layers, read, overviews in files:
            path = folder / name
            plain = folder / f".{path.stem}.partial.tif"
            try:
                _write_plain(plain, source, label, layers, read, overviews, strips, lambda: tick(0))
                done += len(strips)
                try:
                    _write_cog(plain, path, copied)
                except OutputError:
                    if stopped:  # the callback stopped the copy: not a GDAL failure
                        raise CancelledError("Export change scores was cancelled.") from None
                    raise
                if cancelled():
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


def _summary_arrays(source) -> dict:
    """{variable: zarr array (band, y, x)} of the output's summary; {} for an older output."""
    import zarr

    try:
        group = zarr.open_group(
            zarr_store(source.url, source.storage_options, retry=source.retry), mode="r"
        )
    except Exception:  # the scores opened, so this is a store without a group: no summary
        return {}
    if LARGEST not in group or YEAR_OF_LARGEST not in group:
        return {}
    arrays = {name: group[name] for name in (LARGEST, YEAR_OF_LARGEST)}
    expected = (len(source.bands), *source.grid.shape)
    for name, array in arrays.items():
        if tuple(array.shape) != expected:
            raise OutputError(
                f"{source.url}: {name} has shape {tuple(array.shape)}, not {expected} "
                "like the scores."
            )
    return arrays


def _read_scores(array, b: int, count: int, r0: int, r1: int):
    for t in range(count):
        yield np.asarray(array[t, b, r0:r1, :], dtype=np.float32)


def _read_summary(array, b: int, r0: int, r1: int):
    yield np.asarray(array[b, r0:r1, :], dtype=np.float32)


def _write_plain(path: Path, source, label, layers, read, overviews, strips, tick) -> None:
    """A tiled GeoTIFF with a band per (description, metadata) of `layers`; read(r0, r1)
    yields each band's rows r0..r1, strip by strip."""
    ny, nx = source.grid.shape
    ds = gdal.GetDriverByName("GTiff").Create(
        str(path), nx, ny, len(layers), gdal.GDT_Float32, ["TILED=YES", "BIGTIFF=IF_SAFER"]
    )
    if ds is None:
        raise OutputError(f"Cannot write {path}: {gdal.GetLastErrorMsg()}")
    ds.SetGeoTransform(gdal_geotransform(source.grid))
    srs = spatial_reference(source.grid.crs) if source.grid.crs else None
    if srs is not None:
        ds.SetSpatialRef(srs)
    for number, (description, metadata) in enumerate(layers, start=1):
        band = ds.GetRasterBand(number)
        band.SetNoDataValue(math.nan)
        band.SetDescription(description)
        for key, value in metadata.items():
            band.SetMetadataItem(key, value)
    ds.SetMetadataItem("SCORE", str(label))
    for r0, r1 in strips:
        tick()
        for number, values in enumerate(read(r0, r1), start=1):
            ds.GetRasterBand(number).WriteArray(values, 0, r0)
    overviews(ds, strips[0][1] - strips[0][0] if strips else STRIP_ROWS)
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


def nearest_overviews(ds, strip_rows: int) -> None:  # noqa: ARG001 (max_overviews' signature)
    """Overviews at the same levels as max_overviews, each pixel one of its block's values."""
    factors = overview_factors((ds.RasterYSize, ds.RasterXSize))
    if factors:
        ds.BuildOverviews("NEAREST", factors)


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
