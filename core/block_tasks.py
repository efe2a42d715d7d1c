"""Block tasks: read and score one block of the window, regroup scored blocks into output tiles,
write each tile once (core.pipeline builds the run around them).

Blocks follow the store's chunk edges, so each reads whole chunks once: all years and bands
of its pixels. Scored blocks are regrouped into 256 x 256 output tiles (the output grid starts
at the window's corner, not at a chunk edge) and each tile is written by exactly one task.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

import dask
import numpy as np
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from . import kernels
from .block_reads import mark_absent_years, read_block, read_error
from .chunk_cache import ChunkCache
from .chunk_files import reused_buffer
from .errors import EmbeddingChangeError
from .output import OUTPUT_CHUNK, write_error
from .quantisation import SIGNED_SQUARE
from .read_ahead import run_reads
from .retry import DEFAULT_POLICY, RetryPolicy
from .store import EmbeddingStore, cached_embedding_store
from .summary import write_tile_with_summary
from .window import PixelWindow, blocks


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
absent_chunks = Counter()
absent_lock = threading.Lock()


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
        with absent_lock:
            absent_chunks[job.run] += absent
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
