"""Reading a block's values: chunk files directly or through zarr, absent chunks as no data,
and errors that name the chunk, its year and the cause.
"""

from __future__ import annotations

import numpy as np
from zarr.core.buffer.cpu import NDBuffer

from .chunk_files import read_chunks
from .errors import StoreError
from .failures import chunk_key, chunk_of_key, decode_cause, failed_key, storage_chunks
from .read_ahead import RunReads
from .store import EmbeddingStore
from .window import PixelWindow


def read_block(
    source: EmbeddingStore,
    year_indices,
    block: PixelWindow,
    out: np.ndarray,
    reads: RunReads | None = None,
):
    """The block's values of those years into `out`: shards or chunk files directly (with the
    run's shard indexes and read-ahead, core.read_ahead), else through zarr."""
    if (reads or RunReads()).read(source, year_indices, block, out):
        return
    if read_chunks(source.array, year_indices, block, out):
        return
    rows, cols = slice(block.row0, block.row1), slice(block.col0, block.col1)
    years = list(year_indices)
    if tuple(year_indices) == tuple(range(source.array.shape[0])):
        years = slice(None)
    selection = (years, slice(None), rows, cols)
    source.array.get_orthogonal_selection(selection, out=NDBuffer.from_numpy_array(out))


def mark_absent_years(values: np.ndarray, fill_value, nodata) -> int:
    """Years of the block that read as all fill (absent chunks) become no data; their count.

    An absent chunk reads as the store's fill_value, which need not be the no-data value:
    under euclidean a fill of 0 would score as a real embedding. The kernel takes a year as
    no data where its first band is `nodata` (NaN for floats), so that band is set to it.
    """
    fill = 0 if fill_value is None else fill_value
    floats = values.dtype.kind == "f"
    absent = 0
    for i in range(values.shape[0]):
        first = values[i, 0]
        if floats and np.isnan(fill):
            if not np.isnan(first).all() or not np.isnan(values[i]).all():
                continue
        elif not (first == fill).all() or not (values[i] == fill).all():
            continue
        absent += 1
        if floats:
            first[...] = np.nan
        elif nodata is not None:
            first[...] = nodata
    return absent


def read_error(source: EmbeddingStore, year_indices, block: PixelWindow, exc) -> StoreError:
    """A StoreError naming the store, the chunk key and its year, and the cause in plain words."""
    array = source.array
    per_object = storage_chunks(array)
    key = failed_key(exc)
    position = chunk_of_key(key, array.ndim) if key else None
    cause = exc
    if position is None:  # e.g. a decode error: find the year by reading one at a time
        position, cause = _failing_year(source, year_indices, block, exc)
    key = chunk_key(array, position)
    t = position[0] * per_object[0]
    year = int(source.times[t]) if per_object[0] == 1 and t < len(source.times) else None
    words = decode_cause(cause)
    fix = "Check the network and the server, then run again."
    if words.startswith("damaged chunk"):
        fix = "Rewrite that chunk from its source, or leave that year out (years)."
    elif words == "permission denied":
        fix = "Give read access to the store (file permissions, or the bucket's credentials)."
    which = f"year {year}" if year is not None else f"time chunk {position[0]}"
    return StoreError(f"Could not read {source.url}, chunk {key} ({which}): {words}. {fix}")


def _failing_year(source, year_indices, block, exc):
    per_object = storage_chunks(source.array)
    position = (0, 0, block.row0 // per_object[2], block.col0 // per_object[3])
    one = np.empty((1, source.array.shape[1], *block.shape), source.dtype)
    for t in year_indices:
        try:
            read_block(source, (t,), block, one)
        except Exception as error:
            return (t // per_object[0], *position[1:]), error
    return (year_indices[0] // per_object[0], *position[1:]), exc
