"""The scores Zarr: its layout, where a run writes it, and how a run finishes or cleans up.

A run writes into a hidden sibling (`.<name>.partial-<id>`) for local outputs and renames it
into place only when every tile is written, so an output that exists is complete. Remote outputs
cannot be renamed cheaply: they are written in place and deleted on failure or cancel.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import fsspec
import numpy as np
import xarray as xr
import zarr
from zarr.core.sync import sync

from .chunk_files import write_chunks
from .errors import OutputError
from .grid import Grid
from .store import is_remote, storage_options_for, store_url, zarr_store

OUTPUT_CHUNK = 256
SCORES = "scores"
# Scores are noise-like float32: zstd saves ~20% of the bytes at ~3x the cost of writing them
# plain, which would cost more CPU than the kernel itself. Scores are stored uncompressed.
SCORES_COMPRESSORS = None


@dataclass(frozen=True)
class OutputTarget:
    """Where a run writes (`url`) and where the result must end up (`final_url`)."""

    final_url: str
    url: str
    storage_options: dict

    @classmethod
    def prepare(cls, output, storage_options: dict | None = None) -> OutputTarget:
        """Refuse an existing or unwritable output; pick the working location."""
        final = store_url(output)
        if is_remote(final):
            options = storage_options_for(final, storage_options)
            fs, path = fsspec.core.url_to_fs(final, **options)
            if fs.exists(path):
                raise OutputError(
                    f"The output {final} already exists; choose a new name or delete it first."
                )
            return cls(final, final, options)
        path = Path(final)
        if path.exists():
            raise OutputError(
                f"The output {final} already exists; choose a new name or delete it first."
            )
        parent = path.parent
        if not parent.is_dir():
            raise OutputError(f"The output folder {parent} does not exist; create it first.")
        if not os.access(parent, os.W_OK):
            raise OutputError(
                f"The output folder {parent} is not writable; choose a folder you can write to."
            )
        partial = parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
        return cls(final, str(partial), {})

    def finish(self) -> None:
        """Consolidate the metadata (one read opens the store) and show it under its final name."""
        consolidate(self.url, self.storage_options)
        if self.url != self.final_url:
            os.replace(self.url, self.final_url)

    def discard(self) -> None:
        """Remove whatever the run wrote."""
        if is_remote(self.url):
            fs, path = fsspec.core.url_to_fs(self.url, **self.storage_options)
            if fs.exists(path):
                fs.rm(path, recursive=True)
        else:
            shutil.rmtree(self.url, ignore_errors=True)


def consolidate(url: str, storage_options: dict | None = None) -> None:
    """Consolidate a store's metadata so that one read opens it (remote stores above all)."""
    with warnings.catch_warnings():
        # zarr warns that v3 has no consolidated metadata in its spec yet; readers that do not
        # know it fall back to the plain metadata, so the warning tells users nothing.
        warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
        zarr.consolidate_metadata(zarr_store(url, storage_options, read_only=False))


def crs_attribute(crs: str | None) -> dict | None:
    """GDAL's `_CRS` attribute, which it needs to georeference a Zarr array (PLATFORM.md)."""
    if not crs:
        return None
    if crs.upper().startswith("EPSG:"):
        return {"url": f"http://www.opengis.net/def/crs/EPSG/0/{crs.split(':', 1)[1]}"}
    return {"wkt": crs}


def string_coordinate(values, zarr_format: int | None) -> np.ndarray:
    """Labels as v3 variable-length strings, or fixed width in v2 (GDAL 3.6 reads only those)."""
    return np.asarray(values, dtype=str if zarr_format == 2 else object)


def create_scores_store(
    target: OutputTarget,
    grid: Grid,
    years,
    labels: list[str],
    attrs: dict,
    zarr_format: int | None,
) -> None:
    """Write the empty scores dataset: metadata, coordinates and a NaN-filled `scores` array."""
    create_empty_cube(
        target,
        SCORES,
        grid,
        years,
        labels,
        attrs={**attrs, **grid.spatial_attrs()},
        variable_attrs={"long_name": "change scores, one band per score"},
        zarr_format=zarr_format,
        compressors=SCORES_COMPRESSORS,
        mode="w-",
    )


def create_empty_cube(
    target: OutputTarget,
    variable: str,
    grid: Grid,
    years,
    labels,
    *,
    attrs: dict,
    variable_attrs: dict,
    zarr_format: int | None,
    chunk: int = OUTPUT_CHUNK,
    dtype=np.float32,
    compressors="auto",
    group: str | None = None,
    extra_coords: dict | None = None,
    mode: str = "w",
) -> None:
    """An empty (time, band, y, x) cube of floats filled with NaN, its coordinates and attributes.

    Only metadata is written: tasks fill the chunks later. The array carries GDAL's `_CRS`
    (from the grid's CRS unless `variable_attrs` gives one) so GDAL georeferences it.
    """
    ny, nx = grid.shape
    shape = (len(years), len(labels), ny, nx)
    # Never computed (compute=False): one dask chunk keeps its graph one task at any size.
    placeholder = da.full(shape, np.nan, dtype=dtype, chunks=shape)
    crs = crs_attribute(grid.crs)
    variable_attrs = {**({"_CRS": crs} if crs else {}), **variable_attrs}
    ds = xr.Dataset(
        {variable: (("time", "band", "y", "x"), placeholder, variable_attrs)},
        coords={
            "time": ("time", np.asarray(years, dtype=np.int32)),
            "band": ("band", string_coordinate(labels, zarr_format)),
            "y": ("y", grid.y_coords(0, ny)),
            "x": ("x", grid.x_coords(0, nx)),
            **(extra_coords or {}),
        },
        attrs=attrs,
    )
    encoding = {
        variable: {
            "chunks": (1, 1, chunk, chunk),
            "_FillValue": np.dtype(dtype).type(np.nan),
            "compressors": compressors,
        }
    }
    try:
        ds.to_zarr(
            target.url,
            group=group,
            mode=mode,
            compute=False,
            zarr_format=zarr_format,
            encoding=encoding,
            consolidated=False,
            storage_options=target.storage_options or None,
        )
    except OSError as exc:
        raise OutputError(f"Cannot write the output {target.final_url}: {exc}") from exc


@functools.lru_cache(maxsize=8)
def _scores_array(url: str, options_json: str) -> zarr.Array:
    """The output array, opened once per process (write tasks run on dask workers)."""
    store = zarr_store(url, json.loads(options_json), read_only=False)
    return zarr.open_array(store, path=SCORES)


def write_tile(tile: np.ndarray, url: str, storage_options: dict, y0: int, x0: int) -> int:
    """Write a (time, band, y, x) tile at output pixel (y0, x0); returns the pixels written.

    A run that was cancelled or failed has already discarded its store while a dask worker
    may still be scoring a tile: that late tile is refused, not written, as writing it would
    bring the discarded folder (or prefix) back.
    """
    array = _scores_array(url, json.dumps(storage_options, sort_keys=True))
    metadata = "zarr.json" if array.metadata.zarr_format == 3 else ".zarray"
    if not sync(array.store.exists(f"{array.path}/{metadata}")):
        raise OutputError(f"The run writing {url} was discarded; its late tile is dropped.")
    _, _, h, w = tile.shape
    if not write_chunks(array, tile, y0, x0):
        array[:, :, y0 : y0 + h, x0 : x0 + w] = tile
    return h * w
