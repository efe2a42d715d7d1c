"""The writes of a pyramid's levels: level 0 linked or copied from the source, each next level
halved from the one above, and failures that name the chunk, its year and the cause.

Level 0 is the source itself. The multiscales convention lets a level's `asset` point only
inside the pyramid group (no leading "/" and no ".."), and GDAL knows no Zarr references, so
level 0 cannot point at the source. Where the source's chunk files are already what level 0
stores (a local scores output: float32, one band per chunk, uncompressed, chunks of the tile
size, on the same file system), they are hard-linked into level 0: no byte is copied, the
pyramid stays a plain Zarr every reader opens, and it survives the source being moved or
deleted. Otherwise (a remote store, another file system, another layout) level 0 is copied.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from zarr.storage import LocalStore

from .chunk_files import chunk_codec, write_chunks
from .errors import EmbeddingChangeError, OutputError, StoreError
from .failures import (
    chunk_key,
    chunk_of_key,
    decode_cause,
    disk_full_words,
    failed_key,
    plain_cause,
    storage_chunks,
)
from .output import remove_if_refused
from .pyramid_levels import halve
from .retry import writes_refused

BATCH_TILES = 64  # output tiles per write task: the unit of progress and cancel


@dataclass(frozen=True)
class PyramidRun:
    """What the level tasks need to name a failure: the source, the output, the years."""

    source_url: str
    output_url: str  # the pyramid's final name (the run writes into a hidden sibling)
    years: tuple[int, ...]
    needed_bytes: int  # the whole pyramid's chunks: "about N MiB needed" on a full disk


def level_writes(
    run: PyramidRun, source, output_store, variable, level, resampling, tile, link, link_above
):
    """One delayed task per window of about BATCH_TILES output tiles of `level`.

    Level 0 links (`link`) or copies the source, one source band chunk at a time (a chunk
    holding all bands is read once); later levels read the level above, already written,
    twice the window's size (`link_above`: level 0 was linked).
    """
    destination = zarr.open_array(output_store, path=f"{level}/{variable}", mode="r+")
    if level == 0:
        band_step = 1 if link else source.array.chunks[1]
        task = link_window if link else copy_window
        above, extra = source.array, (() if link else (source.quantisation.nodata,))
    else:
        band_step = 1
        task = halve_window
        above = zarr.open_array(output_store, path=f"{level - 1}/{variable}", mode="r")
        # Level 1 of a linked level 0 reads the source's own files: its failures are the source's.
        extra = (resampling, source.array if level == 1 and link_above else None)
    n_time, n_band, ny, nx = destination.shape
    tiles_x = min(-(-nx // tile), max(1, BATCH_TILES // band_step))
    tiles_y = max(1, BATCH_TILES // (band_step * tiles_x))
    windows = _windows(destination.shape, band_step, tile, tiles_y, tiles_x)
    # A plain graph: dask.delayed walked (and hashed) the zarr arrays of every task's
    # arguments, a fifth of a whole build.
    name = f"pyramid-level-{level}-{uuid.uuid4().hex}"
    graph = {
        (name, i): (task, run, above, destination, window, *extra)
        for i, window in enumerate(windows)
    }
    layers = HighLevelGraph.from_collections(name, graph, dependencies=())
    return [Delayed(key, layers, layer=name) for key in graph]


def _windows(shape, band_step: int, tile: int, tiles_y: int, tiles_x: int):
    n_time, n_band, ny, nx = shape
    return [
        window
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


def can_link(source: zarr.Array, destination: zarr.Array) -> bool:
    """Whether level 0's chunk files can be the source's own (see the module's docstring)."""
    if not (isinstance(source.store, LocalStore) and isinstance(destination.store, LocalStore)):
        return False
    same = (
        source.dtype == destination.dtype
        and tuple(source.chunks) == tuple(destination.chunks)
        and source.chunks[:2] == (1, 1)
        and chunk_codec(source) == chunk_codec(destination) == "raw"
        and _is_nan(source.fill_value)
        and _is_nan(destination.fill_value)
    )
    if not same:
        return False
    probe_from = Path(source.store.root) / source.path / _metadata_name(source)
    probe_to = Path(destination.store.root) / destination.path / ".link-probe"
    try:
        os.link(probe_from, probe_to)
    except OSError:  # another file system, or one without hard links
        return False
    probe_to.unlink()
    return True


def link_window(run: PyramidRun, source: zarr.Array, destination: zarr.Array, window) -> None:
    """Level 0 over `window`: the source's chunk files hard-linked (absent ones stay absent)."""
    folder_from = Path(source.store.root) / source.path
    folder_to = Path(destination.store.root) / destination.path
    for position in _chunk_positions(destination, window):
        path_from = folder_from / source.metadata.encode_chunk_key(position)
        path_to = folder_to / destination.metadata.encode_chunk_key(position)
        try:
            if writes_refused(_run_url(destination)) or not folder_to.is_dir():
                raise OutputError(f"The run writing {run.output_url} was discarded.")
            path_to.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path_from, path_to)
            except PermissionError:  # e.g. protected_hardlinks: another user's read-only file
                shutil.copyfile(path_from, path_to)
            except FileExistsError:
                if not os.path.samefile(path_from, path_to):  # a task run again: done already
                    raise
        except FileNotFoundError as exc:
            if not path_from.exists():  # an absent chunk: no data, absent in level 0 too
                continue
            raise write_error(run, destination, window, exc, position) from exc
        except EmbeddingChangeError:
            raise
        except OSError as exc:
            raise write_error(run, destination, window, exc, position) from exc
    remove_if_refused(_run_url(destination))


def copy_window(run: PyramidRun, source: zarr.Array, destination: zarr.Array, window, nodata):
    """Level 0: the source values as floats; an integer source's no-data value becomes NaN."""
    values = read_window(run, source, window, level=None)
    floats = values.astype(np.result_type(values.dtype, np.float32))
    if nodata is not None:
        floats[values == nodata] = np.nan
    write_window(run, destination, window, floats)


def halve_window(
    run: PyramidRun, above: zarr.Array, destination: zarr.Array, window, resampling, origin=None
):
    """Level k+1 over `window` from the 2x larger window of level k. `origin`: the source
    array whose chunk files level k shares (a linked level 0), named in read errors."""
    t, b, rows, cols = window
    doubled = (t, b, slice(2 * rows.start, 2 * rows.stop), slice(2 * cols.start, 2 * cols.stop))
    try:
        values = above[doubled]
    except Exception as exc:
        if origin is not None:
            raise read_error(run, origin, doubled, exc, level=None) from exc
        level = int(destination.path.split("/")[0]) - 1
        raise read_error(run, above, doubled, exc, level) from exc
    write_window(run, destination, window, halve(values, resampling))


def read_window(run: PyramidRun, array: zarr.Array, window, level: int | None) -> np.ndarray:
    """array[window], or the engine's error naming the chunk: a StoreError for the source
    (level None), an OutputError for a level of the pyramid read back."""
    try:
        return array[window]
    except Exception as exc:
        raise read_error(run, array, window, exc, level) from exc


def write_window(run: PyramidRun, destination: zarr.Array, window, values: np.ndarray) -> None:
    """Write `values` at `window`: tile by tile as plain chunk files where the level is a local
    uncompressed array (chunk_files.write_chunks), else through zarr."""
    try:
        if writes_refused(_run_url(destination)):
            raise OutputError(f"The run writing {run.output_url} was discarded.")
        t, b, rows, cols = window
        tile_y, tile_x = destination.chunks[2:]
        for y0 in range(rows.start, rows.stop, tile_y):
            for x0 in range(cols.start, cols.stop, tile_x):
                part = values[..., y0 - rows.start : y0 - rows.start + tile_y, :]
                part = part[..., x0 - cols.start : x0 - cols.start + tile_x]
                if not write_chunks(destination, part, y0, x0, t0=t.start, b0=b.start):
                    h, w = part.shape[2:]
                    destination[t, b, y0 : y0 + h, x0 : x0 + w] = part
        remove_if_refused(_run_url(destination))
    except EmbeddingChangeError:
        raise
    except Exception as exc:
        raise write_error(run, destination, window, exc) from exc


# --- failures, named ----------------------------------------------------------------------


def read_error(run: PyramidRun, array: zarr.Array, window, exc, level: int | None):
    """A StoreError (the source) or OutputError (a level read back) naming the chunk, its
    year and the cause in plain words."""
    position, cause = _failing_chunk(array, window, exc)
    key, which = chunk_key(array, position), _year_words(run, array, position)
    words = decode_cause(cause)
    if level is None:
        fix = "Check the network and the server, then run again."
        if words.startswith("damaged chunk"):
            fix = "Rewrite that chunk from its source (run Change scores again for it)."
        elif words == "permission denied":
            fix = "Give read access to the store (file permissions, or the bucket's credentials)."
        return StoreError(f"Could not read {run.source_url}, chunk {key} ({which}): {words}. {fix}")
    return OutputError(
        f"Could not read back level {level} of {run.output_url}, chunk {key} ({which}): "
        f"{words}. Check the folder or bucket, then run again. The partial output was removed."
    )


def write_error(run: PyramidRun, destination: zarr.Array, window, exc, position=None):
    """An OutputError naming the pyramid, the chunk key and its year, and the cause."""
    if writes_refused(_run_url(destination)):
        return OutputError(f"The run writing {run.output_url} was discarded.")
    if position is None:
        key = failed_key(exc)
        position = chunk_of_key(key, 4) if key else None
    if position is None:
        t, b, rows, cols = window
        tile_y, tile_x = destination.chunks[2:]
        position = (t.start, b.start, rows.start // tile_y, cols.start // tile_x)
    key, which = chunk_key(destination, position), _year_words(run, destination, position)
    cause = plain_cause(exc)
    fix = "Check the folder or bucket can be written to, then run again."
    if cause == "disk full" and isinstance(destination.store, LocalStore):
        parent = Path(run.output_url).parent
        free = shutil.disk_usage(parent).free if parent.exists() else 0
        cause = disk_full_words(free, run.needed_bytes)
        fix = "Free some space, choose another folder or a smaller source."
    elif cause == "permission denied":
        fix = "Write where you have permission (folder rights, or the bucket's credentials)."
    return OutputError(
        f"Could not write {run.output_url}, chunk {key} ({which}): {cause}. {fix} "
        "The partial output was removed."
    )


def _failing_chunk(array: zarr.Array, window, exc):
    """The grid position of the stored object that failed, and its error: from the error's
    key where it names one, else by reading the window's objects one at a time."""
    key = failed_key(exc)
    position = chunk_of_key(key, array.ndim) if key else None
    if position is not None:
        return position, exc
    for candidate in _chunk_positions(array, window, storage_chunks(array)):
        spans = storage_chunks(array)
        piece = tuple(
            slice(p * s, min((p + 1) * s, n))
            for p, s, n in zip(candidate, spans, array.shape, strict=True)
        )
        try:
            array[piece]
        except Exception as error:
            return candidate, error
    return next(iter(_chunk_positions(array, window, storage_chunks(array)))), exc


def _chunk_positions(array: zarr.Array, window, chunks=None):
    chunks = chunks or array.chunks
    ranges = [
        range(s.start // c, -(-min(s.stop, n) // c))
        for s, c, n in zip(window, chunks, array.shape, strict=True)
    ]
    for t in ranges[0]:
        for b in ranges[1]:
            for y in ranges[2]:
                for x in ranges[3]:
                    yield (t, b, y, x)


def _year_words(run: PyramidRun, array: zarr.Array, position) -> str:
    per_object = storage_chunks(array)[0]
    t = position[0] * per_object
    if per_object == 1 and t < len(run.years):
        return f"year {run.years[t]}"
    return f"time chunk {position[0]}"


def _run_url(destination: zarr.Array) -> str:
    """The URL the run writes to, as refuse_writes was told it."""
    store = destination.store
    url = getattr(store, "url", None)
    return url if url else str(store.root)


def _metadata_name(array: zarr.Array) -> str:
    return "zarr.json" if array.metadata.zarr_format == 3 else ".zarray"


def _is_nan(value) -> bool:
    try:
        return bool(np.isnan(value))
    except TypeError:
        return False


def pyramid_bytes(shapes, n_planes: int, tile: int, itemsize: int = 4) -> int:
    """Bytes of every level's chunks (edge chunks padded), for the space check and its words."""
    return sum(
        n_planes * math.ceil(ny / tile) * math.ceil(nx / tile) * tile * tile * itemsize
        for ny, nx in shapes
    )
