"""Turn a (time, band, y, x) Zarr into a multiscale pyramid for fast zoomed-out viewing.

    from embedding_change.core import build_multiscales
    build_multiscales("scores.zarr", "scores_pyramid.zarr")  # resampling="second_max"

The output group holds levels /0 (the source values at full resolution) to /N, each built
from the level above (see pyramid_levels), and describes them with the zarr conventions
"multiscales", "spatial" and "proj" (attributes made by zarr-cm), consolidated so that
`xarray.open_datatree(path, engine="zarr")` reads it in one request. Level 0 hard-links the
source's chunk files where it can instead of copying them (pyramid_writes says when). Levels
are written in windows of tiles, so memory stays bounded whatever the size; the run claims
its output and writes into a hidden sibling folder renamed at the end (core.output), so a
failed or cancelled run leaves no output, and failures name the chunk, its year and the cause.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import xarray as xr
import zarr
import zarr_cm

from .errors import EmbeddingChangeError, ParameterError
from .grid import Grid, spatial_reference
from .output import SCORES_COMPRESSORS, OutputTarget, create_empty_cube, crs_attribute
from .pyramid_levels import (
    DEFAULT_RESAMPLING,
    RESAMPLING_METHODS,
    level_grid,
    level_shapes,
)
from .pyramid_writes import PyramidRun, can_link, level_writes, pyramid_bytes
from .retry import DEFAULT_POLICY, RetryPolicy
from .scheduling import retries_so_far, run_cancellable, run_tasks
from .store import EmbeddingStore, open_embedding_store, store_url, zarr_store


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
    log: Callable[[str], None] | None = None,
    retry: RetryPolicy | None = None,
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
    log(line) gets what the analyst should know (level 0 linked or copied, retries, swept
    leftovers); retry: how remote requests retry (core.retry.RetryPolicy). The returned
    tree's attrs hold `embedding_change:level_seconds` (and `level_cpu_seconds`), the time
    each level took.
    """
    if resampling not in RESAMPLING_METHODS:
        raise ParameterError(
            f"Unknown resampling {resampling!r}; choose one of {', '.join(RESAMPLING_METHODS)}."
        )
    if int(tile) < 2:
        raise ParameterError(f"The tile size must be at least 2 pixels, got {tile}.")
    if zarr_format not in (None, 2, 3):
        raise ParameterError(f"zarr_format must be 2, 3 or None, got {zarr_format!r}.")
    log = log or (lambda line: None)
    retry = retry or DEFAULT_POLICY
    urls = (store_url(source), store_url(output))
    retries_before = retries_so_far(scheduler, urls)
    store = run_cancellable(
        lambda: open_embedding_store(source, variable, storage_options, retry), cancel
    )
    target = OutputTarget.prepare(output, output_storage_options, retry=retry, log=log)
    tile = int(tile)
    shapes = level_shapes(store.grid.shape, tile)
    grids = [level_grid(store.grid, level, shape) for level, shape in enumerate(shapes)]
    crs_wkt = _crs_wkt(store)
    dtype = np.result_type(store.dtype, np.float32)
    planes = len(store.times) * len(store.bands)
    run = PyramidRun(
        store.url,
        target.final_url,
        tuple(int(t) for t in store.times),
        pyramid_bytes(shapes, planes, tile, dtype.itemsize),
    )
    try:
        for level, grid in enumerate(grids):
            _create_level(target, level, store, grid, crs_wkt, dtype, tile, zarr_format)
        output_store = zarr_store(target.url, target.storage_options, read_only=False, retry=retry)
        level_0 = zarr.open_array(output_store, path=f"0/{store.variable}", mode="r")
        link = can_link(store.array, level_0)
        target.check_free(run.needed_bytes - (_level_bytes(shapes[0], planes, tile) if link else 0))
        seconds, cpu = _fill_levels(
            run, store, output_store, shapes, resampling, tile, link, progress, cancel, scheduler
        )
        _write_group_attrs(target, grids, resampling, crs_wkt, store)
        retries = retries_so_far(scheduler, urls) - retries_before
        target.finish({"embedding_change:retries": retries})
    except BaseException as exc:
        target.discard()
        if isinstance(exc, EmbeddingChangeError) or not isinstance(exc, Exception):
            raise
        raise EmbeddingChangeError(
            f"Building the pyramid {target.final_url} failed: {type(exc).__name__}: {exc}. "
            "Its output was removed; run again, and report this message if it repeats."
        ) from exc
    log(
        "Level 0 shares the source's chunk files (hard links): nothing was copied."
        if link
        else "Level 0 is a copy of the source (remote, on another disk or in another layout, "
        "its chunk files cannot be shared)."
    )
    if retries:
        log(f"{retries} requests were retried after transient errors; the values are complete.")
    tree = xr.open_datatree(
        target.final_url,
        engine="zarr",
        chunks={},
        storage_options=target.storage_options or None,
    )
    tree.attrs["embedding_change:level_seconds"] = seconds
    tree.attrs["embedding_change:level_cpu_seconds"] = cpu  # this process's threads
    tree.attrs["embedding_change:level_0_linked"] = link
    return tree


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
        compressors=SCORES_COMPRESSORS,
        extra_coords={"spatial_ref": spatial_ref},
    )


def _fill_levels(
    run, store, output_store, shapes, resampling, tile, link, progress, cancel, scheduler
) -> list[float]:
    """Link or copy the source into /0, then build each level from the one above; the seconds
    each level took, and the CPU seconds of this process meanwhile."""
    planes = len(store.times) * len(store.bands)
    tiles = [planes * -(-ny // tile) * -(-nx // tile) for ny, nx in shapes]
    total, done = sum(tiles), 0
    report = progress or (lambda fraction: None)
    seconds, cpu = [], []
    for level in range(len(shapes)):
        started, cpu_started = time.perf_counter(), time.process_time()
        writes = level_writes(
            run, store, output_store, store.variable, level, resampling, tile,
            link=link and level == 0, link_above=link,
        )  # fmt: skip

        def level_progress(fraction, before=done, level_tiles=tiles[level]):
            report((before + fraction * level_tiles) / total)

        run_tasks(writes, progress=level_progress, cancel=cancel, scheduler=scheduler)
        done += tiles[level]
        seconds.append(round(time.perf_counter() - started, 3))
        cpu.append(round(time.process_time() - cpu_started, 3))
    return seconds, cpu


def _level_bytes(shape, planes: int, tile: int) -> int:
    return pyramid_bytes([shape], planes, tile)


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
    output = zarr_store(target.url, target.storage_options, read_only=False, retry=target.retry)
    zarr.open_group(output, mode="r+").attrs.update(attrs)
