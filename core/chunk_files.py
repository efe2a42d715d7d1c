"""Direct chunk files for local stores: read and write them without zarr's per-chunk copies.

Only for layouts whose chunk files are plain C-order bytes in this machine's byte order,
optionally zstd-compressed (what the pipeline reads and writes most). Each function returns
False for anything else, and the caller goes through zarr, which reports real errors.
Through zarr the same reads cost ~1.5x and the writes ~3x the CPU (a fresh array and a copy
per chunk; a temporary file and a rename per written chunk).
"""

from __future__ import annotations

import mmap
import os
import sys
import threading
from pathlib import Path

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BytesCodec, ZstdCodec
from zarr.storage import LocalStore

from .window import PixelWindow

_ZSTD = numcodecs.Zstd()


def chunk_codec(array: zarr.Array, local_only: bool = True) -> str | None:
    """ "raw" or "zstd" for an array (local unless local_only is False) whose chunks are
    native-order C bytes, else None."""
    if local_only and not isinstance(array.store, LocalStore):
        return None
    if array.dtype.byteorder not in ("=", "|", "<" if sys.byteorder == "little" else ">"):
        return None
    metadata = array.metadata
    if metadata.zarr_format == 3:
        return plain_codec(metadata.codecs, array.dtype)
    if metadata.filters or metadata.order != "C":
        return None
    if metadata.compressor is None:
        return "raw"
    return "zstd" if isinstance(metadata.compressor, numcodecs.Zstd) else None


def plain_codec(codecs, dtype: np.dtype) -> str | None:
    """ "raw" or "zstd" for Zarr v3 codecs that are native-order bytes (+ zstd), else None.

    The byte order matters only for items wider than a byte (an int8 embedding reads the same
    whatever endian its bytes codec names)."""
    if not codecs or not isinstance(codecs[0], BytesCodec):
        return None
    endian = getattr(codecs[0].endian, "value", codecs[0].endian)  # an enum, or a str in 3.2+
    if np.dtype(dtype).itemsize > 1 and endian not in (None, sys.byteorder):
        return None
    if len(codecs) == 1:
        return "raw"
    if len(codecs) == 2 and isinstance(codecs[1], ZstdCodec):
        return "zstd"
    return None


_thread_buffers = threading.local()


def reused_buffer(shape: tuple[int, ...], dtype: np.dtype, name: str = "block") -> np.ndarray:
    """This thread's buffer `name`, reused from block to block: a fresh 36 MiB array per
    block costs as much CPU in page faults as decompressing a third of it. The scores
    never alias it (the kernel writes a new array), so the next block may overwrite it."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buffer = getattr(_thread_buffers, name, None)
    if buffer is None or buffer.size < size:
        buffer = np.empty(size, np.uint8)
        setattr(_thread_buffers, name, buffer)
    return buffer[:size].view(dtype).reshape(shape)


def read_chunks(array: zarr.Array, years, block: PixelWindow, out: np.ndarray) -> bool:
    """Decode a block's chunk files straight into `out`, where zarr would only add copies.

    Only for the common local layout: one year and every band per chunk, the block inside
    one chunk, zstd-compressed native-order bytes. A whole chunk decodes into `out`, a part
    (window or store edge) into a reused chunk buffer first. False: not that case, or anything
    unexpected.
    """
    chunk_t, chunk_b, chunk_y, chunk_x = array.chunks
    n_bands = array.shape[1]
    y, x = block.row0 // chunk_y, block.col0 // chunk_x
    inside = (block.row1 - 1) // chunk_y == y and (block.col1 - 1) // chunk_x == x
    if not (inside and chunk_t == 1 and chunk_b == n_bands and chunk_codec(array) == "zstd"):
        return False
    folder = array.store.root / array.path
    whole = block.shape == (chunk_y, chunk_x)
    rows = slice(block.row0 - y * chunk_y, block.row1 - y * chunk_y)
    cols = slice(block.col0 - x * chunk_x, block.col1 - x * chunk_x)
    try:
        chunk = None if whole else reused_buffer((n_bands, chunk_y, chunk_x), array.dtype, "chunk")
        for i, year in enumerate(years):
            path = folder / array.metadata.encode_chunk_key((year, 0, y, x))
            try:
                file = path.open("rb", buffering=0)
            except FileNotFoundError:
                out[i] = array.fill_value
                continue
            # Decoded from the page cache where it lies: reading the file into a new bytes
            # object first cost a quarter as much CPU again as decoding it. (zarr replaces a
            # chunk file by renaming a new one over it, which leaves this mapping intact.)
            with file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as encoded:
                if whole:
                    _ZSTD.decode(encoded, out=out[i])
                else:
                    _ZSTD.decode(encoded, out=chunk)
                    out[i] = chunk[:, rows, cols]
    except Exception:  # e.g. a chunk that is not what the metadata says: let zarr say so
        return False
    return True


def write_chunks(
    array: zarr.Array, tile: np.ndarray, y0: int, x0: int, *, t0: int = 0, b0: int = 0
) -> bool:
    """Write a one-chunk tile's chunks as plain files, as zarr stores them uncompressed.

    The tile's (time, band) planes start at (t0, b0) of the array (a pyramid task writes a
    few of them; the scores pipeline all).

    Each chunk goes to a hidden temporary file renamed into place, as zarr does: readers of
    the run's folder while it runs (QGIS's live layers) never see half a chunk. Edge tiles are
    padded with NaN to the full chunk, all-NaN chunks left out, both as zarr does. False: not
    a local uncompressed store or not one chunk's tile.
    """
    chunk_y, chunk_x = array.chunks[2:]
    _, _, h, w = tile.shape
    ny, nx = array.shape[2:]
    fits = (h == chunk_y or y0 + h == ny) and (w == chunk_x or x0 + w == nx)
    aligned = y0 % chunk_y == 0 and x0 % chunk_x == 0 and h <= chunk_y and w <= chunk_x
    if not (fits and aligned and array.chunks[:2] == (1, 1) and tile.dtype == array.dtype):
        return False
    if chunk_codec(array) != "raw":
        return False
    folder = array.store.root / array.path
    y, x = y0 // chunk_y, x0 // chunk_x
    padded = np.full((chunk_y, chunk_x), np.nan, array.dtype)
    for t in range(tile.shape[0]):
        for b in range(tile.shape[1]):
            part = tile[t, b]
            if np.isnan(part).all():
                continue
            padded[:h, :w] = part
            path = folder / array.metadata.encode_chunk_key((t0 + t, b0 + b, y, x))
            _make_folders_below(folder, path.parent)
            partial = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
            partial.write_bytes(padded.data)
            os.replace(partial, path)
    return True


def _make_folders_below(folder: Path, directory: Path) -> None:
    """Create `directory` and its parents up to, never including, the array's `folder`.

    If the run's folder was discarded meanwhile, this fails instead of creating it again.
    """
    missing = []
    while not directory.is_dir():
        if directory == folder:
            raise FileNotFoundError(f"{folder} is gone: the run was discarded")
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
