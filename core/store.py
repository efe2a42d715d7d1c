"""Open an embedding cube by path or URL: its array, dims, years, grid and quantisation.

Local folders, file://, s3:// (anonymous unless credentials are given), https://, gs://;
Zarr v2 and v3, consolidated or not.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import zarr
from zarr.core.array import parse_array_metadata
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore, StorePath

from .cached_store import CachingStore, store_identity
from .chunk_cache import ChunkCache
from .credentials import StorageOptions, fsspec_options, remember_secrets
from .errors import StoreError
from .failures import plain_cause
from .first_reads import COORDINATES, FirstReadsStore, forget_first_reads, opening_keys
from .grid import Grid
from .quantisation import Quantisation
from .retry import DEFAULT_POLICY, RetryingStore, RetryPolicy

EMBEDDING_DIMS = ("time", "band", "y", "x")


@dataclass(frozen=True)
class EmbeddingStore:
    """An opened embedding cube: the zarr array (time, band, y, x) and what its metadata says."""

    url: str
    variable: str
    storage_options: dict
    array: zarr.Array
    times: np.ndarray
    bands: tuple[str, ...]
    grid: Grid
    quantisation: Quantisation
    attrs: dict
    retry: RetryPolicy = DEFAULT_POLICY
    cache: ChunkCache | None = None  # remote chunks read through this cache (core.chunk_cache)

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def chunks(self) -> tuple[int, ...]:
        return tuple(self.array.chunks)

    def __reduce__(self):
        """Pickled (to dask workers) as its metadata: the worker rebuilds it without a request."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "array"}
        return _rebuilt_store, (values, self.array.path, self.array.metadata.to_dict())

    def __dask_tokenize__(self):
        return (
            self.url,
            self.variable,
            json.dumps(self.storage_options, sort_keys=True, default=str),
            self.retry,
            json.dumps(self.array.metadata.to_dict(), default=str),
        )


def reading_through(source: EmbeddingStore, cache) -> EmbeddingStore:
    """The opened store with its chunks read through `cache` (no request: metadata kept)."""
    if cache is source.cache:
        return source
    values = {f.name: getattr(source, f.name) for f in fields(source) if f.name != "array"}
    values["cache"] = cache
    return _rebuilt_store(values, source.array.path, source.array.metadata.to_dict())


def _rebuilt_store(values: dict, path: str, metadata: dict) -> EmbeddingStore:
    """An EmbeddingStore from its pickled metadata, once per process (thread-safe)."""
    key = (
        *_cache_key(
            values["url"],
            values["variable"],
            values["storage_options"],
            values["retry"],
            values.get("cache"),
        ),
        json.dumps(metadata, sort_keys=True, default=str),
    )
    with _opened_lock:
        source = _rebuilt.get(key)
        if source is None:
            store = zarr_store(
                values["url"],
                values["storage_options"],
                retry=values["retry"],
                cache=values.get("cache"),
            )
            array = zarr.Array(
                zarr.AsyncArray(
                    metadata=parse_array_metadata(metadata), store_path=StorePath(store, path)
                )
            )
            source = _rebuilt[key] = EmbeddingStore(array=array, **values)
            while len(_rebuilt) > OPENED_STORES:
                _rebuilt.pop(next(iter(_rebuilt)))
    return source


def store_url(store) -> str:
    """A string for a path or URL; local paths become absolute."""
    text = os.fspath(store)
    if text.startswith("file://"):
        text = text[len("file://") :]
    if "://" in text:
        return text.rstrip("/")
    return str(Path(text).expanduser().absolute())


def is_remote(url: str) -> bool:
    return "://" in url


# One botocore attempt per request and a bounded connect: core.retry retries (and s3fs's own
# retries are turned off in zarr_store), so one place decides how long a request may take.
# Botocore's own retries (~6 s for a refused connection) kept zarr's other metadata reads
# running after the open had failed; when the process then ended (qgis_process), those
# half-done aiobotocore coroutines were closed outside their context and printed
# "Exception ignored ... was created in a different Context" under the clean error.
# The connection pool is as large as the read-ahead's requests in flight (botocore's 10 would
# cap it; core.read_ahead).
S3_CLIENT_CONFIG = {
    "retries": {"total_max_attempts": 1},
    "max_pool_connections": 64,
    "connect_timeout": 5,
    "read_timeout": DEFAULT_POLICY.request_timeout,
}


def storage_options_for(url: str, storage_options: dict | None) -> dict:
    """Storage options with the defaults that make public buckets work out of the box.

    s3:// is anonymous unless credentials come in the options or the standard AWS variables;
    an S3-compatible server's address comes as `endpoint_url` or AWS_ENDPOINT_URL. The
    plugin's notes (core.credentials) stay out.
    """
    options = fsspec_options(storage_options)
    remember_secrets(options)  # whatever store they are for, outputs too
    if url.startswith("s3://"):
        has_credentials = any(k in options for k in ("key", "secret", "token", "profile"))
        env_credentials = "AWS_ACCESS_KEY_ID" in os.environ or "AWS_PROFILE" in os.environ
        if "anon" not in options and not has_credentials and not env_credentials:
            options["anon"] = True
        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        if endpoint and "endpoint_url" not in options and "client_kwargs" not in options:
            options["endpoint_url"] = endpoint
        options["config_kwargs"] = {**S3_CLIENT_CONFIG, **options.get("config_kwargs", {})}
        # s3fs asks for an object's size (a HEAD) before every whole-object GET when it may
        # split the GET in parts (max_concurrency > 1): a round trip per chunk for nothing.
        options.setdefault("max_concurrency", 1)
    elif url.startswith("gs://") and "token" not in options:
        options["token"] = "anon"
    return options


def zarr_store(
    url: str,
    storage_options: dict | None = None,
    *,
    read_only: bool = True,
    retry: RetryPolicy = DEFAULT_POLICY,
    cache: ChunkCache | None = None,
    first_reads: tuple[str, ...] = (),
):
    """The zarr-python store object for a path or URL; remote ones retry (core.retry),
    given a cache, read chunks through it (core.cached_store), and given first_reads, fetch
    those keys at once now for the reads that follow (core.first_reads)."""
    if not is_remote(url):
        return LocalStore(url, read_only=read_only)
    options = storage_options_for(url, storage_options)
    store = FsspecStore.from_url(url, storage_options=options, read_only=read_only)
    store.fs.retries = 1  # s3fs's own loop (5 tries of up to 15 s) would hide core.retry's
    store = RetryingStore(store, url, retry)
    if first_reads:
        store = FirstReadsStore(store)
        sync(store.fetch(first_reads))
    if cache is not None and read_only:
        store = CachingStore(store, store_identity(url, options), cache)
    return store


def open_embedding_store(
    store,
    variable: str = "embeddings",
    storage_options: dict | None = None,
    retry: RetryPolicy = DEFAULT_POLICY,
    cache: ChunkCache | None = None,
) -> EmbeddingStore:
    """Open the cube and check it is (time, band, y, x) with a grid; errors say what to fix.
    `cache`: read a remote store's chunks through this chunk cache."""
    url = store_url(store)
    options = StorageOptions(storage_options or {})  # its repr masks secrets
    group = _open_group(url, options, retry, cache, opening_keys(variable))
    try:
        return _embedding_store(group, url, variable, options, retry, cache)
    except StoreError:
        raise
    except Exception as exc:  # a metadata or coordinate read that failed after retries
        raise StoreError(
            f"Could not read the metadata of {url}: {plain_cause(exc)}. Check the network, "
            "the endpoint and the credentials, then run again."
        ) from exc
    finally:
        forget_first_reads(group.store)


def _embedding_store(group, url, variable, options, retry, cache) -> EmbeddingStore:
    # The members' metadata at once, then the coordinates' values at once: two round trips
    # after the group's, where one member after another took six at 50-100 ms each.
    array, time, band = _members(group, (variable, *COORDINATES))  # what opening_keys guesses
    if not isinstance(array, zarr.Array):
        found = sorted(_array_names(group))
        raise StoreError(
            f"The store {url} has no variable {variable!r}; it has {', '.join(found) or 'none'}. "
            "Set the variable name to one of those."
        )
    dims = array_dims(array)
    if dims != EMBEDDING_DIMS:
        raise StoreError(
            f"The variable {variable!r} in {url} has dims {dims}; an embedding cube needs "
            f"{EMBEDDING_DIMS}. Pick the embedding variable or transpose the store."
        )
    attrs = dict(group.attrs)
    n_time, n_band, ny, nx = array.shape
    time, band = _values((time, band))
    times = np.asarray(np.arange(n_time) if time is None else time).astype(np.int64)
    bands = tuple(
        str(b) for b in (band if band is not None else [f"A{i:02d}" for i in range(n_band)])
    )
    grid = grid_from_metadata(attrs, (ny, nx), group)
    return EmbeddingStore(
        url=url,
        variable=variable,
        storage_options=options,
        array=array,
        times=times,
        bands=bands,
        grid=grid,
        quantisation=Quantisation.from_attrs(attrs, array.dtype),
        attrs=attrs,
        retry=retry,
        cache=cache,
    )


_opened: dict[tuple, EmbeddingStore] = {}
_rebuilt: dict[tuple, EmbeddingStore] = {}
_opening: dict[tuple, threading.Lock] = {}
_opened_lock = threading.Lock()
OPENED_STORES = 16  # the most stores kept open per process


def _cache_key(url, variable, storage_options, retry, cache):
    return url, variable, json.dumps(storage_options or {}, sort_keys=True), retry, cache


def cached_embedding_store(
    url: str,
    variable: str,
    storage_options: dict | None = None,
    retry: RetryPolicy = DEFAULT_POLICY,
    cache: ChunkCache | None = None,
) -> EmbeddingStore:
    """The same store opened once per process: block tasks on dask workers call this."""
    key = _cache_key(url, variable, storage_options, retry, cache)
    with _opened_lock:
        opening = _opening.setdefault(key, threading.Lock())
    with opening:  # threads that miss together open it once, not once each
        with _opened_lock:
            source = _opened.get(key)
        if source is None:
            source = open_embedding_store(url, variable, storage_options, retry, cache)
            remember_store(source)
    return source


def remember_store(source: EmbeddingStore) -> None:
    """Keep an opened store for cached_embedding_store, so local worker threads do not open
    it again (against a slow server each open is a dozen metadata reads in a row)."""
    key = _cache_key(
        source.url, source.variable, source.storage_options, source.retry, source.cache
    )
    with _opened_lock:
        _opened[key] = source
        while len(_opened) > OPENED_STORES:
            _opened.pop(next(iter(_opened)))


def array_dims(array: zarr.Array) -> tuple[str, ...]:
    """Dimension names: v3 metadata, else xarray's v2 `_ARRAY_DIMENSIONS` attribute."""
    names = getattr(array.metadata, "dimension_names", None)
    if names:
        return tuple(names)
    return tuple(array.attrs.get("_ARRAY_DIMENSIONS", ()))


def grid_from_metadata(attrs: dict, shape: tuple[int, int], group: zarr.Group) -> Grid:
    """The pixel grid from the spatial/proj attributes, else from the x/y coordinates."""
    crs = attrs.get("proj:code") or _crs_from_wkt_attrs(attrs)
    transform = attrs.get("spatial:transform")
    if transform is not None:
        stored_shape = attrs.get("spatial:shape")
        if stored_shape is not None and tuple(stored_shape) != tuple(shape):
            raise StoreError(
                f"spatial:shape {tuple(stored_shape)} does not match the array's y/x size {shape}."
            )
        return Grid(tuple(float(v) for v in transform), tuple(shape), crs)
    x, y = _member(group, "x"), _member(group, "y")
    if isinstance(x, zarr.Array) and isinstance(y, zarr.Array):
        return Grid.from_coordinates(x, y, crs)
    raise StoreError(
        "The store has neither a spatial:transform attribute nor x/y coordinates, so its pixels "
        "cannot be placed on the map. Add the zarr 'spatial' convention attributes."
    )


def _crs_from_wkt_attrs(attrs: dict) -> str | None:
    return attrs.get("proj:wkt2") or attrs.get("crs_wkt")


def _member(group: zarr.Group, name: str):
    """The group's member `name` by its own metadata (a request or two), None if absent."""
    return _members(group, (name,))[0]


def _members(group: zarr.Group, names) -> list:
    """The group's members `names` by their own metadata, fetched concurrently; None where
    absent. Listing the group instead would read every member's metadata, and make zarr warn
    about the mosaic's non-Zarr objects (README.md, .checkpoint/) at the root."""

    async def member(name):
        try:
            # zarr.Group has no public async lookup; its AsyncGroup's getitem is that.
            return await group._async_group.getitem(name)
        except KeyError:
            return None

    async def members():
        return await asyncio.gather(*(member(name) for name in names))

    found = sync(members())
    return [
        zarr.Array(m) if isinstance(m, zarr.AsyncArray) else None if m is None else m for m in found
    ]


def _values(arrays) -> list:
    """The values of 1-D arrays (None stays None), read concurrently."""

    async def values():
        async def one(array):
            return None if array is None else await array._async_array.getitem(Ellipsis)

        return await asyncio.gather(*(one(a) for a in arrays))

    return [None if v is None else np.asarray(v) for v in sync(values())]


def _array_names(group: zarr.Group) -> list[str]:
    """The group's arrays, for an error message: zarr's warnings about non-Zarr objects at the
    root (the mosaic's README.md and .checkpoint/) say nothing to the analyst."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Object at .* is not recognized")
        return list(group.array_keys())


def _open_group(
    url: str, storage_options: dict, retry: RetryPolicy, cache=None, first_reads=()
) -> zarr.Group:
    try:
        store = zarr_store(url, storage_options, retry=retry, cache=cache, first_reads=first_reads)
        return zarr.open_group(store, mode="r")
    except FileNotFoundError as exc:
        raise StoreError(
            f"No Zarr store at {url}. Check the path or URL (and the endpoint or credentials "
            "for a private bucket)."
        ) from exc
    except Exception as exc:  # fsspec/botocore/aiohttp raise many kinds
        raise StoreError(
            f"Could not open the Zarr store {url}: {plain_cause(exc)}. Check the URL, "
            "the network and the storage options (endpoint_url, anon, key/secret)."
        ) from exc
