"""core/shard_files.py: the direct read of sharded stores gives zarr's values, absent shards
and inner chunks are no data, damaged bytes are named."""

import os

import numpy as np
import pytest
import zarr

from embedding_change.core import compute_change_scores, kernels, shard_files
from embedding_change.core.block_reads import read_block
from embedding_change.core.errors import StoreError
from embedding_change.core.read_ahead import RunReads
from embedding_change.core.shard_files import NO_CHUNK, ShardLayout
from embedding_change.core.store import open_embedding_store
from embedding_change.core.synthetic import write_aef_like_store
from embedding_change.core.window import PixelWindow


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """600 x 560 px in shards of 512 x 512 (2 x 2 inner chunks), 4 years, 16 bands."""
    path = tmp_path_factory.mktemp("sharded") / "aef.zarr"
    truth = write_aef_like_store(
        path, shape=(600, 560), years=range(2020, 2024), bands=16, shard=512
    )
    return path, truth


def box(grid, row0, row1, col0, col1, inset=0.25):
    a, _, c, _, e, f = grid.transform
    return (
        c + (col0 + inset) * a,
        f + (row1 - inset) * e,
        c + (col1 - inset) * a,
        f + (row0 + inset) * e,
    )


def zarr_values(path, rows=slice(None), cols=slice(None)):
    return zarr.open_group(path, mode="r")["embeddings"][:, :, rows, cols]


def test_layout_is_the_mosaics_sharding(sharded):
    path, _ = sharded
    array = zarr.open_group(path, mode="r")["embeddings"]
    layout = ShardLayout.of(array)
    assert layout.shard == (1, 16, 512, 512) and layout.inner == (1, 16, 256, 256)
    assert (layout.codec, layout.index_at_end, layout.index_crc32c) == ("zstd", True, True)
    assert layout.index_size == 2 * 2 * 16 + 4


@pytest.mark.parametrize(
    "block",
    [
        PixelWindow(0, 256, 0, 256),  # a whole inner chunk
        PixelWindow(256, 512, 256, 512),  # the last inner chunk of a shard
        PixelWindow(512, 600, 512, 560),  # the corner shard, cut by the store's edge
        PixelWindow(300, 400, 10, 250),  # part of an inner chunk
        PixelWindow(512, 600, 0, 100),  # part of an edge inner chunk
    ],
)
def test_blocks_read_as_zarr_reads_them(sharded, block):
    path, _ = sharded
    source = open_embedding_store(path)
    out = np.empty((4, 16, *block.shape), np.int8)
    read_block(source, range(4), block, out, RunReads())
    rows, cols = slice(block.row0, block.row1), slice(block.col0, block.col1)
    np.testing.assert_array_equal(out, zarr_values(path, rows, cols))


def test_window_across_shard_edges_and_partly_outside_gives_the_kernel_on_zarrs_values(
    sharded, tmp_path
):
    path, truth = sharded
    # rows 200..600 and columns 400..560 cross inner-chunk and shard edges (256, 512); the box
    # reaches 40 px past the store's bottom and right edges.
    ds = compute_change_scores(
        path, tmp_path / "out.zarr", bbox=box(truth.grid, 200, 640, 400, 600)
    )
    values = zarr_values(path, slice(200, 600), slice(400, 560))
    expected = kernels.change_scores(values, signed_square=True, nodata=-128)
    assert ds.scores.shape == expected.shape == (4, 2, 400, 160)
    np.testing.assert_array_equal(ds.scores.values, expected)


def test_sharded_and_chunked_layouts_score_the_same(sharded, tmp_path):
    path, truth = sharded
    chunked = tmp_path / "chunked.zarr"
    write_aef_like_store(
        chunked, shape=(600, 560), years=range(2020, 2024), bands=16, layout="chunked"
    )
    assert zarr.open_group(chunked, mode="r")["embeddings"].shards is None
    a = compute_change_scores(path, tmp_path / "a.zarr")
    b = compute_change_scores(chunked, tmp_path / "b.zarr")
    np.testing.assert_array_equal(a.scores.values, b.scores.values)


def test_each_shard_index_is_read_once_per_run(sharded, tmp_path, monkeypatch):
    path, _ = sharded
    read = []
    original = shard_files._local_index
    monkeypatch.setattr(
        shard_files, "_local_index", lambda *args: read.append(args[2]) or original(*args)
    )
    compute_change_scores(path, tmp_path / "out.zarr")
    # 4 years x 2 x 2 shards, each read once although each holds up to 4 blocks
    assert sorted(read) == sorted(set(read)) and len(read) == 16


@pytest.fixture
def copy_of(sharded, tmp_path):
    import shutil

    path, truth = sharded
    shutil.copytree(path, tmp_path / "aef.zarr")
    return tmp_path / "aef.zarr", truth


def test_absent_inner_chunk_and_absent_shard_are_no_data(copy_of, tmp_path):
    path, _ = copy_of
    array = zarr.open_group(path, mode="r+")["embeddings"]
    array[1, :, 256:512, 0:256] = -128  # zarr leaves this inner chunk out of shard (1, 0, 0, 0)
    os.remove(path / "embeddings/c/2/0/1/1")  # the corner shard of year 2022
    layout = ShardLayout.of(array)
    key, local = layout.locate(1, PixelWindow(256, 512, 0, 256))
    index = layout.parse_index((path / key).read_bytes()[-layout.index_size :], key)
    assert tuple(index[local]) == (NO_CHUNK, NO_CHUNK)

    source = open_embedding_store(path)
    for block in (PixelWindow(256, 512, 0, 256), PixelWindow(512, 600, 512, 560)):
        out = np.empty((4, 16, *block.shape), np.int8)
        read_block(source, range(4), block, out, RunReads())
        rows, cols = slice(block.row0, block.row1), slice(block.col0, block.col1)
        np.testing.assert_array_equal(out, zarr_values(path, rows, cols))
    logged = []
    ds = compute_change_scores(
        path, tmp_path / "out.zarr", methods="difference", robust_zscore=False, log=logged.append
    )
    assert np.isnan(ds.scores.values[1, :, 256:512, 0:256]).all()
    assert np.isnan(ds.scores.values[2, :, 512:, 512:]).all()
    assert np.isfinite(ds.scores.values[3, 0, 256:512, 0:256]).all()
    assert any("chunks absent" in line for line in logged)


def test_index_failing_its_crc32c_is_a_store_error_naming_the_shard_and_year(copy_of, tmp_path):
    path, _ = copy_of
    shard = path / "embeddings/c/3/0/0/1"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF  # a bit flip in the index
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"embeddings/c/3/0/0/1 \(year 2023\).*crc32c"):
        compute_change_scores(path, tmp_path / "out.zarr")


def test_inner_chunk_that_does_not_decode_is_a_store_error_naming_it(copy_of, tmp_path):
    path, _ = copy_of
    shard = path / "embeddings/c/0/0/1/0"
    data = bytearray(shard.read_bytes())
    data[100:400] = os.urandom(300)  # inside the first inner chunk's zstd frame
    shard.write_bytes(bytes(data))
    with pytest.raises(
        StoreError, match=r"embeddings/c/0/0/1/0 \(year 2020\): damaged chunk.*inner chunk"
    ):
        compute_change_scores(path, tmp_path / "out.zarr")


def test_remote_sharded_store_gives_the_same_values(sharded, s3_bucket, s3_storage_options):
    path, _ = sharded
    url = f"{s3_bucket}/aef.zarr"
    write_aef_like_store(
        url,
        shape=(600, 560),
        years=range(2020, 2024),
        bands=16,
        shard=512,
        storage_options=s3_storage_options,
    )
    source = open_embedding_store(url, storage_options=s3_storage_options)
    reads = RunReads()
    for block in (PixelWindow(256, 512, 256, 512), PixelWindow(512, 600, 0, 100)):
        out = np.empty((4, 16, *block.shape), np.int8)
        read_block(source, range(4), block, out, reads)
        rows, cols = slice(block.row0, block.row1), slice(block.col0, block.col1)
        np.testing.assert_array_equal(out, zarr_values(path, rows, cols))
