"""The multiscale pyramid: every level's values, the conventions (zarr-cm), clean failure."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
import zarr_cm

from embedding_change.core import (
    CancelledError,
    EmbeddingChangeError,
    OutputError,
    ParameterError,
    StoreError,
    build_multiscales,
)
from embedding_change.core.pyramid_levels import halve

TRANSFORM = (0.001, 0.0, -105.3, 0.0, -0.001, 40.1)
MULTISCALES_UUID = "d35379db-88df-4056-af3a-620245f8e347"


def write_scores_store(
    path, values, *, variable="scores", chunks=(1, 1, 8, 8), zarr_format=3, compressors="auto"
):
    """A scores-like store (time, band, y, x) with the spatial/proj attributes of the engine."""
    n_time, n_band, ny, nx = values.shape
    a, _, c, _, e, f = TRANSFORM
    ds = xr.Dataset(
        {variable: (("time", "band", "y", "x"), values)},
        coords={
            "time": ("time", np.arange(2018, 2018 + n_time, dtype=np.int32)),
            "band": ("band", np.array([f"score_{i}" for i in range(n_band)], dtype=object)),
            "y": ("y", f + e * (np.arange(ny) + 0.5)),
            "x": ("x", c + a * (np.arange(nx) + 0.5)),
        },
        attrs={
            "proj:code": "EPSG:4326",
            "spatial:dimensions": ["y", "x"],
            "spatial:transform": list(TRANSFORM),
            "spatial:shape": [ny, nx],
        },
    )
    encoding = {variable: {"chunks": chunks}}
    if compressors != "auto":
        encoding[variable]["compressors"] = compressors
    if values.dtype.kind == "f":
        encoding[variable]["fill_value"] = np.nan
    ds.to_zarr(path, encoding=encoding, zarr_format=zarr_format, consolidated=True)
    return path


def scores_with_nan_edges(shape=(2, 2, 37, 53), seed=0) -> np.ndarray:
    """Random scores with NaN edges, an all-NaN area larger than a block and scattered NaN."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=shape).astype(np.float32)
    values[..., :3, :] = np.nan  # top rows: odd, so a block is half NaN
    values[..., :, -1] = np.nan  # last column
    values[..., 10:18, 20:30] = np.nan  # whole blocks with no data
    values[rng.random(shape) < 0.1] = np.nan
    return values


def reference_halve(values: np.ndarray, method: str) -> np.ndarray:
    """Coarse pixel (i, j) from fine pixels [2i:2i+2, 2j:2j+2], NaN dropped, one at a time."""
    *lead, ny, nx = values.shape
    result = np.full((*lead, math.ceil(ny / 2), math.ceil(nx / 2)), np.nan)
    for index in np.ndindex(result.shape):
        *outer, i, j = index
        block = values[(*outer, slice(2 * i, 2 * i + 2), slice(2 * j, 2 * j + 2))].ravel()
        valid = block[~np.isnan(block)].astype(np.float64)
        if valid.size:
            result[index] = {
                "mean": valid.mean(),
                "max": valid.max(),
                "min": valid.min(),
                "nearest": valid[0],
                "second_max": np.sort(valid)[-2] if valid.size > 1 else valid[0],
            }[method]
    return result


@pytest.fixture
def source(tmp_path):
    values = scores_with_nan_edges()
    return write_scores_store(tmp_path / "scores.zarr", values), values


@pytest.mark.parametrize("method", ["mean", "max", "min", "nearest", "second_max"])
def test_halve_matches_a_block_by_block_reduction(method):
    values = scores_with_nan_edges(shape=(2, 9, 11), seed=3)
    np.testing.assert_allclose(halve(values, method), reference_halve(values, method), rtol=1e-6)


@pytest.mark.parametrize("method", ["mean", "max", "min", "nearest", "second_max"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (3, 1), (2, 2), (5, 7), (4, 64)])
def test_halve_matches_at_every_edge_size(method, shape):
    rng = np.random.default_rng(sum(shape))
    values = rng.normal(size=(3, *shape)).astype(np.float32)
    values[rng.random(values.shape) < 0.3] = np.nan
    values[1] = np.nan  # a plane with no data
    values[2, ..., :2] = np.inf if method == "min" else -np.inf  # infinities stay valid values
    expected = reference_halve(values, method)
    np.testing.assert_allclose(halve(values, method), expected, rtol=1e-6)
    np.testing.assert_allclose(halve(values.astype(np.float64), method), expected, rtol=1e-12)


def test_halve_keeps_all_nan_blocks_nan_without_warnings():
    values = np.full((4, 6), np.nan, dtype=np.float32)
    values[0, 0] = 2.0
    with np.testing.suppress_warnings() as caught:
        caught.record(RuntimeWarning)
        result = halve(values, "mean")
        assert not caught.log
    assert result[0, 0] == 2.0
    assert np.isnan(result).sum() == result.size - 1


@pytest.mark.parametrize("method", ["mean", "max", "nearest", "second_max"])
def test_each_level_is_the_resampling_of_the_level_above(source, tmp_path, method):
    path, values = source
    tree = build_multiscales(path, tmp_path / "pyramid.zarr", tile=8, resampling=method)
    levels = [tree[str(k)].ds["scores"].values for k in range(len(tree.children))]
    np.testing.assert_array_equal(levels[0], values)
    for above, level in zip(levels, levels[1:], strict=False):
        np.testing.assert_allclose(level, reference_halve(above, method), rtol=1e-6)


def test_levels_halve_rounding_up_until_one_tile(source, tmp_path):
    path, _ = source
    tree = build_multiscales(path, tmp_path / "pyramid.zarr", tile=8)
    shapes = [tree[str(k)].ds["scores"].shape[2:] for k in range(len(tree.children))]
    assert shapes == [(37, 53), (19, 27), (10, 14), (5, 7)]
    assert sorted(tree.children) == ["0", "1", "2", "3"]
    assert tree["3"].ds["scores"].encoding["chunks"] == (1, 1, 8, 8)


def test_a_source_that_fits_one_tile_gives_one_level(source, tmp_path):
    path, values = source
    tree = build_multiscales(path, tmp_path / "pyramid.zarr", tile=64)
    assert list(tree.children) == ["0"]
    assert tree.attrs["multiscales"]["layout"] == [
        {
            "asset": "0",
            "transform": {"scale": [1.0, 1.0], "translation": [0.0, 0.0]},
            "spatial:transform": list(TRANSFORM),
            "spatial:shape": [37, 53],
        }
    ]
    np.testing.assert_array_equal(tree["0"].ds["scores"].values, values)


def test_group_attributes_follow_the_multiscales_spatial_and_proj_conventions(source, tmp_path):
    path, _ = source
    tree = build_multiscales(path, tmp_path / "pyramid.zarr", tile=8, resampling="max")
    attrs = dict(tree.attrs)
    zarr_cm.validate_all(attrs)
    assert zarr_cm.detect_revisions(attrs).keys() == {"multiscales", "spatial", "proj"}
    assert MULTISCALES_UUID in [c["uuid"] for c in attrs["zarr_conventions"]]
    _, found = zarr_cm.extract_all(attrs)
    layout = found["multiscales"]["layout"]
    assert found["multiscales"]["resampling_method"] == "max"
    assert [entry["asset"] for entry in layout] == ["0", "1", "2", "3"]
    assert [entry.get("derived_from") for entry in layout] == [None, "0", "1", "2"]
    for level, entry in enumerate(layout):
        scale = 1.0 if level == 0 else 2.0
        assert entry["transform"] == {"scale": [scale, scale], "translation": [0.0, 0.0]}
        factor = 2**level
        assert entry["spatial:transform"] == pytest.approx(
            [0.001 * factor, 0.0, -105.3, 0.0, -0.001 * factor, 40.1]
        )
        assert entry["spatial:shape"] == list(tree[str(level)].ds["scores"].shape[2:])
    assert found["spatial"]["spatial:registration"] == "pixel"
    assert found["spatial"]["spatial:transform"] == list(TRANSFORM)
    assert found["spatial"]["spatial:shape"] == [37, 53]
    assert found["spatial"]["spatial:bbox"] == pytest.approx([-105.3, 40.063, -105.247, 40.1])
    assert found["proj"]["proj:code"] == "EPSG:4326"
    assert "GEOGCRS" in found["proj"]["proj:wkt2"]
    for level in tree.children:
        level_attrs = dict(tree[level].attrs)
        zarr_cm.validate_all(level_attrs)
        assert level_attrs["spatial:transform"] == layout[int(level)]["spatial:transform"]


def test_each_level_has_pixel_centre_coordinates_and_a_spatial_ref(source, tmp_path):
    path, _ = source
    tree = build_multiscales(path, tmp_path / "pyramid.zarr", tile=8)
    for level in tree.children:
        ds = tree[level].ds
        a, _, c, _, e, f = ds.attrs["spatial:transform"]
        np.testing.assert_allclose(ds["x"].values, c + a * (np.arange(ds.sizes["x"]) + 0.5))
        np.testing.assert_allclose(ds["y"].values, f + e * (np.arange(ds.sizes["y"]) + 0.5))
        assert "spatial_ref" in ds.coords
        assert "GEOGCRS" in ds["spatial_ref"].attrs["crs_wkt"]
        assert ds["scores"].attrs["grid_mapping"] == "spatial_ref"
        assert list(ds["time"].values) == [2018, 2019]
        assert list(ds["band"].values) == ["score_0", "score_1"]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_metadata_is_consolidated_and_opens_as_a_datatree(source, tmp_path, zarr_format):
    path, _ = source
    output = tmp_path / "pyramid.zarr"
    build_multiscales(path, output, tile=8, zarr_format=zarr_format)
    group = zarr.open_consolidated(str(output), zarr_format=zarr_format)
    assert group.metadata.consolidated_metadata is not None
    assert "3/scores" in group.metadata.consolidated_metadata.flattened_metadata
    tree = xr.open_datatree(output, engine="zarr", consolidated=True)
    assert tree.attrs["multiscales"]["layout"][3]["asset"] == "3"
    assert not list(output.parent.glob(".*partial*"))


def test_zarr_v2_levels_are_georeferenced_for_gdal(source, tmp_path):
    gdal = pytest.importorskip("osgeo.gdal")
    path, _ = source
    output = tmp_path / "pyramid.zarr"
    tree = build_multiscales(path, output, tile=8, zarr_format=2)
    dataset = gdal.Open(f'ZARR:"{output}":/2/scores:1:0')
    assert (dataset.RasterXSize, dataset.RasterYSize) == (14, 10)
    assert dataset.GetGeoTransform() == pytest.approx((-105.3, 0.004, 0.0, 40.1, 0.0, -0.004))
    assert dataset.GetSpatialRef().GetAuthorityCode(None) == "4326"
    np.testing.assert_array_equal(dataset.ReadAsArray(), tree["2"].ds["scores"].values[1, 0])


def test_an_embeddings_variable_from_another_tool_works(tmp_path):
    values = scores_with_nan_edges(shape=(3, 1, 20, 17), seed=5)
    path = write_scores_store(tmp_path / "other.zarr", values, variable="embeddings")
    tree = build_multiscales(path, tmp_path / "pyramid.zarr", variable="embeddings", tile=8)
    assert "embeddings" in tree["0"].ds
    np.testing.assert_allclose(
        tree["1"].ds["embeddings"].values, reference_halve(values, "second_max"), rtol=1e-6
    )


def test_an_integer_source_becomes_float_with_its_no_data_as_nan(tmp_path):
    rng = np.random.default_rng(1)
    values = rng.integers(-127, 128, size=(1, 4, 12, 12), dtype=np.int8)
    values[..., :4, :4] = -128
    path = write_scores_store(
        tmp_path / "aef.zarr", values, variable="embeddings", chunks=(1, 4, 8, 8)
    )
    tree = build_multiscales(path, tmp_path / "pyramid.zarr", variable="embeddings", tile=8)
    expected = np.where(values == -128, np.nan, values.astype(np.float32))
    np.testing.assert_array_equal(tree["0"].ds["embeddings"].values, expected)
    np.testing.assert_allclose(
        tree["1"].ds["embeddings"].values, reference_halve(expected, "second_max"), rtol=1e-6
    )


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_level_0_shares_the_chunk_files_of_a_scores_output_instead_of_copying(
    tmp_path, zarr_format
):
    values = scores_with_nan_edges()
    values[0, 1, 8:16, 16:24] = np.nan  # one chunk all NaN: absent in the source, and in level 0
    path = write_scores_store(tmp_path / "scores.zarr", values, compressors=None)  # as Change
    output = tmp_path / "pyramid.zarr"  # scores writes it: uncompressed, one band per chunk
    lines = []
    tree = build_multiscales(path, output, tile=8, zarr_format=zarr_format, log=lines.append)

    assert tree.attrs["embedding_change:level_0_linked"]
    assert any("Level 0 shares the source's chunk files" in line for line in lines)
    source_chunk = path / "scores" / "c" / "1" / "0" / "2" / "3"
    level_0 = zarr.open_array(output / "0" / "scores", mode="r")
    linked = output / "0" / "scores" / level_0.metadata.encode_chunk_key((1, 0, 2, 3))
    assert linked.stat().st_ino == source_chunk.stat().st_ino  # the same file, not a copy
    assert not (output / "0" / "scores" / level_0.metadata.encode_chunk_key((0, 1, 1, 2))).exists()
    np.testing.assert_array_equal(tree["0"].ds["scores"].values, values)
    np.testing.assert_allclose(
        tree["1"].ds["scores"].values, reference_halve(values, "second_max"), rtol=1e-6
    )
    tree.close()
    import shutil

    shutil.rmtree(path)  # the pyramid does not depend on the source staying where it was
    reopened = xr.open_datatree(output, engine="zarr")
    np.testing.assert_array_equal(reopened["0"].ds["scores"].values, values)
    if zarr_format == 2:
        gdal = pytest.importorskip("osgeo.gdal")
        dataset = gdal.Open(f'ZARR:"{output}":/0/scores:1:0')
        np.testing.assert_array_equal(dataset.ReadAsArray(), values[1, 0])


def test_a_compressed_source_is_copied_into_level_0_and_says_so(source, tmp_path):
    path, values = source
    lines = []
    tree = build_multiscales(path, tmp_path / "pyramid.zarr", tile=8, log=lines.append)
    assert not tree.attrs["embedding_change:level_0_linked"]
    assert any("Level 0 is a copy of the source" in line for line in lines)
    np.testing.assert_array_equal(tree["0"].ds["scores"].values, values)


def test_progress_rises_to_one(source, tmp_path):
    path, _ = source
    fractions = []
    build_multiscales(path, tmp_path / "pyramid.zarr", tile=8, progress=fractions.append)
    assert fractions == sorted(fractions)
    assert fractions[-1] == pytest.approx(1.0)


def test_cancel_leaves_no_output(source, tmp_path):
    path, _ = source
    output = tmp_path / "pyramid.zarr"
    fractions = []
    with pytest.raises(CancelledError):
        build_multiscales(
            path,
            output,
            tile=8,
            scheduler="synchronous",
            progress=fractions.append,
            cancel=lambda: len(fractions) >= 5,
        )
    assert 0 < fractions[-1] < 1
    assert list(tmp_path.iterdir()) == [path]


def test_a_failing_run_leaves_no_output(source, tmp_path):
    path, _ = source

    def failing_progress(fraction):
        if fraction > 0.5:
            raise RuntimeError("disk full")

    with pytest.raises(EmbeddingChangeError, match="RuntimeError: disk full.*output was removed"):
        build_multiscales(path, tmp_path / "pyramid.zarr", tile=8, progress=failing_progress)
    assert list(tmp_path.iterdir()) == [path]


def test_a_missing_source_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="No Zarr store"):
        build_multiscales(tmp_path / "missing.zarr", tmp_path / "pyramid.zarr")
    assert not (tmp_path / "pyramid.zarr").exists()


def test_a_wrong_variable_is_a_store_error_naming_the_variables(source, tmp_path):
    path, _ = source
    with pytest.raises(StoreError, match="scores"):
        build_multiscales(path, tmp_path / "pyramid.zarr", variable="embeddings")


def test_wrong_dims_are_a_store_error(tmp_path):
    path = tmp_path / "flat.zarr"
    xr.Dataset({"scores": (("y", "x"), np.zeros((4, 4), np.float32))}).to_zarr(path)
    with pytest.raises(StoreError, match="dims"):
        build_multiscales(path, tmp_path / "pyramid.zarr")


def test_an_existing_output_is_refused_and_left_alone(source, tmp_path):
    path, _ = source
    output = tmp_path / "pyramid.zarr"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="already exists"):
        build_multiscales(path, output)
    assert (output / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("options", [{"resampling": "bilinear"}, {"tile": 1}, {"zarr_format": 4}])
def test_unknown_options_are_parameter_errors(source, tmp_path, options):
    path, _ = source
    with pytest.raises(ParameterError):
        build_multiscales(path, tmp_path / "pyramid.zarr", **options)


def test_the_root_records_where_the_pyramid_came_from(source, tmp_path):
    path, _ = source
    output = tmp_path / "pyramid.zarr"
    build_multiscales(path, output, tile=8, zarr_format=2)
    attrs = json.loads((output / ".zattrs").read_text())
    assert attrs["embedding_change:source"] == str(Path(path).absolute())
    assert attrs["embedding_change:variable"] == "scores"


def test_a_pyramid_reads_and_writes_s3(s3_bucket, s3_storage_options, tmp_path):
    values = scores_with_nan_edges(shape=(1, 2, 21, 18), seed=9)
    local = write_scores_store(tmp_path / "scores.zarr", values)
    source = f"{s3_bucket}/scores.zarr"
    xr.open_zarr(local).to_zarr(source, storage_options=s3_storage_options, zarr_format=3)
    output = f"{s3_bucket}/pyramid.zarr"
    build_multiscales(
        source,
        output,
        tile=8,
        resampling="max",
        storage_options=s3_storage_options,
        output_storage_options=s3_storage_options,
    )
    tree = xr.open_datatree(output, engine="zarr", storage_options=s3_storage_options)
    zarr_cm.validate_all(dict(tree.attrs))
    np.testing.assert_array_equal(tree["0"].ds["scores"].values, values)
    np.testing.assert_allclose(
        tree["2"].ds["scores"].values, reference_halve(reference_halve(values, "max"), "max")
    )


def test_a_dask_cluster_builds_the_same_pyramid_as_threads(source, tmp_path):
    from distributed import Client, LocalCluster

    path, _ = source
    threads = build_multiscales(path, tmp_path / "threads.zarr", tile=8)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        fractions = []
        on_cluster = build_multiscales(
            path, tmp_path / "cluster.zarr", tile=8, scheduler=client, progress=fractions.append
        )
    for level in threads.children:
        np.testing.assert_array_equal(
            on_cluster[level].ds["scores"].values, threads[level].ds["scores"].values
        )
    assert fractions[-1] == pytest.approx(1.0)


def share_above(values: np.ndarray, threshold: float = 3.0) -> float:
    """The share of valid pixels above the threshold."""
    valid = ~np.isnan(values)
    return float((values[valid] > threshold).mean())


@pytest.fixture(scope="module")
def generated_scores(tmp_path_factory):
    """Scores of a generated AEF-like store (planted one-year events, lasting changes, noise)."""
    from embedding_change.core import compute_change_scores
    from embedding_change.core.synthetic import write_aef_like_store

    folder = tmp_path_factory.mktemp("faithful")
    truth = write_aef_like_store(folder / "aef.zarr", shape=(512, 512), seed=3)
    compute_change_scores(folder / "aef.zarr", folder / "scores.zarr", methods=["loo_medoid"])
    return folder / "scores.zarr", truth


@pytest.mark.slow
def test_the_default_pyramid_stays_faithful_zoomed_out_where_max_floods(generated_scores, tmp_path):
    path, truth = generated_scores
    shares = {}
    levels = {}
    for method in (None, "max"):
        options = {} if method is None else {"resampling": method}
        tree = build_multiscales(path, tmp_path / f"{method}.zarr", tile=32, **options)
        levels[method] = [tree[str(k)].ds["scores"].values[:, 0] for k in range(len(tree.children))]
        shares[method] = [share_above(level) for level in levels[method]]
        tree.close()

    default = shares[None]
    assert len(default) >= 5
    assert 0.005 < default[0] < 0.2  # speckle and events above 3 at full resolution
    assert all(share <= 2 * default[0] for share in default)  # no flooding at any level
    assert shares["max"][3] > 5 * shares["max"][0]  # max floods (why it is not the default)
    events = [c for c in truth.changes if c.kind == "one_year"]
    big = [c for c in events if c.rows[1] - c.rows[0] >= 8 and c.cols[1] - c.cols[0] >= 8]
    assert big
    years = list(truth.years)
    level_3 = levels[None][3]
    for change in big:
        t = years.index(change.year)
        (r0, r1), (c0, c1) = change.rows, change.cols
        assert share_above(levels[None][0][t, r0:r1, c0:c1]) > 0.5, change  # visible at level 0
        block = level_3[t, r0 // 8 : -(-r1 // 8), c0 // 8 : -(-c1 // 8)]
        assert np.nanmax(block) > 3, change
