"""The local chunk cache for remote stores: right values, fewer requests, never stale.

A real S3 server (moto) on loopback behind tests/core/fault_proxy.py, which records every
request, so the tests count the data requests a run makes. Stores: the generated layout
(one object per chunk) and a sharded copy (shards of 2 x 2 chunks, read as ranged GETs of
the shard objects, as zarr reads the AEF mosaic).
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from embedding_change.core import compute_change_scores, kernels
from embedding_change.core.chunk_cache import CACHE_DIR_VARIABLE, ChunkCache
from embedding_change.core.errors import ParameterError
from embedding_change.core.synthetic import write_aef_like_store

BUCKET = "chunk-cache"
SHAPE = (512, 768)  # 2 x 3 chunks of 256 x 256
BANDS = 16
VIEW = (0, 256, 0, 512)  # rows row0..row1, cols col0..col1: chunks (0, 0) and (0, 1)
PANNED = (0, 256, 256, 768)  # the view panned east by half: chunks (0, 1) and (0, 2)
DATA = "/embeddings/c/"


def write_store(url, options, seed, sharded):
    """The generated store at `url`, or (sharded) a copy of it in shards of 512 x 512 px."""
    if not sharded:
        write_aef_like_store(
            url, shape=SHAPE, bands=BANDS, seed=seed, storage_options=options, layout="chunked"
        )
        return
    plain = f"{url}-plain"
    write_aef_like_store(
        plain, shape=SHAPE, bands=BANDS, seed=seed, storage_options=options, layout="chunked"
    )
    ds = xr.open_zarr(plain, storage_options=options).chunk({"y": 512, "x": 512})
    for variable in ds.variables.values():
        variable.encoding.clear()
    encoding = {"embeddings": {"chunks": (1, BANDS, 256, 256), "shards": (1, BANDS, 512, 512)}}
    ds.to_zarr(url, storage_options=options, zarr_format=3, consolidated=False, encoding=encoding)


@pytest.fixture(scope="module")
def stores(s3_server, s3_storage_options):
    """Both layouts on the S3 server, with the kernel's scores of every pixel."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_storage_options)
    if fs.exists(BUCKET):
        fs.rm(BUCKET, recursive=True)
    fs.mkdir(BUCKET)
    found = {}
    for layout in ("chunks", "shards"):
        url = f"s3://{BUCKET}/{layout}.zarr"
        write_store(url, s3_storage_options, seed=4, sharded=layout == "shards")
        found[layout] = (url, expected_scores(url, s3_storage_options))
    return found


def expected_scores(url, options):
    values = zarr.open_group(url, mode="r", storage_options=options)["embeddings"][...]
    return kernels.change_scores(values, signed_square=True, nodata=-128)


def view_bbox(store_url, options, view):
    """The box of exactly those pixels (their outer edges)."""
    row0, row1, col0, col1 = view
    group = zarr.open_group(store_url, mode="r", storage_options=options)
    x, y = group["x"][:2], group["y"][:1]
    step = float(x[1] - x[0])
    x0 = float(x[0]) - step / 2
    y0 = float(y[0]) + step / 2
    return (x0 + col0 * step, y0 - row1 * step, x0 + col1 * step, y0 - row0 * step)


def run(url, view, proxy, options, tmp_path, cache, **extra):
    """One run through the proxy: (scores, log lines, the data requests it made)."""
    before = len(proxy.seen)
    lines = []
    output = tmp_path / f"out-{time.monotonic_ns()}.zarr"
    ds = compute_change_scores(
        url,
        output,
        bbox=view_bbox(url, options, view),
        storage_options={**options, "endpoint_url": proxy.url},
        log=lines.append,
        cache=cache,
        **extra,
    )
    requests = [(method, path, byte_range) for method, path, byte_range in proxy.seen[before:]]
    data = [r for r in requests if DATA in r[1] and r[0] == "GET"]
    return ds.scores.values, lines, data


def window_of(expected, view):
    row0, row1, col0, col1 = view
    return expected[:, :, row0:row1, col0:col1]


def cache_line(lines):
    return next(line for line in lines if line.startswith("Chunk cache"))


def entries(folder: Path):
    return sorted(folder.rglob("*.chunk"))


LAYOUTS = ("chunks", "shards")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_second_run_makes_no_data_requests_and_gives_equal_values(
    stores, proxy, s3_storage_options, tmp_path, layout
):
    url, expected = stores[layout]
    cache = tmp_path / "cache"
    first, lines1, data1 = run(url, VIEW, proxy, s3_storage_options, tmp_path, cache)
    second, lines2, data2 = run(url, VIEW, proxy, s3_storage_options, tmp_path, cache)

    np.testing.assert_array_equal(first, window_of(expected, VIEW))
    np.testing.assert_array_equal(second, first)
    assert len(data1) >= 2 * 9  # two chunks of each year were fetched
    assert data2 == []
    assert entries(cache)
    line = cache_line(lines2)
    assert str(cache) in line and ", 0 fetched (0.0 MB)" in line
    hits, reads = (int(n) for n in line.split(": ")[1].split(" chunk reads")[0].split(" of "))
    assert hits == reads >= 2 * 9


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_half_panned_view_fetches_only_what_it_lacks(
    stores, proxy, s3_storage_options, tmp_path, layout
):
    url, expected = stores[layout]
    cache = tmp_path / "cache"
    _, _, cold = run(url, PANNED, proxy, s3_storage_options, tmp_path, False)
    _, _, first = run(url, VIEW, proxy, s3_storage_options, tmp_path, cache)
    panned, _, fetched = run(url, PANNED, proxy, s3_storage_options, tmp_path, cache)

    np.testing.assert_array_equal(panned, window_of(expected, PANNED))
    assert set(fetched) == set(cold) - set(first)
    assert set(fetched) and set(cold) & set(first)  # the pan shares data and lacks some
    if layout == "chunks":
        assert len(fetched) == 9  # chunk (0, 2) of each year


def test_a_changed_array_metadata_is_not_served_from_the_cache(s3_storage_options, proxy, tmp_path):
    url = f"s3://{BUCKET}/changing.zarr"
    write_store(url, s3_storage_options, seed=8, sharded=False)
    cache = tmp_path / "cache"
    run(url, VIEW, proxy, s3_storage_options, tmp_path, cache)

    group = zarr.open_group(url, mode="r+", storage_options=s3_storage_options)
    group["embeddings"].attrs["note"] = "rewritten"  # the array's zarr.json changes
    zarr.consolidate_metadata(group.store)
    again, _, data = run(url, VIEW, proxy, s3_storage_options, tmp_path, cache)

    assert len(data) == 2 * 9  # every chunk fetched again
    np.testing.assert_array_equal(again, window_of(expected_scores(url, s3_storage_options), VIEW))


def test_a_rewritten_store_gives_its_new_values(s3_storage_options, proxy, tmp_path):
    import s3fs

    url = f"s3://{BUCKET}/rewritten.zarr"
    write_store(url, s3_storage_options, seed=9, sharded=True)
    cache = tmp_path / "cache"
    old, _, _ = run(url, VIEW, proxy, s3_storage_options, tmp_path, cache)

    fs = s3fs.S3FileSystem(**s3_storage_options)
    write_store(f"{url}-new", s3_storage_options, seed=10, sharded=True)
    fs.rm(url, recursive=True)
    fs.copy(f"{url}-new", url, recursive=True)  # other values, the same array metadata
    new, _, data = run(url, VIEW, proxy, s3_storage_options, tmp_path, cache)

    expected = window_of(expected_scores(f"{url}-new", s3_storage_options), VIEW)
    np.testing.assert_array_equal(new, expected)
    assert not np.array_equal(new, old, equal_nan=True)
    assert data


def test_a_damaged_entry_is_dropped_and_fetched_again(stores, proxy, s3_storage_options, tmp_path):
    url, expected = stores["chunks"]
    cache = tmp_path / "cache"
    run(url, VIEW, proxy, s3_storage_options, tmp_path, cache)
    large = [path for path in entries(cache) if path.stat().st_size > 100_000]
    flipped, truncated = large[0], large[1]
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[:1000])

    again, lines, fetched = run(url, VIEW, proxy, s3_storage_options, tmp_path, cache)

    np.testing.assert_array_equal(again, window_of(expected, VIEW))
    assert len(fetched) == 2
    assert "2 damaged entries dropped and fetched again" in cache_line(lines)
    _, _, third = run(url, VIEW, proxy, s3_storage_options, tmp_path, cache)
    assert third == []  # the fetched chunks were kept again, whole


def test_the_size_limit_evicts_the_least_recently_used_entries(tmp_path):
    cache = ChunkCache(str(tmp_path / "cache"), max_bytes=3500)
    names = [f"{i:02d}" + "ab" * 31 for i in range(4)]
    for i, name in enumerate(names[:3]):
        cache.write(name, bytes([i]) * 1000)
        path = next((tmp_path / "cache").rglob(f"{name}*"))
        os.utime(path, ns=(10**18 + i * 10**9, 10**18 + i * 10**9))  # written in this order
    assert cache.read(names[0]) == bytes([0]) * 1000  # used: now the most recent

    cache.write(names[3], bytes([3]) * 1000)  # over the limit: the oldest goes

    assert cache.read(names[1]) is None
    assert [cache.read(n) for n in (names[0], names[2], names[3])] == [
        bytes([0]) * 1000,
        bytes([2]) * 1000,
        bytes([3]) * 1000,
    ]
    assert cache.size() <= 3500


def test_a_run_keeps_the_cache_under_its_limit(stores, proxy, s3_storage_options, tmp_path):
    url, expected = stores["chunks"]
    limit = 5_000_000  # about 5 of the run's 18 chunks
    cache = ChunkCache(str(tmp_path / "cache"), max_bytes=limit)
    first, lines, _ = run(url, VIEW, proxy, s3_storage_options, tmp_path, cache)

    np.testing.assert_array_equal(first, window_of(expected, VIEW))
    assert 0 < cache.size() <= limit
    assert "least recently used entries removed" in cache_line(lines)


def test_cache_false_keeps_nothing_and_reads_everything_again(
    stores, proxy, s3_storage_options, tmp_path, monkeypatch
):
    url, expected = stores["chunks"]
    monkeypatch.setenv(CACHE_DIR_VARIABLE, str(tmp_path / "default"))
    _, lines, first = run(url, VIEW, proxy, s3_storage_options, tmp_path, False)
    again, _, second = run(url, VIEW, proxy, s3_storage_options, tmp_path, False)

    np.testing.assert_array_equal(again, window_of(expected, VIEW))
    assert len(first) == len(second) == 2 * 9
    assert not (tmp_path / "default").exists()
    assert not any(line.startswith("Chunk cache") for line in lines)


def test_the_environment_variable_chooses_the_default_folder(
    stores, proxy, s3_storage_options, tmp_path, monkeypatch
):
    url, _ = stores["chunks"]
    monkeypatch.setenv(CACHE_DIR_VARIABLE, str(tmp_path / "from-env"))
    run(url, VIEW, proxy, s3_storage_options, tmp_path, None)
    _, lines, data = run(url, VIEW, proxy, s3_storage_options, tmp_path, None)

    assert entries(tmp_path / "from-env")
    assert data == []
    assert str(tmp_path / "from-env") in cache_line(lines)


def test_local_stores_are_not_cached(aef_store, tmp_path, monkeypatch):
    path, _ = aef_store
    monkeypatch.setenv(CACHE_DIR_VARIABLE, str(tmp_path / "default"))
    lines = []
    compute_change_scores(path, tmp_path / "out.zarr", log=lines.append, bbox=None)

    assert not (tmp_path / "default").exists()
    assert not any(line.startswith("Chunk cache") for line in lines)


def test_a_cache_argument_of_the_wrong_kind_is_named(stores, tmp_path):
    url, _ = stores["chunks"]
    with pytest.raises(ParameterError, match=r"cache must be None .* or False \(off\), not 20"):
        compute_change_scores(url, tmp_path / "out.zarr", cache=20)


SHARER = """
import sys, threading
from embedding_change.core.chunk_cache import ChunkCache
cache = ChunkCache(sys.argv[1], max_bytes=int(sys.argv[2]))
wrong = []
def work(seed):
    for i in range(300):
        n = (i * 7 + seed) % 40
        name = f"{n:02d}" + "cd" * 31
        payload = bytes([n]) * (20_000 + n)
        got = cache.read(name)
        if got is None:
            cache.write(name, payload)
        elif got != payload:
            wrong.append(name)
threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
print(len(wrong), cache.counts().damaged)
"""


WRITER = """
import sys
from embedding_change.core.chunk_cache import ChunkCache
cache = ChunkCache(sys.argv[1], max_bytes=int(sys.argv[2]))
for i in range(40):
    cache.write(f"{i:02d}" + "ef" * 31, bytes([i]) * 1000)
"""


def test_what_another_process_wrote_counts_toward_the_limit(tmp_path):
    folder = tmp_path / "shared"
    entry = 1000 + 16  # payload and header
    limit = 100 * entry
    cache = ChunkCache(str(folder), max_bytes=limit)
    for i in range(40):
        cache.write(f"{i:02d}" + "ab" * 31, bytes([i]) * 1000)
    subprocess.run([sys.executable, "-c", WRITER, str(folder), str(limit)], check=True)
    for i in range(40):  # this process has written 80 entries, the folder holds 120
        cache.write(f"{i:02d}" + "cd" * 31, bytes([i]) * 1000)

    assert cache.size() <= limit
    assert cache.counts().evicted > 0


def test_threads_and_two_processes_share_a_folder_without_half_entries(tmp_path):
    folder = tmp_path / "shared"
    limit = 25 * 21_000  # about 25 of the 40 entries: both processes evict as they go
    command = [sys.executable, "-c", SHARER, str(folder), str(limit)]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=120)[0].split() for p in processes]

    assert all(p.returncode == 0 for p in processes)
    assert results == [["0", "0"], ["0", "0"]]  # no wrong bytes, no half-written entries
    assert ChunkCache(str(folder), max_bytes=limit).size() <= limit
    assert not list(folder.rglob(".tmp-*"))
