"""The AEF mosaic's layout on storage, as zarrs 0.23 writes it (geospatial-jeff/aef-mosaic).

Zarr v3 without consolidated metadata; `embeddings` (time, band, y, x) int8, fill -128, in
shards of [1, 64, 4096, 4096] (`sharding_indexed`: inner chunks [1, 64, 256, 256], bytes +
zstd level 3; index bytes + crc32c at the end); all-fill inner chunks left out of their shard,
all-fill shards not written. `x`/`y` float64 pixel centres and `time` int32, one uncompressed
chunk each; `band` vlen-utf8 strings. Non-Zarr objects at the root: README.md, .checkpoint/.
The "chunked" layout (inner chunks as objects of their own) is the second case.
"""

from __future__ import annotations

import json

import numcodecs
import numpy as np
import zarr
from zarr.codecs import ZstdCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from .errors import ParameterError
from .grid import Grid

MOSAIC_SHARD = 4096  # pixels per shard side in the mosaic
MOSAIC_CHUNK = 256  # pixels per inner chunk side
LAYOUTS = ("sharded", "chunked")
NODATA = -128
GEOEMB_CONVENTION = {
    "uuid": "61c12cc5-0e28-4056-999a-480cf3fb7e4c",
    "name": "geoemb:",
    "description": "Geo-embeddings metadata for machine learning embeddings stored in Zarr",
}
QUANTIZATION = {
    "method": "signed_square",
    "original_dtype": "float32",
    "quantized_dtype": "int8",
    "formula": "(x / 127.5) ** 2 * sign(x)",
    "valid_range": [-127, 127],
    "nodata": NODATA,
}


def embedding_attrs(bands: int, gsd: float, model: str, source_data: str) -> dict:
    """The mosaic's geoemb: attributes (its grid's come from Grid.spatial_attrs)."""
    return {
        "geoemb:type": "pixel",
        "geoemb:dimensions": bands,
        "geoemb:model": model,
        "geoemb:source_data": source_data,
        "geoemb:data_type": "int8",
        "geoemb:gsd": gsd,
        "geoemb:quantization": dict(QUANTIZATION),
    }


def mosaic_attrs(grid: Grid, bands: int, model: str, source_data: str) -> dict:
    """The mosaic's group attributes for a store on `grid`."""
    attrs = grid.spatial_attrs()
    attrs["zarr_conventions"] = [*attrs.get("zarr_conventions", []), GEOEMB_CONVENTION]
    return {**attrs, **embedding_attrs(bands, grid.transform[0], model, source_data)}


def shard_shape(shape: tuple[int, int], shard, chunk: int) -> tuple[int, int]:
    """The shard's (y, x) size: `shard`, but no larger than the store rounded up to whole chunks,
    so a small store is not one mostly-empty 1 GiB-per-year shard in memory while written."""
    sides = (shard, shard) if isinstance(shard, int) else tuple(shard)
    fitted = []
    for side, n in zip(sides, shape, strict=True):
        if side % chunk:
            raise ParameterError(
                f"A shard side ({side}) must be a multiple of the chunk ({chunk})."
            )
        fitted.append(min(side, -(-n // chunk) * chunk))
    return fitted[0], fitted[1]


def create_mosaic_arrays(
    store,
    grid: Grid,
    years,
    bands: int,
    attrs: dict,
    *,
    layout: str = "sharded",
    shard=MOSAIC_SHARD,
    chunk: int = MOSAIC_CHUNK,
    zarr_format: int = 3,
) -> zarr.Array:
    """Create the group, its coordinates and the empty `embeddings` array; returns that array."""
    if layout not in LAYOUTS:
        raise ParameterError(f"layout must be one of {LAYOUTS}, not {layout!r}.")
    if layout == "sharded" and zarr_format != 3:
        raise ParameterError("Zarr v2 has no shards: use layout='chunked' with zarr_format=2.")
    ny, nx = grid.shape
    group = zarr.create_group(store, attributes=attrs, zarr_format=zarr_format)
    v3 = zarr_format == 3

    def coordinate(name, values, fill):
        names = {"dimension_names": [name]} if v3 else {"attributes": {"_ARRAY_DIMENSIONS": [name]}}
        array = group.create_array(
            name,
            shape=values.shape,
            chunks=values.shape,
            dtype=values.dtype if values.dtype != object else str,
            compressors=None,
            fill_value=fill,
            **names,
        )
        array[...] = values

    coordinate("x", grid.x_coords(0, nx), 0.0)
    coordinate("y", grid.y_coords(0, ny), 0.0)
    coordinate("time", np.asarray(years, dtype=np.int32), 0)
    labels = [f"A{i:02d}" for i in range(bands)]
    coordinate("band", np.asarray(labels, dtype=object if v3 else str), "")
    dims = ["time", "band", "y", "x"]
    shards = None
    if layout == "sharded":
        shards = (1, bands, *shard_shape((ny, nx), shard, chunk))
    return group.create_array(
        "embeddings",
        shape=(len(years), bands, ny, nx),
        chunks=(1, bands, chunk, chunk),
        shards=shards,
        dtype="int8",
        fill_value=NODATA,
        compressors=ZstdCodec(level=3) if v3 else numcodecs.Zstd(level=3),
        config={"write_empty_chunks": False},
        **({"dimension_names": dims} if v3 else {"attributes": {"_ARRAY_DIMENSIONS": dims}}),
    )


def write_root_objects(store) -> None:
    """The mosaic's non-Zarr objects at the root, which zarr-python warns about when listing."""
    checkpoint = {"config_hash": "synthetic", "completed": [], "last_checkpoint": 0}
    objects = {
        "README.md": b"# AEF-like mosaic\n\nGenerated by embedding_change.core.synthetic.\n",
        ".checkpoint/checkpoint.json": json.dumps(checkpoint).encode(),
    }
    buffer = default_buffer_prototype().buffer
    for key, data in objects.items():
        sync(store.set(key, buffer.from_bytes(data)))
