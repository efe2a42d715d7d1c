"""One run's reads of a remote store: shard indexes fetched once, chunks fetched ahead.

A block's chunks (one per year) are ranged GETs into their shards (or whole chunk objects in
the chunked layout), made on zarr's event loop through the run's retrying store. ReadAhead keeps
the chunks of the next blocks, in the order the scheduler will score them, in flight while the
current ones are scored: up to `requests` requests at once (enough to fill a 1 Gbit link at
80 ms; reached by a slow start, so the first block arrives first), and never more than
`blocks_ahead` fetched blocks waiting to be taken, so memory stays at most (blocks_ahead +
worker threads) x years x one encoded chunk (~3.6 MB in the mosaic): ~230 MB for 9 years with
the default 32 requests (5 blocks ahead, 2 threads).
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import _get_loop, sync  # zarr's I/O loop: its stores' sessions live there
from zarr.storage import LocalStore

from .chunk_files import chunk_codec, reused_buffer
from .shard_files import (
    ShardIndexes,
    ShardLayout,
    chunk_slice,
    damaged,
    decode_block_chunk,
    read_local_shards,
)
from .window import PixelWindow

READ_AHEAD_REQUESTS = 32  # requests in flight: 1 Gbit x 80 ms is 10 MB, ~3-4 mosaic chunks
RUNS_KEPT = 8  # runs whose reading state a process keeps (cluster workers never hear the end)


@dataclass(frozen=True)
class ChunkLayout:
    """The chunked layout's objects: one per chunk, in the form ShardLayout reads them."""

    metadata: object
    path: str
    inner: tuple[int, ...]
    codec: str

    def locate(self, t: int, block: PixelWindow) -> tuple[str, None]:
        y, x = block.row0 // self.inner[2], block.col0 // self.inner[3]
        key = self.metadata.encode_chunk_key((t // self.inner[0], 0, y, x))
        return f"{self.path}/{key}", None


def remote_layout(array) -> ShardLayout | ChunkLayout | None:
    """How the direct remote path reads the array's chunks; None: through zarr."""
    sharded = ShardLayout.of(array)
    if sharded is not None:
        return sharded
    inner = tuple(array.chunks)
    if inner[0] != 1 or inner[1] != array.shape[1]:
        return None
    codec = chunk_codec(array, local_only=False)
    return None if codec is None else ChunkLayout(array.metadata, array.path, inner, codec)


class RemoteChunks:
    """Fetches a block's encoded chunks; each shard's index once (on zarr's loop only)."""

    def __init__(self, store, layout):
        self.store = store
        self.layout = layout
        self._indexes: dict[str, asyncio.Future] = {}

    async def block(self, years, block: PixelWindow) -> list:
        return list(await asyncio.gather(*(self.chunk(t, block) for t in years)))

    async def chunk(self, t: int, block: PixelWindow):
        """The encoded chunk's bytes, or None where it (or its shard) is not stored."""
        key, local = self.layout.locate(t, block)
        prototype = default_buffer_prototype()
        if local is None:
            return _bytes(await self.store.get(key, prototype))
        index = await self._index(key)
        span = chunk_slice(index, local)
        if span is None:
            return None
        data = _bytes(await self.store.get(key, prototype, byte_range=_range(*span)))
        if data is None or len(data) != span[1] - span[0]:
            got = 0 if data is None else len(data)
            raise damaged(key, local, EOFError(f"{got} of {span[1] - span[0]} bytes"))
        return data

    async def _index(self, key: str):
        task = self._indexes.get(key)
        if task is None or (task.done() and task.exception() is not None):
            task = asyncio.ensure_future(self._fetch_index(key))
            self._indexes[key] = task
        return await asyncio.shield(task)

    async def _fetch_index(self, key: str):
        from zarr.abc.store import RangeByteRequest, SuffixByteRequest

        size = self.layout.index_size
        where = SuffixByteRequest(size) if self.layout.index_at_end else RangeByteRequest(0, size)
        data = _bytes(await self.store.get(key, default_buffer_prototype(), byte_range=where))
        return None if data is None else self.layout.parse_index(data, key)


def _range(start: int, stop: int):
    from zarr.abc.store import RangeByteRequest

    return RangeByteRequest(start, stop)


def _bytes(buffer):
    """The bytes of a zarr Buffer as a uint8 array, without copying them."""
    return None if buffer is None else buffer.as_numpy_array()


class ReadAhead:
    """The chunks of the blocks after the one being scored, in flight while it is scored."""

    def __init__(self, chunks: RemoteChunks, years, order, requests: int = READ_AHEAD_REQUESTS):
        self.chunks = chunks
        self.years = tuple(years)
        self.blocks_ahead = max(2, math.ceil(requests / max(1, len(self.years))) + 1)
        self._order = list(order)
        self._next = 0
        self._taken: set[PixelWindow] = set()
        self._waiting: dict[PixelWindow, object] = {}
        self._lock = threading.Lock()
        self._loop = _get_loop()
        self._requests = requests
        self._slots: asyncio.Semaphore | None = None
        self._growth = 0  # slots still to add as answers arrive
        self._closed = False

    def take(self, block: PixelWindow) -> list:
        """The block's encoded chunks (fetching them now if they were not ahead)."""
        with self._lock:
            future = self._waiting.pop(block, None)
            if future is None:
                future = self._submit(block)
            self._taken.add(block)
            self._top_up()
        return future.result()

    def start(self) -> None:
        """Send the first blocks' requests now, before the first block task asks for them."""
        with self._lock:
            self._top_up()

    def close(self) -> None:
        """Cancel what is still in flight (the run ended, failed or was cancelled)."""
        with self._lock:
            self._closed = True
            for future in self._waiting.values():
                future.cancel()
            self._waiting.clear()

    def _top_up(self) -> None:
        while not self._closed and len(self._waiting) < self.blocks_ahead:
            if self._next >= len(self._order):
                return
            block = self._order[self._next]
            self._next += 1
            if block not in self._taken and block not in self._waiting:
                self._waiting[block] = self._submit(block)

    def _submit(self, block: PixelWindow):
        return asyncio.run_coroutine_threadsafe(self._fetch(block), self._loop)

    async def _fetch(self, block: PixelWindow) -> list:
        if self._slots is None:  # made on the loop it is used on
            # A slow start: the first block's requests alone, then one more slot per answer
            # (doubling per round trip) up to `requests`. On a slow link 32 requests sharing
            # it would hold the first tile back until ~4 blocks had arrived (10 s at 100 Mbit).
            first = min(self._requests, len(self.years))
            self._slots = asyncio.Semaphore(first)
            self._growth = self._requests - first

        async def one(t):
            async with self._slots:
                data = await self.chunks.chunk(t, block)
            if self._growth > 0:
                self._growth -= 1
                self._slots.release()
            return data

        return list(await asyncio.gather(*(one(t) for t in self.years)))


@dataclass
class RunReads:
    """What one run's block reads share: shard indexes and, for remote stores, the fetcher."""

    indexes: ShardIndexes = field(default_factory=ShardIndexes)
    remote: RemoteChunks | None = None
    ahead: ReadAhead | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self, source, years, block: PixelWindow, out: np.ndarray) -> bool:
        """The block's values into `out` by the direct paths; False: zarr must read it."""
        array = source.array
        inner = tuple(array.chunks)
        inside = (block.row0 // inner[2], block.col0 // inner[3]) == (
            (block.row1 - 1) // inner[2],
            (block.col1 - 1) // inner[3],
        )
        if not inside:
            return False

        def chunk_buffer():
            return reused_buffer((array.shape[1], inner[2], inner[3]), array.dtype, "chunk")

        if isinstance(array.store, LocalStore):
            layout = ShardLayout.of(array)
            if layout is None:
                return False
            read_local_shards(array, layout, self.indexes, years, block, out, chunk_buffer)
            return True
        remote = self.remote_chunks(source)
        if remote is None:
            return False
        if self.ahead is not None and tuple(years) == self.ahead.years:
            encoded = self.ahead.take(block)
        else:
            encoded = sync(remote.block(years, block))
        for i, (t, data) in enumerate(zip(years, encoded, strict=True)):
            if data is None:
                out[i] = array.fill_value
                continue
            try:
                decode_block_chunk(data, remote.layout, block, out[i], chunk_buffer)
            except Exception as exc:
                key, local = remote.layout.locate(t, block)
                raise damaged(key, local, exc) from exc
        return True

    def remote_chunks(self, source) -> RemoteChunks | None:
        with self._lock:
            if self.remote is None:
                layout = remote_layout(source.array)
                if layout is None:
                    return None
                self.remote = RemoteChunks(source.array.store, layout)
            return self.remote


_runs: OrderedDict[str, RunReads] = OrderedDict()
_runs_lock = threading.Lock()


def run_reads(run: str) -> RunReads:
    """The reading state of run `run` in this process (made on first use)."""
    with _runs_lock:
        reads = _runs.get(run)
        if reads is None:
            reads = _runs[run] = RunReads()
            while len(_runs) > RUNS_KEPT:
                _runs.popitem(last=False)
        return reads


def start_read_ahead(run: str, source, years, order, requests: int) -> None:
    """Fetch the chunks of `order`'s blocks ahead of the kernel, for a remote store."""
    reads = run_reads(run)
    remote = reads.remote_chunks(source)
    if remote is not None and requests > 0:
        reads.ahead = ReadAhead(remote, years, order, requests)
        reads.ahead.start()


def end_run(run: str) -> None:
    """Forget a run's state, cancelling reads still ahead."""
    with _runs_lock:
        reads = _runs.pop(run, None)
    if reads is not None and reads.ahead is not None:
        reads.ahead.close()
