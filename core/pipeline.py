"""The block pipeline: embedding cube in, change scores Zarr out, streaming on dask.

Blocks follow the store's chunk edges, so each reads whole chunks once: all years and bands
of its pixels. Scored blocks are regrouped into 256 x 256 output tiles (the output grid starts
at the window's corner, not at a chunk edge) and each tile is written by exactly one task.
A block is freed as soon as its parts are copied out, so memory holds a few blocks per worker
thread and one row of output tiles' parts: it grows with the window's width, not its area.
"""

from __future__ import annotations

import functools
import math
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import dask
import numpy as np
import xarray as xr
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from . import kernels
from .block_reads import mark_absent_years, read_block, read_error
from .chunk_cache import ChunkCache, run_cache
from .chunk_files import reused_buffer
from .credentials import masked_log, public_options
from .errors import EmbeddingChangeError, OutputError, ParameterError, StoreError
from .failures import plain_cause
from .output import OUTPUT_CHUNK, OutputTarget, create_scores_store, write_error
from .quantisation import SIGNED_SQUARE
from .read_ahead import READ_AHEAD_REQUESTS, end_run, run_reads, start_read_ahead
from .retry import DEFAULT_POLICY, RetryPolicy
from .run_size import DEFAULT_MAX_PIXELS, guard_run, note_transfer
from .scheduling import retries_so_far, run_cancellable, run_order, run_tasks, runs_locally
from .store import (
    EmbeddingStore,
    cached_embedding_store,
    is_remote,
    open_embedding_store,
    reading_through,
    remember_store,
    store_url,
)
from .summary import create_with_summary, write_tile_with_summary
from .tile_order import centre_first_rank, tile_reporter
from .window import PixelWindow, blocks, pixel_window


@dataclass(frozen=True)
class BlockJob:
    """What a block task needs, in plain values so it travels to dask workers."""

    url: str
    variable: str
    storage_options: dict
    year_indices: tuple[int, ...]
    methods: tuple[str, ...]
    metric: str
    robust_zscore: bool
    retry: RetryPolicy = DEFAULT_POLICY
    run: str = ""  # this run's id: absent chunks are counted per run
    cache: ChunkCache | None = None  # remote chunks read through it (core.chunk_cache)
    source: EmbeddingStore | None = None  # the run's opened store (travels as its metadata)


SCORE_TASKS = "change-scores-"  # the block tasks' key prefix
# Chunks read as absent (all fill) per run id, on this machine's worker threads.
_absent_chunks = Counter()
_absent_lock = threading.Lock()


def compute_change_scores(
    store,
    output,
    *,
    bbox=None,
    variable: str = "embeddings",
    methods=kernels.METHODS,
    metric: str = "alpha_earth_cosine",
    robust_zscore: bool = True,
    years=None,
    storage_options: dict | None = None,
    zarr_format: int | None = None,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    scheduler=None,
    output_storage_options: dict | None = None,
    log: Callable[[str], None] | None = None,
    retry: RetryPolicy | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    on_tile: Callable[[str, int, int, int, int], None] | None = None,
    centre_first: bool = False,
    cache=None,
    read_ahead: int | None = None,
) -> xr.Dataset:
    """Score every pixel of the box's window and write the scores Zarr; returns it opened.

    bbox is (xmin, ymin, xmax, ymax) in the store's CRS (None: the whole store). progress(f)
    is called with the fraction of output tiles written; cancel() returning True stops the
    run within seconds and removes its output. scheduler: None for local threads, a
    dask.distributed address or Client to run on a cluster. log(line) gets what the analyst
    should know (retries, absent chunks, too few years for z-scores, swept leftovers).
    retry: how remote requests retry and how long they may take (core.retry.RetryPolicy).
    max_pixels: a bigger window stops before reading (None: no limit; core.run_size).
    on_tile(url, y0, x0, height, width) is called on a worker thread as each output tile is
    written: `url` is where the run writes (a hidden partial folder until the run finishes),
    the rest the tile in output pixels. centre_first: score the blocks nearest the window's
    centre first (local threads), so that a viewer sees the middle of the view fill in first.
    cache: where a remote store's chunks are kept for the next run (core.chunk_cache): None
    for the default folder (EMBEDDING_CHANGE_CACHE_DIR, else the user's cache folder), a
    folder, a ChunkCache (folder and size limit), or False for none. Local stores never are.
    store may also be an EmbeddingStore already opened (open_embedding_store): it is not
    opened again. read_ahead: requests in flight ahead of the kernel for a remote store
    (None: core.read_ahead.READ_AHEAD_REQUESTS; 0: none).
    """
    started = time.perf_counter()
    log = masked_log(log)  # no secret reaches a log line (core.credentials)
    retry = retry or DEFAULT_POLICY
    methods = kernels.check_methods_and_metric(as_names(methods, "methods"), metric)
    if zarr_format not in (None, 2, 3):
        raise ParameterError(f"zarr_format must be 2, 3 or None, not {zarr_format!r}.")
    bbox = check_bbox(bbox)
    if not isinstance(robust_zscore, bool | np.bool_ | int):
        raise ParameterError(f"robust_zscore must be True or False, not {robust_zscore!r}.")
    url = store.url if isinstance(store, EmbeddingStore) else store_url(store)
    retries_before = _retries_of(url, output, scheduler)
    chunk_cache = run_cache(cache, is_remote(url))
    cache_before = chunk_cache.counts() if chunk_cache else None
    if isinstance(store, EmbeddingStore):  # opened by the caller: not opened again
        source = reading_through(store, chunk_cache)
    else:
        source = run_cancellable(
            lambda: open_embedding_store(store, variable, storage_options, retry, chunk_cache),
            cancel,
        )
    store = source.url
    remember_store(source)
    year_indices = select_years(source, years)
    warn_few_years(len(year_indices), methods, robust_zscore, log)
    window = pixel_window(source.grid, bbox)
    local = runs_locally(scheduler)
    size = guard_run(source, window, len(year_indices), max_pixels, local=local, log=log)
    target = OutputTarget.prepare(output, output_storage_options, retry=retry, log=log)
    job = BlockJob(
        source.url,
        source.variable,
        source.storage_options,
        year_indices,
        methods,
        metric,
        robust_zscore,
        source.retry,
        uuid.uuid4().hex,
        chunk_cache,
        source,
    )
    labels = kernels.score_labels(methods, metric, robust_zscore)
    chosen_years = [int(source.times[i]) for i in year_indices]
    attrs = run_attributes(source, window, chosen_years, methods, metric, robust_zscore)
    create = functools.partial(
        create_scores_store,
        target,
        source.grid.subset(window.row0, window.row1, window.col0, window.col1),
        chosen_years,
        labels,
        attrs,
        zarr_format,
    )
    create = functools.partial(create_with_summary, create, target)  # + summary (core/summary)
    create = functools.partial(output_errors_named, create, target.final_url)
    try:
        # every year's scores, and the summary's two (band, y, x) arrays
        target.check_space((len(chosen_years) + 2) * len(labels), window.shape)
        if not local:
            # Created before any task: a cluster worker still creating it after a cancel had
            # discarded the run would bring the store back, and with it late tiles.
            create()
            create = None
        writes = tile_writes(job, source, window, len(labels), target, create)
        first = centre_first_rank(window, source.chunks[2:]) if centre_first else None
        if runs_locally(scheduler) and is_remote(source.url):
            requests = READ_AHEAD_REQUESTS if read_ahead is None else int(read_ahead)
            by_corner = {(b.row0, b.col0): b for b in blocks(window, source.chunks[2:])}
            keys = sorted(run_order(writes, SCORE_TASKS), key=first or (lambda key: 0))
            order = [by_corner[key[1:]] for key in keys]  # as the threads will score them
            start_read_ahead(job.run, source, year_indices, order, requests)
        run_tasks(
            writes,
            progress=progress,
            cancel=cancel,
            scheduler=scheduler,
            on_done=tile_reporter(on_tile, target.url, window, log),
            first=first,
        )
        retries = _retries_of(store, output, scheduler) - retries_before
        absent = _absent_chunks.pop(job.run, 0)
        end_run(job.run)
        target.finish({"embedding_change:retries": retries, "embedding_change:absent": absent})
        note_transfer(source.url, size.nbytes, time.perf_counter() - started)
    except BaseException as exc:
        target.discard()
        _absent_chunks.pop(job.run, None)
        end_run(job.run)
        if isinstance(exc, EmbeddingChangeError) or not isinstance(exc, Exception):
            raise
        raise EmbeddingChangeError(
            f"The run writing {target.final_url} failed: {type(exc).__name__}: {exc}. "
            "Its output was removed; run again, and report this message if it repeats."
        ) from exc
    if retries:
        log(f"{retries} requests were retried after transient errors; the values are complete.")
    if absent:
        log(f"{absent} chunks absent: treated as no data.")
    if chunk_cache:
        log(chunk_cache.counts().since(cache_before).describe(chunk_cache.folder))
    result = xr.open_zarr(
        target.final_url, storage_options=target.storage_options or None, consolidated=True
    )
    result.attrs["embedding_change:seconds"] = round(time.perf_counter() - started, 3)
    return result


def _retries_of(store, output, scheduler) -> int:
    """Retries so far for the run's input and output, on this machine and the cluster's."""
    return retries_so_far(scheduler, (store_url(store), store_url(output)))


def as_names(value, what: str) -> tuple[str, ...]:
    """A sequence of names; a bare string is one name, not its letters."""
    if isinstance(value, str):
        return (value,)
    try:
        return tuple(value)
    except TypeError:
        raise ParameterError(f"{what} must be a name or a list of names, not {value!r}.") from None


def check_bbox(bbox):
    """None, or (xmin, ymin, xmax, ymax) as 4 finite floats; anything else is named."""
    if bbox is None:
        return None
    try:
        values = tuple(float(v) for v in bbox)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 4 or isinstance(bbox, str) or not all(math.isfinite(v) for v in values):
        raise ParameterError(
            f"The box {bbox!r} is not 4 finite numbers; give (xmin, ymin, xmax, ymax) in the "
            "store's CRS, or None for the whole store."
        )
    return values


def warn_few_years(n_years: int, methods, robust_zscore: bool, log) -> None:
    """Say so when the chosen years are too few for some scores to be anything but NaN."""
    lacking = []
    if "loo_medoid" in methods and n_years < 3:
        lacking.append("loo_medoid scores need 3 years with data")
    if robust_zscore and n_years < 3:
        lacking.append("robust z-scores need 3 scores per pixel")
    if lacking:
        message = (
            f"Only {n_years} years: {' and '.join(lacking)}, so they will all be NaN. Choose "
            "3 or more years, or turn the robust z-score off and use difference."
        )
        warnings.warn(message, UserWarning, stacklevel=3)
        log(message)


def select_years(source: EmbeddingStore, years) -> tuple[int, ...]:
    """Indices of the chosen years in the store's time axis (all when None), in time order."""
    available = [int(t) for t in source.times]
    if len(available) < 2:
        raise StoreError(
            f"The store {source.url} holds {len(available)} year(s) {available}; change scores "
            "compare years, so they need a store with at least two."
        )
    if years is None:
        return tuple(range(len(source.times)))
    if isinstance(years, str | int) or not hasattr(years, "__iter__"):
        years = [years]
    try:
        wanted = sorted({int(y) for y in years})
    except (TypeError, ValueError):
        raise ParameterError(
            f"Years must be whole years such as [2018, 2020], not {years!r}."
        ) from None
    missing = [y for y in wanted if y not in available]
    if missing:
        raise ParameterError(
            f"Years {missing} are not in the store, which has {available[0]}..{available[-1]}."
        )
    if len(wanted) < 2:
        raise ParameterError("Change scores need at least two years; choose more years.")
    return tuple(available.index(y) for y in wanted)


def run_attributes(source, window, years, methods, metric, robust_zscore) -> dict:
    """Provenance of a run, kept in the output's attributes and shown in QGIS's log."""
    n_bands = source.array.shape[1]
    return {
        "embedding_change:source": source.url,
        "embedding_change:variable": source.variable,
        # how readers (the pixel profile) reach the source: endpoint, region, anon, no secret
        "embedding_change:storage_options": public_options(source.storage_options),
        "embedding_change:window": {
            "row0": window.row0,
            "row1": window.row1,
            "col0": window.col0,
            "col1": window.col1,
        },
        "embedding_change:pixels": window.size,
        "embedding_change:years": years,
        "embedding_change:bytes_read": window.size * len(years) * n_bands * source.dtype.itemsize,
        "embedding_change:methods": list(methods),
        "embedding_change:metric": metric,
        "embedding_change:robust_time_zscore": robust_zscore,
    }


def score_block(job: BlockJob, block: PixelWindow) -> np.ndarray:
    """Read all years and bands of a block's pixels and score them: (time, score, y, x)."""
    source = job.source or cached_embedding_store(
        job.url, job.variable, job.storage_options, job.retry, job.cache
    )
    shape = (len(job.year_indices), source.array.shape[1], *block.shape)
    values = reused_buffer(shape, source.dtype)
    try:
        read_block(source, job.year_indices, block, values, run_reads(job.run))
    except Exception as exc:
        raise read_error(source, job.year_indices, block, exc) from exc
    nodata = source.quantisation.nodata
    absent = mark_absent_years(values, source.array.fill_value, nodata)
    if absent:
        with _absent_lock:
            _absent_chunks[job.run] += absent
    return kernels.change_scores(
        values,
        methods=job.methods,
        metric=job.metric,
        robust_zscore=job.robust_zscore,
        signed_square=source.quantisation.method == SIGNED_SQUARE,
        nodata=nodata,
    )


def tile_writes(job, source, window, n_scores, target, create=None) -> list:
    """Delayed writes, one per output tile, each from its parts of up to 2 x 2 scored blocks.

    Parts are copied out of a block as soon as it is scored, so the block itself is freed at
    once and only the parts still waiting for their tile stay in memory. A plain graph:
    dask.array's rechunk took ~40 s to build for a state-sized window, this ~3 s.
    `create` (creating the output store), if given, becomes a task of its own that every
    write waits for and the first blocks are scored alongside: it takes ~0.1 s, a tenth of
    a canvas-sized run.
    """
    chunk = (source.chunks[2], source.chunks[3])
    token = dask.base.tokenize(job, window, target.url)
    name = f"{SCORE_TASKS}{token}"
    graph = {(name, b.row0, b.col0): (score_block, job, b) for b in blocks(window, chunk)}
    created = None
    if create is not None:
        created = f"create-output-{token}"
        graph[created] = (create,)
    writes = []
    for y0 in range(0, window.shape[0], OUTPUT_CHUNK):
        for x0 in range(0, window.shape[1], OUTPUT_CHUNK):
            row0, col0 = window.row0 + y0, window.col0 + x0
            row1 = min(row0 + OUTPUT_CHUNK, window.row1)
            tile = PixelWindow(row0, row1, col0, min(col0 + OUTPUT_CHUNK, window.col1))
            parts = blocks(tile, chunk)
            part_keys = []
            for part in parts:
                block = _block_of(window, part, chunk)
                key = (f"tile-part-{token}", part.row0, part.col0)
                graph[key] = (_copy_part, (name, block.row0, block.col0), block, part)
                part_keys.append(key)
            key = (f"write-tile-{token}", y0, x0)
            graph[key] = (
                write_tile_parts,
                tile,
                part_keys,
                parts,
                target.url,
                target.storage_options,
                y0,
                x0,
                created,
                job.retry,
            )
            writes.append(key)
    layers = HighLevelGraph.from_collections(name, graph, dependencies=())
    return [Delayed(key, layers, layer=name) for key in writes]


def _block_of(window: PixelWindow, part: PixelWindow, chunk: tuple[int, int]) -> PixelWindow:
    """The window's block (cut at chunk edges and the window's edges) that holds `part`."""
    (cy, cx), y, x = chunk, part.row0 // chunk[0], part.col0 // chunk[1]
    return PixelWindow(
        max(window.row0, y * cy),
        min(window.row1, (y + 1) * cy),
        max(window.col0, x * cx),
        min(window.col1, (x + 1) * cx),
    )


def _copy_part(scores: np.ndarray, block: PixelWindow, part: PixelWindow) -> np.ndarray:
    if part == block:
        return scores
    rows = slice(part.row0 - block.row0, part.row1 - block.row0)
    cols = slice(part.col0 - block.col0, part.col1 - block.col0)
    return scores[:, :, rows, cols].copy()


def write_tile_parts(
    tile, scored, parts, url, storage_options, y0, x0, created=None, retry=DEFAULT_POLICY
) -> int:
    """Assemble a tile from its scored parts and write it at output pixel (y0, x0).

    `created` is the result of the task creating the output, if any: it only orders the write
    after that task.
    """
    if len(parts) == 1:
        out = scored[0]
    else:
        first = scored[0]
        out = np.empty((*first.shape[:2], *tile.shape), first.dtype)
        for values, part in zip(scored, parts, strict=True):
            rows = slice(part.row0 - tile.row0, part.row1 - tile.row0)
            cols = slice(part.col0 - tile.col0, part.col1 - tile.col0)
            out[:, :, rows, cols] = values
    try:
        return write_tile_with_summary(out, url, storage_options, y0, x0, retry)
    except EmbeddingChangeError:
        raise
    except Exception as exc:  # the summary's writes, after write_tile's own
        raise write_error(url, storage_options, y0, x0, exc, retry) from exc


def output_errors_named(create: Callable[[], None], output: str) -> None:
    """create(), with any failure an OutputError naming the output and the cause."""
    try:
        create()
    except EmbeddingChangeError:
        raise
    except Exception as exc:
        raise OutputError(
            f"Cannot write the output {output}: {plain_cause(exc)}. Check the folder or bucket "
            "can be written to, then run again."
        ) from exc
