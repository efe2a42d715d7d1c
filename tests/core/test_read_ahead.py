"""Remote stores in the mosaic's layout (moto on loopback, behind a counting proxy): opened in
a few requests without HEADs or warnings, read once per run, chunks fetched ahead."""

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

from embedding_change.core import compute_change_scores, kernels
from embedding_change.core.store import open_embedding_store
from embedding_change.core.synthetic import write_aef_like_store

sys.path.insert(0, str(Path(__file__).parent))
from fault_proxy import Rule, through  # noqa: E402


@pytest.fixture(scope="module")
def mosaic_on_s3(s3_server, s3_storage_options, tmp_path_factory):
    """The same 600 x 560 px, 4-year store in the mosaic's layout on S3 and on disk."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_storage_options)
    if not fs.exists("readahead"):
        fs.mkdir("readahead")
    url = "s3://readahead/aef.zarr"
    if fs.exists(url):
        fs.rm(url, recursive=True)
    options = dict(shape=(600, 560), years=range(2020, 2024), bands=16, shard=512, seed=2)
    write_aef_like_store(url, storage_options=s3_storage_options, **options)
    local = tmp_path_factory.mktemp("local") / "aef.zarr"
    write_aef_like_store(local, **options)
    return url, local


def test_opening_the_mosaic_layout_takes_few_requests_no_head_and_no_warnings(
    mosaic_on_s3, proxy, s3_storage_options
):
    url, local = mosaic_on_s3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = open_embedding_store(url, storage_options=through(proxy, s3_storage_options))
    assert proxy.requests <= 15, proxy.seen
    assert not [m for m, *_ in proxy.seen if m == "HEAD"]
    assert not [w for w in caught if "not recognized" in str(w.message)]
    assert source.grid == open_embedding_store(local).grid
    assert source.array.shards == (1, 16, 512, 512)


def test_the_open_asks_for_everything_it_reads_in_one_round(
    mosaic_on_s3, proxy, s3_storage_options
):
    """Group, members and coordinates at once: against a slow server, every request of the
    open is in flight together, where zarr alone asks in three rounds."""
    url, local = mosaic_on_s3
    proxy.add(Rule("stall", method="GET", seconds=0.3))
    source = open_embedding_store(url, storage_options=through(proxy, s3_storage_options))

    assert proxy.most_in_flight == proxy.requests, proxy.seen
    np.testing.assert_array_equal(source.times, open_embedding_store(local).times)
    assert source.bands == open_embedding_store(local).bands


def test_a_store_whose_keys_the_open_did_not_guess_opens_as_before(
    s3_server, s3_storage_options, proxy, tmp_path
):
    """Zarr v2 (other metadata keys, other chunk keys): the guesses miss, the open reads on."""
    url = "s3://readahead/v2.zarr"
    options = dict(shape=(64, 64), years=range(2020, 2023), bands=4, seed=3, layout="chunked")
    write_aef_like_store(url, storage_options=s3_storage_options, zarr_format=2, **options)
    write_aef_like_store(tmp_path / "v2.zarr", zarr_format=2, **options)
    source = open_embedding_store(url, storage_options=through(proxy, s3_storage_options))
    local = open_embedding_store(tmp_path / "v2.zarr")

    np.testing.assert_array_equal(source.times, local.times)
    assert (source.bands, source.grid) == (local.bands, local.grid)


def test_a_remote_run_sends_no_head_reads_each_index_once_and_matches_the_disk(
    mosaic_on_s3, proxy, s3_storage_options, tmp_path
):
    url, local = mosaic_on_s3
    options = through(proxy, s3_storage_options)
    source = open_embedding_store(url, storage_options=options)
    opened = proxy.requests
    ds = compute_change_scores(source, tmp_path / "s3.zarr", cache=False)
    reads = proxy.seen[opened:]
    assert not [m for m, *_ in reads if m == "HEAD"], reads
    # one ranged GET per inner chunk (9 blocks x 4 years) and one per shard index (4 x 4)
    chunk_gets = [p for m, p, *_ in reads if m == "GET" and "/embeddings/c/" in p]
    assert len(chunk_gets) == 9 * 4 + 4 * 4
    reopened = ("/aef.zarr/zarr.json", "/time/", "/band/")
    assert not [p for m, p, *_ in reads if m == "GET" and any(r in p for r in reopened)]
    values = zarr.open_group(local, mode="r")["embeddings"][...]
    expected = kernels.change_scores(values, signed_square=True, nodata=-128)
    np.testing.assert_array_equal(ds.scores.values, expected)


def test_chunks_of_the_next_blocks_are_in_flight_while_one_is_scored(
    mosaic_on_s3, proxy, s3_storage_options, tmp_path
):
    url, local = mosaic_on_s3
    options = through(proxy, s3_storage_options)
    proxy.add(Rule("stall", method="GET", path="/embeddings/c/", seconds=0.3))
    source = open_embedding_store(url, storage_options=options)
    proxy.most_in_flight = 0  # the open's requests go at once; the runs' are counted below
    without = compute_change_scores(source, tmp_path / "a.zarr", read_ahead=0, cache=False)
    at_once_without = proxy.most_in_flight
    proxy.most_in_flight = 0
    ahead = compute_change_scores(source, tmp_path / "b.zarr", read_ahead=32, cache=False)
    # Without read-ahead only the blocks being scored (2 threads x 4 years) are in flight.
    assert at_once_without <= 8
    assert 8 < proxy.most_in_flight <= 32
    np.testing.assert_array_equal(ahead.scores.values, without.scores.values)
    proxy.most_in_flight = 0
    few = compute_change_scores(source, tmp_path / "c.zarr", read_ahead=6, cache=False)
    assert proxy.most_in_flight <= 6  # the bound holds whatever the threads ask for
    np.testing.assert_array_equal(few.scores.values, without.scores.values)


def test_a_store_sent_to_cluster_workers_is_rebuilt_once_per_process_without_requests(
    mosaic_on_s3, proxy, s3_storage_options
):
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    url, _ = mosaic_on_s3
    source = open_embedding_store(url, storage_options=through(proxy, s3_storage_options))
    sent = pickle.dumps(source)
    opened = proxy.requests
    with ThreadPoolExecutor(4) as pool:  # worker threads unpickling their tasks at once
        rebuilt = list(pool.map(pickle.loads, [sent] * 8))
    assert proxy.requests == opened
    assert all(r is rebuilt[0] for r in rebuilt)
    assert rebuilt[0].grid == source.grid and rebuilt[0].array.shards == source.array.shards
    np.testing.assert_array_equal(rebuilt[0].array[1, :, :5, :5], source.array[1, :, :5, :5])
