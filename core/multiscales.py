"""Turn a (time, band, y, x) Zarr into a multiscale pyramid for fast zoomed-out viewing.

    from embedding_change.core import build_multiscales
    build_multiscales("scores.zarr", "scores_pyramid.zarr", resampling="max")

The output group holds levels /0 (the source values at full resolution) to /N, each built
from the level above (see pyramid_levels), and describes them with the zarr conventions
"multiscales", "spatial" and "proj" (attributes made by zarr-cm), consolidated so that
`xarray.open_datatree(path, engine="zarr")` reads it in one request. Levels are written in
strips of tiles, so memory stays bounded whatever the size; the run writes into a hidden
sibling folder and renames it at the end, so a failed or cancelled run leaves no output.
"""

from __future__ import annotations

import os
import shutil
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr
import zarr
import zarr_cm

from .errors import CancelledError, OutputError, ParameterError
from .grid import Grid
from .pyramid_levels import RESAMPLING_METHODS, halve, level_grid, level_shapes
from .store import EmbeddingStore, open_embedding_store

BATCH_TILES = 64  # output tiles written per dask computation: the unit of progress and cancel


def build_multiscales(
    source,
    output,
    *,
    variable: str = "scores",
    resampling: str = "mean",
    tile: int = 256,
    zarr_format: int | None = None,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    scheduler=None,
) -> xr.DataTree:
    """Write the pyramid of `source`'s `variable` to the folder `output` and open it.

    resampling: "mean", "max" (keeps small hotspots visible when zoomed out), "min" or
    "nearest", all NaN-aware. tile: the chunk size of every level; the last level fits one
    tile. zarr_format=2 gives a store GDAL 3.6 (QGIS 3.22) reads; None means zarr's default.
    scheduler: anything `dask.compute(scheduler=...)` takes (None: dask's default).
    """
    if resampling not in RESAMPLING_METHODS:
        raise ParameterError(
            f"Unknown resampling {resampling!r}; choose one of {', '.join(RESAMPLING_METHODS)}."
        )
    if int(tile) < 2:
        raise ParameterError(f"The tile size must be at least 2 pixels, got {tile}.")
    if zarr_format not in (None, 2, 3):
        raise ParameterError(f"zarr_format must be 2, 3 or None, got {zarr_format!r}.")
    output = _local_output(output)
    store = open_embedding_store(source, variable=variable)
    tile = int(tile)
    shapes = level_shapes(store.grid.shape, tile)
    grids = [level_grid(store.grid, level, shape) for level, shape in enumerate(shapes)]
    crs_wkt = _crs_wkt(store)
    dtype = np.result_type(store.dtype, np.float32)

    partial = output.with_name(f".{output.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        for level, grid in enumerate(grids):
            _create_level(partial, level, store, grid, crs_wkt, dtype, tile, zarr_format)
        _fill_levels(partial, store, shapes, resampling, tile, progress, cancel, scheduler)
        _write_group_attrs(partial, grids, resampling, crs_wkt, store)
        with warnings.catch_warnings():  # "consolidated metadata is not in the v3 spec": known
            warnings.simplefilter("ignore", category=UserWarning)
            zarr.consolidate_metadata(str(partial), zarr_format=zarr_format)
        os.rename(partial, output)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return xr.open_datatree(output, engine="zarr", chunks={})


def _local_output(output) -> Path:
    text = os.fspath(output)
    if "://" in text:
        raise OutputError(
            f"The pyramid is written to a local folder; {text} is a URL. Write it locally, "
            "then upload the folder."
        )
    path = Path(text).expanduser().absolute()
    if path.exists():
        raise OutputError(f"{path} already exists. Choose a new output folder or delete it.")
    if not path.parent.is_dir():
        raise OutputError(f"The folder {path.parent} does not exist. Create it first.")
    if not os.access(path.parent, os.W_OK):
        raise OutputError(f"Cannot write in {path.parent}. Choose a folder you can write to.")
    return path


def _crs_wkt(store: EmbeddingStore) -> str | None:
    """The CRS as WKT2: from the source's attributes, else from its EPSG code via GDAL."""
    wkt = store.attrs.get("proj:wkt2") or (store.array.attrs.get("_CRS") or {}).get("wkt")
    if wkt or not store.grid.crs:
        return wkt
    try:
        from osgeo import osr
    except ImportError:  # no GDAL: proj:code alone still names the CRS
        return None
    srs = osr.SpatialReference()
    if srs.SetFromUserInput(store.grid.crs) != 0:
        return None
    return srs.ExportToWkt(["FORMAT=WKT2_2019"])


def _create_level(partial, level, store, grid: Grid, crs_wkt, dtype, tile, zarr_format):
    """Create group /level: coordinates, spatial_ref, and the empty data array (fill NaN)."""
    ny, nx = grid.shape
    shape = (len(store.times), len(store.bands), ny, nx)
    data = da.empty(shape, chunks=(1, 1, tile, tile), dtype=dtype)
    a, b, c, d, e, f = grid.transform
    spatial_ref = xr.Variable((), np.int32(0), {"GeoTransform": f"{c} {a} {b} {f} {d} {e}"})
    if crs_wkt:
        spatial_ref.attrs.update(crs_wkt=crs_wkt, spatial_ref=crs_wkt)
    attrs = {"grid_mapping": "spatial_ref"}
    if crs_wkt:
        attrs["_CRS"] = {"wkt": crs_wkt}  # what GDAL's Zarr driver reads to georeference
    dataset = xr.Dataset(
        {store.variable: (("time", "band", "y", "x"), data, attrs)},
        coords={
            "time": ("time", store.times.astype(np.int32)),
            # v3: variable-length strings (fixed-width ones have no v3 spec); v2: fixed for GDAL.
            "band": ("band", np.array(store.bands, dtype=str if zarr_format == 2 else object)),
            "y": ("y", grid.y_coords(0, ny)),
            "x": ("x", grid.x_coords(0, nx)),
            "spatial_ref": spatial_ref,
        },
        attrs=_convention_attrs(grid.spatial_attrs(), crs_wkt),
    )
    encoding = {store.variable: {"chunks": (1, 1, tile, tile), "_FillValue": np.nan}}
    dataset.to_zarr(
        str(partial),
        group=str(level),
        mode="w",
        compute=False,
        consolidated=False,
        encoding=encoding,
        zarr_format=zarr_format,
    )


def _fill_levels(partial, store, shapes, resampling, tile, progress, cancel, scheduler):
    """Copy the source into /0, then build each level from the one above, strip by strip."""
    n_time, n_band = len(store.times), len(store.bands)
    tiles = [n_time * n_band * -(-ny // tile) * -(-nx // tile) for ny, nx in shapes]
    total, done = sum(tiles), 0
    for level in range(len(shapes)):
        target = zarr.open_array(str(partial), path=f"{level}/{store.variable}", mode="r+")
        for piece, region, n_tiles in _level_pieces(partial, store, level, resampling, tile):
            if cancel is not None and cancel():
                raise CancelledError("The pyramid build was cancelled; no output was written.")
            dask.compute(
                da.store(piece, target, regions=region, lock=False, compute=False),
                scheduler=scheduler,
            )
            done += n_tiles
            if progress is not None:
                progress(done / total)


def _level_pieces(partial, store: EmbeddingStore, level: int, resampling: str, tile: int):
    """(dask array, target region, tile count) per strip of output tiles of one level.

    Level 0 reads the source (cast to float, its integer no-data value to NaN) one source
    band chunk at a time, so a chunk holding all bands is read once; later levels read
    the level above in 2-tile blocks, each of which gives one output tile.
    """
    if level == 0:
        source = da.from_zarr(store.array)
        band_step = source.chunksize[1]
    else:
        above = zarr.open_array(str(partial), path=f"{level - 1}/{store.variable}", mode="r")
        source = da.from_zarr(above, chunks=(1, 1, 2 * tile, 2 * tile))
        band_step = 1
    n_time, n_band, ny, nx = source.shape
    if level > 0:
        ny, nx = -(-ny // 2), -(-nx // 2)
    tiles_across = -(-nx // tile)
    strip = tile * max(1, BATCH_TILES // tiles_across)
    for t in range(n_time):
        for b0 in range(0, n_band, band_step):
            b1 = min(b0 + band_step, n_band)
            for r0 in range(0, ny, strip):
                r1 = min(r0 + strip, ny)
                if level == 0:
                    piece = _as_float(source[t : t + 1, b0:b1, r0:r1, :], store)
                    piece = piece.rechunk((1, 1, tile, tile))
                else:
                    piece = _halved(source[t : t + 1, b0:b1, 2 * r0 : 2 * r1, :], resampling)
                region = (slice(t, t + 1), slice(b0, b1), slice(r0, r1), slice(0, nx))
                n_tiles = (b1 - b0) * -(-(r1 - r0) // tile) * tiles_across
                yield piece, region, n_tiles


def _as_float(piece: da.Array, store: EmbeddingStore) -> da.Array:
    dtype = np.result_type(piece.dtype, np.float32)
    values = piece.astype(dtype)
    nodata = store.quantisation.nodata
    if nodata is not None:
        values = da.where(piece == nodata, np.nan, values)
    return values


def _halved(piece: da.Array, resampling: str) -> da.Array:
    chunks = (*piece.chunks[:2], *(tuple(-(-n // 2) for n in c) for c in piece.chunks[2:]))
    return piece.map_blocks(halve, resampling, chunks=chunks, dtype=piece.dtype)


def _convention_attrs(spatial_attrs: dict, crs_wkt: str | None, multiscales=None) -> dict:
    """spatial + proj (+ multiscales) attributes and their `zarr_conventions`, via zarr-cm."""
    conventions = {
        "spatial": {k: v for k, v in spatial_attrs.items() if k.startswith("spatial:")},
    }
    proj = {k: v for k, v in spatial_attrs.items() if k.startswith("proj:")}
    if crs_wkt:
        proj["proj:wkt2"] = crs_wkt
    if proj:
        conventions["proj"] = proj
    if multiscales is not None:
        conventions = {"multiscales": multiscales, **conventions}
    return zarr_cm.create_many(conventions)


def _write_group_attrs(partial, grids: list[Grid], resampling, crs_wkt, store: EmbeddingStore):
    """The root group's attributes: the layout of the levels, the full-resolution grid."""
    method = RESAMPLING_METHODS[resampling]
    layout = [
        {
            "asset": "0",
            "transform": {"scale": [1.0, 1.0], "translation": [0.0, 0.0]},
            "spatial:transform": list(grids[0].transform),
            "spatial:shape": list(grids[0].shape),
        }
    ]
    for level, grid in enumerate(grids[1:], start=1):
        layout.append(
            {
                "asset": str(level),
                "derived_from": str(level - 1),
                "transform": {"scale": [2.0, 2.0], "translation": [0.0, 0.0]},
                "resampling_method": method,
                "spatial:transform": list(grid.transform),
                "spatial:shape": list(grid.shape),
            }
        )
    multiscales = zarr_cm.multiscales.create(layout=layout, resampling_method=method)
    attrs = _convention_attrs(grids[0].spatial_attrs(), crs_wkt, multiscales)
    attrs["embedding_change:source"] = store.url
    attrs["embedding_change:variable"] = store.variable
    zarr.open_group(str(partial), mode="r+").attrs.update(attrs)
