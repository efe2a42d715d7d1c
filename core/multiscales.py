"""Turn a (time, band, y, x) Zarr into a multiscale pyramid for fast zoomed-out viewing.

    from embedding_change.core import build_multiscales
    build_multiscales("scores.zarr", "scores_pyramid.zarr")  # resampling="second_max"

The output group holds levels /0 (the source values at full resolution) to /N, each built
from the level above (see pyramid_levels), and describes them with the zarr conventions
"multiscales", "spatial" and "proj" (attributes made by zarr-cm), consolidated so that
`xarray.open_datatree(path, engine="zarr")` reads it in one request. Levels are written in
strips of tiles, so memory stays bounded whatever the size; the run writes into a hidden
sibling folder and renames it at the end, so a failed or cancelled run leaves no output.
"""

from __future__ import annotations

from collections.abc import Callable

import dask
import numpy as np
import xarray as xr
import zarr
import zarr_cm

from .errors import ParameterError
from .grid import Grid, spatial_reference
from .output import OutputTarget, create_empty_cube, crs_attribute
from .pyramid_levels import (
    DEFAULT_RESAMPLING,
    RESAMPLING_METHODS,
    halve,
    level_grid,
    level_shapes,
)
from .scheduling import run_tasks
from .store import EmbeddingStore, open_embedding_store, zarr_store

BATCH_TILES = 64  # output tiles per write task: the unit of progress and cancel


def build_multiscales(
    source,
    output,
    *,
    variable: str = "scores",
    resampling: str = DEFAULT_RESAMPLING,
    tile: int = 256,
    zarr_format: int | None = None,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    scheduler=None,
    storage_options: dict | None = None,
    output_storage_options: dict | None = None,
) -> xr.DataTree:
    """Write the pyramid of `source`'s `variable` to the folder `output` and open it.

    resampling: "second_max" (the default: the second-largest of each 2 x 2 block, so events
    keep their score zoomed out and single-pixel speckle does not spread), "mean", "max"
    (every block with one high pixel is high: floods noisy scores), "min" or "nearest", all
    NaN-aware. tile: the chunk size of every level; the last level fits one
    tile. zarr_format=2 gives a store GDAL 3.6 (QGIS 3.22) reads; None means zarr's default.
    progress(f) gets the fraction of tiles written; cancel() returning True stops the run
    and removes its output. scheduler: None for local threads, a dask.distributed address or
    Client (levels are still built one after the other: each reads the one above).
    """
    if resampling not in RESAMPLING_METHODS:
        raise ParameterError(
            f"Unknown resampling {resampling!r}; choose one of {', '.join(RESAMPLING_METHODS)}."
        )
    if int(tile) < 2:
        raise ParameterError(f"The tile size must be at least 2 pixels, got {tile}.")
    if zarr_format not in (None, 2, 3):
        raise ParameterError(f"zarr_format must be 2, 3 or None, got {zarr_format!r}.")
    store = open_embedding_store(source, variable, storage_options)
    target = OutputTarget.prepare(output, output_storage_options)
    tile = int(tile)
    shapes = level_shapes(store.grid.shape, tile)
    grids = [level_grid(store.grid, level, shape) for level, shape in enumerate(shapes)]
    crs_wkt = _crs_wkt(store)
    dtype = np.result_type(store.dtype, np.float32)
    try:
        for level, grid in enumerate(grids):
            _create_level(target, level, store, grid, crs_wkt, dtype, tile, zarr_format)
        _fill_levels(target, store, shapes, resampling, tile, progress, cancel, scheduler)
        _write_group_attrs(target, grids, resampling, crs_wkt, store)
        target.finish()
    except BaseException:
        target.discard()
        raise
    return xr.open_datatree(
        target.final_url,
        engine="zarr",
        chunks={},
        storage_options=target.storage_options or None,
    )


def _crs_wkt(store: EmbeddingStore) -> str | None:
    """The CRS as WKT2: the source's proj:wkt2, else its code or GDAL _CRS WKT made WKT2 by GDAL
    (without GDAL, proj:code alone still names the CRS)."""
    if store.attrs.get("proj:wkt2"):
        return store.attrs["proj:wkt2"]
    crs = store.grid.crs or (store.array.attrs.get("_CRS") or {}).get("wkt")
    srs = spatial_reference(crs) if crs else None
    return srs.ExportToWkt(["FORMAT=WKT2_2019"]) if srs else None


def _create_level(target, level, store, grid: Grid, crs_wkt, dtype, tile, zarr_format):
    """Create group /level: coordinates, spatial_ref, and the empty data array (fill NaN)."""
    a, b, c, d, e, f = grid.transform
    spatial_ref = xr.Variable((), np.int32(0), {"GeoTransform": f"{c} {a} {b} {f} {d} {e}"})
    if crs_wkt:
        spatial_ref.attrs.update(crs_wkt=crs_wkt, spatial_ref=crs_wkt)
    variable_attrs = {"grid_mapping": "spatial_ref"}
    gdal_crs = crs_attribute(grid.crs or crs_wkt)
    if gdal_crs:
        variable_attrs["_CRS"] = gdal_crs
    create_empty_cube(
        target,
        store.variable,
        grid,
        store.times,
        store.bands,
        attrs=_convention_attrs(grid.spatial_attrs(), crs_wkt),
        variable_attrs=variable_attrs,
        zarr_format=zarr_format,
        chunk=tile,
        dtype=dtype,
        group=str(level),
        extra_coords={"spatial_ref": spatial_ref},
    )


def _fill_levels(target, store, shapes, resampling, tile, progress, cancel, scheduler):
    """Copy the source into /0, then build each level from the one above, strip by strip."""
    n_time, n_band = len(store.times), len(store.bands)
    tiles = [n_time * n_band * -(-ny // tile) * -(-nx // tile) for ny, nx in shapes]
    total, done = sum(tiles), 0
    report = progress or (lambda fraction: None)
    for level in range(len(shapes)):
        writes = _level_writes(target, store, level, resampling, tile)

        def level_progress(fraction, before=done, level_tiles=tiles[level]):
            report((before + fraction * level_tiles) / total)

        run_tasks(writes, progress=level_progress, cancel=cancel, scheduler=scheduler)
        done += tiles[level]


def _level_writes(target: OutputTarget, store: EmbeddingStore, level: int, resampling, tile):
    """One delayed write per window of about BATCH_TILES output tiles of `level`.

    Level 0 copies the source one source band chunk at a time (a chunk holding all bands is
    read once); later levels read the level above, already written, twice the window's size.
    """
    output = zarr_store(target.url, target.storage_options, read_only=False)
    destination = zarr.open_array(output, path=f"{level}/{store.variable}", mode="r+")
    if level == 0:
        source, band_step = store.array, store.chunks[1]
        write = dask.delayed(copy_window, pure=True)
        extra = (store.quantisation.nodata,)
    else:
        source = zarr.open_array(output, path=f"{level - 1}/{store.variable}", mode="r")
        band_step = 1
        write = dask.delayed(halve_window, pure=True)
        extra = (resampling,)
    n_time, n_band, ny, nx = destination.shape
    tiles_x = min(-(-nx // tile), max(1, BATCH_TILES // band_step))
    tiles_y = max(1, BATCH_TILES // (band_step * tiles_x))
    return [
        write(source, destination, window, *extra)
        for t in range(n_time)
        for b0 in range(0, n_band, band_step)
        for r0 in range(0, ny, tile * tiles_y)
        for c0 in range(0, nx, tile * tiles_x)
        for window in [
            (
                slice(t, t + 1),
                slice(b0, min(b0 + band_step, n_band)),
                slice(r0, min(r0 + tile * tiles_y, ny)),
                slice(c0, min(c0 + tile * tiles_x, nx)),
            )
        ]
    ]


def copy_window(source: zarr.Array, destination: zarr.Array, window, nodata) -> None:
    """Level 0: the source values as floats; an integer source's no-data value becomes NaN."""
    values = source[window]
    floats = values.astype(np.result_type(values.dtype, np.float32))
    if nodata is not None:
        floats[values == nodata] = np.nan
    destination[window] = floats


def halve_window(above: zarr.Array, destination: zarr.Array, window, resampling) -> None:
    """Level k+1 over `window` from the 2x larger window of level k."""
    t, b, rows, cols = window
    doubled = (t, b, slice(2 * rows.start, 2 * rows.stop), slice(2 * cols.start, 2 * cols.stop))
    destination[window] = halve(above[doubled], resampling)


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


def _write_group_attrs(target: OutputTarget, grids: list[Grid], resampling, crs_wkt, store):
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
    output = zarr_store(target.url, target.storage_options, read_only=False)
    zarr.open_group(output, mode="r+").attrs.update(attrs)
