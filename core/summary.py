"""When things changed: per score and pixel, the year of the largest score and that score.

Written beside `scores` in the same output, from each tile of scores right after the tile is
written (the input is read once):

    largest_score(band, y, x)    float32  the largest finite score over the years, NaN if none
    year_of_largest(band, y, x)  float32  its year (the first one on ties), NaN if none

Same band labels, grid, chunks (1, 256, 256), `_CRS` and dimension names as `scores`.
"""

from __future__ import annotations

import numpy as np
import zarr

from .errors import OutputError
from .output import SCORES, remove_if_refused, write_tile
from .retry import DEFAULT_POLICY, writes_refused
from .store import zarr_store

LARGEST = "largest_score"
YEAR_OF_LARGEST = "year_of_largest"
SUMMARY = {
    LARGEST: "largest score over the years",
    YEAR_OF_LARGEST: "year of the largest score",
}


def summarise(tile: np.ndarray, years) -> tuple[np.ndarray, np.ndarray]:
    """(time, band, y, x) scores -> (largest, year of largest), each (band, y, x) float32."""
    finite = np.isfinite(tile)
    reached = finite.any(axis=0)
    filled = np.where(finite, tile, -np.inf)
    first_largest = filled.argmax(axis=0)  # argmax takes the first year on ties
    largest = np.take_along_axis(filled, first_largest[np.newaxis], axis=0)[0]
    largest = np.where(reached, largest, np.nan).astype(np.float32)
    year = np.where(reached, np.asarray(years, dtype=np.float32)[first_largest], np.nan)
    return largest, year.astype(np.float32)


def create_with_summary(create, target) -> None:
    """Run `create` (the scores store's creation), then add the empty summary arrays."""
    create()
    group = zarr.open_group(
        zarr_store(target.url, target.storage_options, read_only=False, retry=target.retry)
    )
    scores = group[SCORES]
    _, bands, ny, nx = scores.shape
    v3 = group.metadata.zarr_format == 3
    for name, long_name in SUMMARY.items():
        attrs = {"long_name": long_name}
        if "_CRS" in scores.attrs:
            attrs["_CRS"] = scores.attrs["_CRS"]
        if not v3:
            attrs["_ARRAY_DIMENSIONS"] = ["band", "y", "x"]
        group.create_array(
            name,
            shape=(bands, ny, nx),
            chunks=(1, *scores.chunks[2:]),
            dtype="float32",
            fill_value=np.nan,
            attributes=attrs,
            **({"dimension_names": ("band", "y", "x")} if v3 else {}),
        )


def write_tile_with_summary(
    tile: np.ndarray, url: str, storage_options: dict, y0: int, x0: int, retry=DEFAULT_POLICY
) -> int:
    """write_tile, then the tile's summary (refused like a late tile once the run is gone)."""
    written = write_tile(tile, url, storage_options, y0, x0, retry)
    group = zarr.open_group(zarr_store(url, storage_options, read_only=False, retry=retry))
    if LARGEST not in group:
        return written  # a store created without the summary arrays
    largest, year = summarise(tile, [int(t) for t in group["time"][...]])
    if writes_refused(url):
        raise OutputError(f"The run writing {url} was discarded; its late tile is dropped.")
    _, h, w = largest.shape
    group[LARGEST][:, y0 : y0 + h, x0 : x0 + w] = largest
    group[YEAR_OF_LARGEST][:, y0 : y0 + h, x0 : x0 + w] = year
    remove_if_refused(url)
    return written
