"""core/output.py: the scores store's layout, and tiles written into it read back exactly."""

import numpy as np
import pytest
import xarray as xr
import zarr

from embedding_change.core.errors import OutputError
from embedding_change.core.grid import Grid
from embedding_change.core.output import (
    OUTPUT_CHUNK,
    OutputTarget,
    create_scores_store,
    write_tile,
)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_tiles_read_back_exactly_whole_edge_and_all_nan(tmp_path, zarr_format):
    ny, nx = 300, 520  # whole tiles, and edge tiles cut at 300 rows and 520 columns
    grid = Grid((1.0, 0.0, 0.0, 0.0, -1.0, float(ny)), (ny, nx), "EPSG:3857")
    target = OutputTarget.prepare(tmp_path / "scores.zarr")
    create_scores_store(target, grid, [2020, 2021, 2022], ["a", "b"], {}, zarr_format)
    rng = np.random.default_rng(1)
    expected = rng.normal(size=(3, 2, ny, nx)).astype(np.float32)
    expected[1, 0, :256, 256:512] = np.nan  # a chunk with no scores at all
    expected[2, 1, 10:20, 30:40] = np.nan
    for y0 in range(0, ny, OUTPUT_CHUNK):
        for x0 in range(0, nx, OUTPUT_CHUNK):
            tile = expected[:, :, y0 : y0 + OUTPUT_CHUNK, x0 : x0 + OUTPUT_CHUNK]
            write_tile(tile, target.url, target.storage_options, y0, x0)
    target.finish()
    written = zarr.open_array(tmp_path / "scores.zarr", path="scores", mode="r")
    assert written.chunks == (1, 1, OUTPUT_CHUNK, OUTPUT_CHUNK)
    np.testing.assert_array_equal(written[...], expected)
    ds = xr.open_zarr(tmp_path / "scores.zarr", consolidated=True)
    np.testing.assert_array_equal(ds.scores.values, expected)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_late_tile_after_the_run_was_discarded_is_refused_not_written(tmp_path, zarr_format):
    # A dask.distributed worker can finish a tile after a cancel discarded the run's folder:
    # writing it must not create the hidden folder again.
    grid = Grid((1.0, 0.0, 0.0, 0.0, -1.0, 512.0), (512, 512), "EPSG:3857")
    target = OutputTarget.prepare(tmp_path / "scores.zarr")
    create_scores_store(target, grid, [2020, 2021, 2022], ["a", "b"], {}, zarr_format)
    tile = np.ones((3, 2, OUTPUT_CHUNK, OUTPUT_CHUNK), np.float32)
    write_tile(tile, target.url, target.storage_options, 0, 0)  # the run's own writes work
    target.discard()
    for y0, x0, part in ((256, 256, tile), (0, 0, tile[:, :, :100, :50])):  # plain and via zarr
        with pytest.raises(OutputError, match="discarded"):
            write_tile(part, target.url, target.storage_options, y0, x0)
    assert list(tmp_path.iterdir()) == []
