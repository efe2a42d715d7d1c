"""A remote zarr store whose chunk reads go through a local chunk cache (core.chunk_cache).

It sits below zarr's codecs, where zarr asks the store for bytes: a whole chunk object, or,
for sharded arrays (the AEF mosaic), the shard's index and each inner chunk as a byte range
of the shard object. So an entry is what one request fetched, named by a hash of

    the store (URL and endpoint), the metadata documents this open read along the array's
    path (root zarr.json or .zgroup/.zattrs/.zmetadata, the array's zarr.json or .zarray),
    the object's key and the byte range,

so a store whose metadata changed gets new names and is never served stale. Metadata itself
is always fetched (it is what tells a changed store); chunks of an array whose metadata this
open did not read (a consolidated store) are named after its metadata document, fetched once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re

from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.storage import WrapperStore

from .chunk_cache import ChunkCache

METADATA_NAMES = ("zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata")
ARRAY_DOCUMENTS = ("zarr.json", ".zarray")
# Where a chunk key's array path ends: v3 "c" or "c.0.1", v2 "0.1.2" or "0" (nested).
CHUNK_PART = re.compile(r"c|c\..*|\d+(\.\d+)*")


def store_identity(url: str, storage_options: dict | None) -> str:
    """The URL and the server it is read from (an S3-compatible endpoint); never credentials."""
    options = storage_options or {}
    endpoint = options.get("endpoint_url") or (options.get("client_kwargs") or {}).get(
        "endpoint_url"
    )
    endpoint = endpoint or (os.environ.get("AWS_ENDPOINT_URL") if url.startswith("s3") else None)
    return f"{url}\n{endpoint or ''}"


class CachingStore(WrapperStore):
    """Reads chunks from `cache` when it has them, else from the wrapped store (and keeps them)."""

    def __init__(self, store, identity: str, cache: ChunkCache):
        super().__init__(store)
        self.identity = identity
        self.cache = cache
        self._documents: dict[str, str | None] = {}  # metadata key -> sha256 of its bytes
        self._probes: dict[tuple[int, str], asyncio.Task] = {}

    def __repr__(self) -> str:
        return f"CachingStore({self._store!r}, {self.cache.folder!r})"

    async def get(self, key, prototype, byte_range=None):
        name = key.rsplit("/", 1)[-1]
        if name in METADATA_NAMES:
            value = await self._store.get(key, prototype, byte_range)
            if byte_range is None:
                self._documents[key] = _digest(value)
            return value
        fingerprint = await self._fingerprint(key)
        if fingerprint is None:  # not a chunk of an array we know: read through
            return await self._store.get(key, prototype, byte_range)
        entry = _entry_name(self.identity, fingerprint, key, byte_range)
        cached = await asyncio.to_thread(self.cache.read, entry)
        if cached is not None:
            return prototype.buffer.from_bytes(cached)
        value = await self._store.get(key, prototype, byte_range)
        if value is not None:
            await asyncio.to_thread(self.cache.write, entry, value.to_bytes())
        return value

    async def get_partial_values(self, prototype, key_ranges):
        return await asyncio.gather(
            *(self.get(key, prototype, byte_range) for key, byte_range in key_ranges)
        )

    def with_read_only(self, read_only: bool = False):
        return CachingStore(self._store.with_read_only(read_only), self.identity, self.cache)

    async def _fingerprint(self, key: str) -> str | None:
        """A hash of the metadata documents this open read at or above the key's array."""
        array = await self._array_of(key)
        if array is None:
            return None
        folders = _ancestors(array)
        documents = sorted(
            (document, digest)
            for document, digest in self._documents.items()
            if digest is not None and document.rpartition("/")[0] in folders
        )
        return hashlib.sha256(json.dumps(documents).encode()).hexdigest()

    async def _array_of(self, key: str) -> str | None:
        """The path of the array a chunk key belongs to, if its metadata can be read."""
        parts = key.split("/")
        for i in range(1, len(parts)):
            if not CHUNK_PART.fullmatch(parts[i]):
                continue
            array = "/".join(parts[:i])
            if any(self._documents.get(f"{array}/{name}") for name in ARRAY_DOCUMENTS):
                return array
            if await self._probe(array):
                return array
        return None

    async def _probe(self, array: str) -> bool:
        """Read the array's metadata document once (a consolidated open never read it)."""
        probe = (id(asyncio.get_running_loop()), array)
        task = self._probes.get(probe)
        if task is None:
            task = asyncio.ensure_future(self._read_array_document(array))
            self._probes[probe] = task
        return await asyncio.shield(task)

    async def _read_array_document(self, array: str) -> bool:
        for name in ARRAY_DOCUMENTS:
            key = f"{array}/{name}"
            if key not in self._documents:
                value = await self._store.get(key, default_buffer_prototype())
                self._documents[key] = _digest(value)
            if self._documents[key]:
                return True
        return False


def _ancestors(path: str) -> set[str]:
    """The folders of an array's metadata and its groups' (the root is "")."""
    parts = path.split("/")
    return {"/".join(parts[:i]) for i in range(len(parts) + 1)}


def _digest(value) -> str | None:
    return None if value is None else hashlib.sha256(value.to_bytes()).hexdigest()


def _entry_name(identity: str, fingerprint: str, key: str, byte_range) -> str:
    if byte_range is None:
        span = ""
    elif isinstance(byte_range, RangeByteRequest):
        span = f"{byte_range.start}-{byte_range.end}"
    elif isinstance(byte_range, OffsetByteRequest):
        span = f"{byte_range.offset}-"
    elif isinstance(byte_range, SuffixByteRequest):
        span = f"-{byte_range.suffix}"
    else:
        span = repr(byte_range)
    text = "\0".join((identity, fingerprint, key, span))
    return hashlib.sha256(text.encode()).hexdigest()
