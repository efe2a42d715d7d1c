"""The block pipeline: embedding cube in, change scores Zarr out, streaming on dask.

compute_change_scores checks the run (parameters, years, size, output), then runs the block
tasks of core.block_tasks: each block read and scored once, its parts regrouped into output
tiles, each tile written by one task. A block is freed as soon as its parts are copied out,
so memory holds a few blocks per worker thread and one row of output tiles' parts: it grows
with the window's width, not its area.
"""

from __future__ import annotations

import functools
import math
import time
import uuid
import warnings
from collections.abc import Callable

import numpy as np
import xarray as xr

from . import kernels
from .block_tasks import SCORE_TASKS, BlockJob, absent_chunks, tile_writes
from .chunk_cache import run_cache
from .credentials import masked_log, public_options
from .errors import EmbeddingChangeError, OutputError, ParameterError, StoreError
from .failures import plain_cause
from .output import OutputTarget, create_scores_store
from .read_ahead import READ_AHEAD_REQUESTS, end_run, start_read_ahead
from .retry import DEFAULT_POLICY, RetryPolicy
from .run_size import DEFAULT_MAX_PIXELS, guard_run, note_transfer
from .scheduling import retries_so_far, run_cancellable, run_order, run_tasks, runs_locally
from .store import (
    EmbeddingStore,
    is_remote,
    open_embedding_store,
    reading_through,
    remember_store,
    store_url,
)
from .summary import create_with_summary
from .tile_order import centre_first_rank, tile_reporter
from .window import blocks, pixel_window


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
        absent = absent_chunks.pop(job.run, 0)
        end_run(job.run)
        target.finish({"embedding_change:retries": retries, "embedding_change:absent": absent})
        note_transfer(source.url, size.nbytes, time.perf_counter() - started)
    except BaseException as exc:
        target.discard()
        absent_chunks.pop(job.run, None)
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
