"""Sharded stores read directly: each shard's index read once per run, inner chunks decoded
straight into the block buffer.

The AEF mosaic keeps 16 x 16 inner chunks of [1, 64, 256, 256] in each shard object, with an
index of (offset, length) pairs and its crc32c at the end (core.aef_layout). zarr-python reads
the index again for every inner chunk and copies each chunk twice; here the index is read once
per shard and run (ShardIndexes), checked against its crc32c, and a block's inner chunk is
decoded from the file's pages (local) or from one ranged GET (remote, core.read_ahead).
Absent shards and inner chunks read as the fill value (no data). Bytes that do not decode raise
DamagedChunkError naming the shard and the inner chunk. Layouts other than bytes (+ zstd)
inner chunks and a bytes (+ crc32c) index go through zarr (ShardLayout.of returns None).
"""

from __future__ import annotations

import mmap
import os
import threading
from dataclasses import dataclass

import google_crc32c
import numcodecs
import numpy as np
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec
from zarr.storage import LocalStore

from .chunk_files import plain_codec
from .window import PixelWindow

_ZSTD = numcodecs.Zstd()
NO_CHUNK = np.uint64(2**64 - 1)  # the index's mark of an absent inner chunk


class DamagedChunkError(ValueError):
    """Stored bytes that are not what the metadata says; `filename` is the object's key."""

    def __init__(self, message: str, key: str):
        super().__init__(message)
        self.filename = key


@dataclass(frozen=True)
class ShardLayout:
    """What a sharded array's metadata says about its shard objects, for the direct path."""

    metadata: object  # the array's zarr metadata: it encodes chunk keys
    path: str
    shard: tuple[int, ...]
    inner: tuple[int, ...]
    codec: str  # "zstd" or "raw" inner chunks
    index_at_end: bool
    index_crc32c: bool

    @classmethod
    def of(cls, array: zarr.Array) -> ShardLayout | None:
        """The layout of an array whose shards the direct path reads, else None."""
        metadata = array.metadata
        codecs = getattr(metadata, "codecs", ())
        if (
            metadata.zarr_format != 3
            or len(codecs) != 1
            or not isinstance(codecs[0], ShardingCodec)
        ):
            return None
        sharding = codecs[0]
        codec = plain_codec(sharding.codecs, array.dtype)
        index = sharding.index_codecs
        plain_index = isinstance(index[0], BytesCodec) and _little_endian(index[0])
        crc = len(index) == 2 and isinstance(index[1], Crc32cCodec)
        if codec is None or not plain_index or len(index) > 2 or (len(index) == 2 and not crc):
            return None
        shard, inner = tuple(array.shards), tuple(array.chunks)
        if inner[1] != array.shape[1] or any(s % i for s, i in zip(shard, inner, strict=True)):
            return None  # a block must find all its bands in one inner chunk
        at_end = getattr(sharding.index_location, "value", sharding.index_location) == "end"
        return cls(metadata, array.path, shard, inner, codec, at_end, crc)

    @property
    def counts(self) -> tuple[int, ...]:
        """Inner chunks per shard along each axis."""
        return tuple(s // i for s, i in zip(self.shard, self.inner, strict=True))

    @property
    def index_size(self) -> int:
        return 16 * int(np.prod(self.counts)) + (4 if self.index_crc32c else 0)

    def locate(self, t: int, block: PixelWindow) -> tuple[str, tuple[int, ...]]:
        """(shard key with the array's path, inner chunk position in it) of year index t."""
        y, x = block.row0 // self.inner[2], block.col0 // self.inner[3]
        counts = self.counts
        position = (t // self.shard[0], 0, y // counts[2], x // counts[3])
        local = (t % self.shard[0] // self.inner[0], 0, y % counts[2], x % counts[3])
        return f"{self.path}/{self.metadata.encode_chunk_key(position)}", local

    def parse_index(self, data, key: str) -> np.ndarray:
        """The (offset, length) pairs of a shard's index bytes, checked against their crc32c."""
        data = memoryview(data)
        if len(data) != self.index_size:
            raise DamagedChunkError(
                f"shard {key} is shorter than its index ({len(data)} of {self.index_size} bytes)",
                key,
            )
        pairs = data[: 16 * int(np.prod(self.counts))]
        if self.index_crc32c:
            stored = int.from_bytes(data[-4:], "little")
            if google_crc32c.value(bytes(pairs)) != stored:
                raise DamagedChunkError(f"the index of shard {key} fails its crc32c check", key)
        return np.frombuffer(pairs, "<u8").reshape(*self.counts, 2)


def _little_endian(codec: BytesCodec) -> bool:
    endian = getattr(codec.endian, "value", codec.endian)
    return endian in (None, "little")


class ShardIndexes:
    """The shard indexes of one run, each read once however many threads ask at once.

    An entry is the index array, or None for a shard that is not stored (all no data).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._entries: dict[str, _Once] = {}

    def get(self, key: str, load):
        with self._lock:
            entry = self._entries.setdefault(key, _Once())
        return entry.value(load)

    def known(self, key: str) -> bool:
        with self._lock:
            entry = self._entries.get(key)
        return entry is not None and entry.done

    def __len__(self) -> int:
        return len(self._entries)


class _Once:
    def __init__(self):
        self._lock = threading.Lock()
        self.done = False
        self._value = None

    def value(self, load):
        with self._lock:
            if not self.done:
                self._value = load()  # a failure leaves it to the next caller to try again
                self.done = True
            return self._value


def chunk_slice(index: np.ndarray | None, local: tuple[int, ...]) -> tuple[int, int] | None:
    """(start, stop) of an inner chunk's bytes in its shard; None: absent (or the shard is)."""
    if index is None:
        return None
    offset, length = index[local]
    if offset == NO_CHUNK and length == NO_CHUNK:
        return None
    return int(offset), int(offset + length)


def decode_chunk(encoded, codec: str, out: np.ndarray) -> None:
    """An inner chunk's bytes into `out` (its full shape), decoded where they lie."""
    if codec == "zstd":
        _ZSTD.decode(encoded, out=out)
        return
    raw = np.frombuffer(encoded, dtype=out.dtype)
    if raw.size != out.size:
        raise ValueError(f"{raw.size * out.itemsize} bytes for a chunk of {out.nbytes}")
    out[...] = raw.reshape(out.shape)


def decode_block_chunk(encoded, layout, block: PixelWindow, out: np.ndarray, chunk_buffer):
    """A block's part of an inner chunk into `out` (bands, y, x): the whole chunk straight in,
    a part (window or store edge) through `chunk_buffer()`, the reused full-chunk buffer."""
    cy, cx = layout.inner[2], layout.inner[3]
    if block.shape == (cy, cx):
        decode_chunk(encoded, layout.codec, out)
        return
    chunk = chunk_buffer()
    decode_chunk(encoded, layout.codec, chunk)
    y, x = block.row0 // cy, block.col0 // cx
    out[...] = chunk[
        :, block.row0 - y * cy : block.row1 - y * cy, block.col0 - x * cx : block.col1 - x * cx
    ]


def damaged(key: str, local: tuple[int, ...] | None, exc: BaseException) -> DamagedChunkError:
    """The error for a chunk whose bytes do not decode: the inner chunk of shard `key`, or the
    chunk object `key` (local None)."""
    where = (
        f"chunk {key}"
        if local is None
        else f"inner chunk (y {local[2]}, x {local[3]}) of shard {key}"
    )
    return DamagedChunkError(f"{where} does not decode: {type(exc).__name__}: {exc}", key)


def read_local_shards(
    array: zarr.Array,
    layout: ShardLayout,
    indexes: ShardIndexes,
    years,
    block: PixelWindow,
    out: np.ndarray,
    chunk_buffer,
) -> None:
    """The block's values of those year indices into `out`, from a local store's shard files."""
    root = array.store.root
    for i, t in enumerate(years):
        key, local = layout.locate(t, block)
        path = root / key
        index = indexes.get(key, lambda path=path, key=key: _local_index(path, layout, key))
        span = chunk_slice(index, local)
        if span is None:
            out[i] = array.fill_value
            continue
        with path.open("rb", buffering=0) as file:
            size = os.fstat(file.fileno()).st_size
            if span[1] > size:
                raise damaged(key, local, EOFError(f"bytes {span} of a {size}-byte shard"))
            # Decoded from the page cache where it lies (see core.chunk_files).
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                encoded = memoryview(mapped)[span[0] : span[1]]
                try:
                    decode_block_chunk(encoded, layout, block, out[i], chunk_buffer)
                except Exception as exc:
                    raise damaged(key, local, exc) from exc
                finally:
                    encoded.release()


def _local_index(path, layout: ShardLayout, key: str) -> np.ndarray | None:
    try:
        file = path.open("rb", buffering=0)
    except FileNotFoundError:
        return None
    with file:
        size = os.fstat(file.fileno()).st_size
        start = size - layout.index_size if layout.index_at_end else 0
        data = os.pread(file.fileno(), layout.index_size, max(start, 0))
    return layout.parse_index(data, key)


def is_local(array: zarr.Array) -> bool:
    return isinstance(array.store, LocalStore)
