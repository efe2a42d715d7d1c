"""core/pipeline.py end to end: a generated store in, a scores Zarr out, from disk and from S3."""

import threading

import numpy as np
import pytest
import xarray as xr
import zarr

from embedding_change.core import compute_change_scores, kernels
from embedding_change.core.errors import (
    CancelledError,
    OutputError,
    ParameterError,
    StoreError,
    WindowError,
)
from embedding_change.core.synthetic import write_aef_like_store

GSD = 8.983111749910169e-05


def box(grid, row0, row1, col0, col1, inset=0.25):
    """A box just inside the edges of those pixels (so float noise cannot move it)."""
    a, _, c, _, e, f = grid.transform
    return (
        c + (col0 + inset) * a,
        f + (row1 - inset) * e,
        c + (col1 - inset) * a,
        f + (row0 + inset) * e,
    )


def expected_scores(path, rows, cols, **options):
    """The kernel on the whole window at once: what the block pipeline must reproduce."""
    values = zarr.open_group(path, mode="r")["embeddings"][:, :, rows, cols]
    return kernels.change_scores(values, signed_square=True, nodata=-128, **options)


def test_window_across_chunk_edges_equals_the_kernel_on_the_whole_window(aef_store, tmp_path):
    path, truth = aef_store
    # rows 100..530 and columns 37..301 cross the chunk edges at 256 and 512
    ds = compute_change_scores(path, tmp_path / "out.zarr", bbox=box(truth.grid, 100, 530, 37, 301))
    expected = expected_scores(path, slice(100, 530), slice(37, 301))
    assert ds.scores.shape == expected.shape == (9, 2, 430, 264)
    np.testing.assert_array_equal(ds.scores.values, expected)


def test_output_carries_years_labels_coordinates_and_the_subset_grid(aef_store, tmp_path):
    path, truth = aef_store
    ds = compute_change_scores(
        path,
        tmp_path / "out.zarr",
        bbox=box(truth.grid, 10, 30, 20, 45),
        methods=("loo_medoid",),
        metric="euclidean",
        robust_zscore=False,
        years=[2018, 2020, 2021, 2025],
    )
    assert list(ds.time.values) == [2018, 2020, 2021, 2025]
    assert ds.time.dtype == np.int32
    assert list(ds.band.values) == ["loo_medoid_euclidean_distance"]
    assert ds.scores.dtype == np.float32
    assert ds.scores.encoding["chunks"] == (1, 1, 256, 256)
    sub = truth.grid.subset(10, 30, 20, 45)
    np.testing.assert_allclose(ds.x.values, sub.x_coords(0, 25))
    np.testing.assert_allclose(ds.y.values, sub.y_coords(0, 20))
    assert ds.attrs["spatial:transform"] == list(sub.transform)
    assert ds.attrs["spatial:shape"] == [20, 25]
    assert ds.attrs["proj:code"] == "EPSG:4326"
    assert ds.attrs["embedding_change:pixels"] == 500
    values = zarr.open_group(path, mode="r")["embeddings"].get_orthogonal_selection(
        ([1, 3, 4, 8], slice(None), slice(10, 30), slice(20, 45))
    )
    expected = kernels.change_scores(
        values,
        methods=("loo_medoid",),
        metric="euclidean",
        robust_zscore=False,
        signed_square=True,
        nodata=-128,
    )
    np.testing.assert_array_equal(ds.scores.values, expected)


def test_planted_one_year_events_stand_out_in_their_year(aef_store, tmp_path):
    path, truth = aef_store
    ds = compute_change_scores(path, tmp_path / "out.zarr")
    loo = ds.scores.sel(band="loo_medoid_alpha_earth_cosine_distance_robust_time_zscore")
    others = [c for c in truth.changes]
    checked = 0
    for event in truth.events:
        if event.kind != "one_year":
            continue
        (r0, r1), (c0, c1) = event.rows, event.cols
        overlapping = [
            o
            for o in others
            if o is not event
            and o.rows[0] < r1 + 2
            and r0 - 2 < o.rows[1]
            and o.cols[0] < c1 + 2
            and c0 - 2 < o.cols[1]
        ]
        if overlapping:
            continue
        inner = loo.isel(y=slice(r0 + 2, r1 - 2), x=slice(c0 + 2, c1 - 2)).load()
        event_year = inner.sel(time=event.year)
        other_years = inner.drop_sel(time=event.year)
        assert float(event_year.median()) > 3.0
        assert float((event_year > other_years.max("time")).mean()) > 0.95
        checked += 1
    assert checked >= 2


def test_store_on_s3_gives_the_same_scores_as_on_disk(s3_bucket, s3_storage_options, tmp_path):
    url = f"{s3_bucket}/aef.zarr"
    write_aef_like_store(url, shape=(300, 280), seed=3, storage_options=s3_storage_options)
    write_aef_like_store(tmp_path / "aef.zarr", shape=(300, 280), seed=3)
    from_s3 = compute_change_scores(url, tmp_path / "s3.zarr", storage_options=s3_storage_options)
    from_disk = compute_change_scores(tmp_path / "aef.zarr", tmp_path / "disk.zarr")
    np.testing.assert_array_equal(from_s3.scores.values, from_disk.scores.values)


def test_output_on_s3_is_written_and_readable(aef_store, s3_bucket, s3_storage_options):
    path, truth = aef_store
    out = f"{s3_bucket}/scores.zarr"
    ds = compute_change_scores(
        path,
        out,
        bbox=box(truth.grid, 0, 50, 0, 60),
        output_storage_options=s3_storage_options,
    )
    reread = xr.open_zarr(out, storage_options=s3_storage_options)
    np.testing.assert_array_equal(reread.scores.values, ds.scores.values)


def test_dask_distributed_cluster_gives_the_same_scores_as_threads(aef_store, tmp_path):
    from distributed import Client, LocalCluster

    path, truth = aef_store
    bbox = box(truth.grid, 200, 420, 150, 400)
    threads = compute_change_scores(path, tmp_path / "threads.zarr", bbox=bbox)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        fractions = []
        on_cluster = compute_change_scores(
            path, tmp_path / "cluster.zarr", bbox=bbox, scheduler=client, progress=fractions.append
        )
        by_address = compute_change_scores(
            path, tmp_path / "address.zarr", bbox=bbox, scheduler=cluster.scheduler_address
        )
    np.testing.assert_array_equal(on_cluster.scores.values, threads.scores.values)
    np.testing.assert_array_equal(by_address.scores.values, threads.scores.values)
    assert fractions[-1] == 1.0


def test_progress_rises_to_one(aef_store, tmp_path):
    path, _ = aef_store
    fractions = []
    compute_change_scores(path, tmp_path / "out.zarr", progress=fractions.append)
    assert fractions == sorted(fractions)
    assert len(fractions) == 9  # 3 x 3 output tiles
    assert fractions[-1] == 1.0


def test_cancel_stops_the_run_and_leaves_no_output(aef_store, tmp_path):
    path, _ = aef_store
    fractions = []
    with pytest.raises(CancelledError):
        compute_change_scores(
            path,
            tmp_path / "out.zarr",
            progress=fractions.append,
            cancel=lambda: len(fractions) >= 2,
        )
    assert 0 < len(fractions) < 9
    assert list(tmp_path.iterdir()) == []


def test_cancel_from_another_thread_while_running(aef_store, tmp_path):
    path, _ = aef_store
    stop = threading.Event()
    with pytest.raises(CancelledError):
        compute_change_scores(
            path,
            tmp_path / "out.zarr",
            progress=lambda f: stop.set(),
            cancel=stop.is_set,
        )
    assert list(tmp_path.iterdir()) == []


def test_window_of_no_data_gives_nan_scores(tmp_path):
    truth = write_aef_like_store(tmp_path / "aef.zarr", shape=(64, 64), seed=5)
    group = zarr.open_group(tmp_path / "aef.zarr", mode="r+")
    group["embeddings"][:, :, 10:20, 10:20] = -128
    ds = compute_change_scores(
        tmp_path / "aef.zarr", tmp_path / "out.zarr", bbox=box(truth.grid, 10, 20, 10, 20)
    )
    assert ds.scores.shape == (9, 2, 10, 10)
    assert bool(ds.scores.isnull().all())


def test_fewer_years_than_a_medoid_needs_gives_nan_medoid_scores(aef_store, tmp_path):
    path, truth = aef_store
    ds = compute_change_scores(
        path,
        tmp_path / "out.zarr",
        bbox=box(truth.grid, 0, 20, 0, 20),
        years=[2019, 2020],
        robust_zscore=False,
    )
    assert bool(ds.scores.sel(band="loo_medoid_alpha_earth_cosine_distance").isnull().all())
    difference = ds.scores.sel(band="difference_alpha_earth_cosine_distance")
    assert bool(difference.sel(time=2019).isnull().all())
    assert float(difference.sel(time=2020).notnull().mean()) > 0.9


def test_zarr_v2_output_opens_in_gdal_with_its_georeferencing(aef_store, tmp_path):
    from osgeo import gdal

    path, truth = aef_store
    out = tmp_path / "out.zarr"
    ds = compute_change_scores(path, out, bbox=box(truth.grid, 5, 45, 7, 77), zarr_format=2)
    raster = gdal.Open(f'ZARR:"{out}":/scores:3:1')
    assert (raster.RasterXSize, raster.RasterYSize) == (70, 40)
    a, b, c, d, e, f = truth.grid.subset(5, 45, 7, 77).transform
    np.testing.assert_allclose(raster.GetGeoTransform(), (c, a, b, f, d, e))  # GDAL's order
    assert "4326" in raster.GetProjection()
    band = raster.GetRasterBand(1).ReadAsArray()
    np.testing.assert_array_equal(band, ds.scores.isel(time=3, band=1).values)


def test_missing_store_is_a_store_error_and_writes_nothing(tmp_path):
    with pytest.raises(StoreError, match="No Zarr store"):
        compute_change_scores(tmp_path / "missing.zarr", tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()


def test_wrong_variable_is_a_store_error(aef_store, tmp_path):
    path, _ = aef_store
    with pytest.raises(StoreError, match="no variable 'embedding'"):
        compute_change_scores(path, tmp_path / "out.zarr", variable="embedding")


def test_box_outside_the_store_is_a_window_error_and_writes_nothing(aef_store, tmp_path):
    path, _ = aef_store
    with pytest.raises(WindowError, match="outside the store"):
        compute_change_scores(path, tmp_path / "out.zarr", bbox=(2.0, 48.0, 2.5, 48.5))
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused_and_left_untouched(aef_store, tmp_path):
    path, _ = aef_store
    (tmp_path / "out.zarr").mkdir()
    (tmp_path / "out.zarr" / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="already exists"):
        compute_change_scores(path, tmp_path / "out.zarr")
    assert (tmp_path / "out.zarr" / "keep.txt").read_text() == "mine"


def test_output_in_a_missing_folder_is_an_output_error(aef_store, tmp_path):
    path, _ = aef_store
    with pytest.raises(OutputError, match="does not exist"):
        compute_change_scores(path, tmp_path / "no" / "such" / "out.zarr")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"methods": ("median",)}, "Unknown or missing score method"),
        ({"metric": "manhattan"}, "Unknown metric"),
        ({"years": [2010, 2018]}, r"Years \[2010\] are not in the store"),
        ({"years": [2018]}, "at least two years"),
        ({"zarr_format": 4}, "zarr_format"),
    ],
)
def test_bad_parameters_name_the_fix(aef_store, tmp_path, options, message):
    path, _ = aef_store
    with pytest.raises(ParameterError, match=message):
        compute_change_scores(path, tmp_path / "out.zarr", **options)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_direct_chunk_reads_equal_zarr_reads_and_missing_chunks_read_as_fill(tmp_path, zarr_format):
    import numcodecs

    from embedding_change.core.chunk_files import read_chunks
    from embedding_change.core.window import PixelWindow

    compressor = numcodecs.Zstd() if zarr_format == 2 else zarr.codecs.ZstdCodec()
    array = zarr.create_array(
        tmp_path / "cube.zarr",
        shape=(4, 3, 64, 80),
        chunks=(1, 3, 32, 32),
        dtype="int8",
        fill_value=-128,
        compressors=compressor,
        zarr_format=zarr_format,
    )
    values = np.random.default_rng(0).integers(-127, 128, size=array.shape, dtype=np.int8)
    array[:, :, :32, :] = values[:, :, :32]
    array[:2, :, 32:, :] = values[:2, :, 32:]  # years 2 and 3 have no chunks in rows 32..63
    array = zarr.open_array(tmp_path / "cube.zarr", mode="r")
    cases = [
        (PixelWindow(0, 32, 32, 64), (0, 1, 2, 3)),  # a whole chunk
        (PixelWindow(32, 64, 0, 32), (1, 3)),  # some years, one without a chunk
        (PixelWindow(5, 30, 40, 63), (0, 2, 3)),  # part of a chunk (window edges)
        (PixelWindow(32, 64, 64, 80), (0, 1, 2, 3)),  # the store's edge chunk
    ]
    for block, years in cases:
        out = np.empty((len(years), 3, *block.shape), np.int8)
        assert read_chunks(array, years, block, out)
        rows, cols = slice(block.row0, block.row1), slice(block.col0, block.col1)
        expected = array.get_orthogonal_selection((list(years), slice(None), rows, cols))
        np.testing.assert_array_equal(out, expected)
    # a block across a chunk edge is not a block of this pipeline: zarr reads it
    across = np.empty((4, 3, 32, 32), np.int8)
    assert not read_chunks(array, (0, 1, 2, 3), PixelWindow(16, 48, 0, 32), across)
