"""The scores Zarr: its layout, where a run writes it, and how a run finishes or cleans up.

A run writes into a hidden sibling (`.<name>.partial-<id>`) for local outputs and renames it
into place only when every tile is written, so an output that exists is complete. Remote outputs
cannot be renamed cheaply: they are written in place and deleted on failure or cancel.
A run first claims its output, local or remote (core.output_claim), so a second run to the
same output fails at once and the leftovers of killed runs are swept.
"""

from __future__ import annotations

import errno
import functools
import json
import math
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
from .errors import EmbeddingChangeError, OutputError
from .failures import chunk_key, chunk_of_key, disk_full_words, failed_key, plain_cause
from .grid import Grid
from .output_claim import OutputClaim, RemoteClaim
from .retry import DEFAULT_POLICY, RetryPolicy, refuse_writes, writes_refused
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
    retry: RetryPolicy = DEFAULT_POLICY
    claim: OutputClaim | RemoteClaim | None = None

    @classmethod
    def prepare(
        cls,
        output,
        storage_options: dict | None = None,
        *,
        retry: RetryPolicy = DEFAULT_POLICY,
        log=None,
    ) -> OutputTarget:
        """Refuse an existing or unwritable output; claim it and pick the working location."""
        final = store_url(output)
        log = log or (lambda line: None)
        if is_remote(final):
            options = storage_options_for(final, storage_options)
            claim = RemoteClaim.take(final, options, log, retry=retry)
            try:  # through core.retry: a flaky server must not fail the check
                exists = not sync(zarr_store(final, storage_options, retry=retry).is_empty(""))
            except Exception as exc:
                if claim is not None:
                    claim.release()
                raise OutputError(f"Cannot reach the output {final}: {plain_cause(exc)}.") from exc
            if exists:
                if claim is not None:
                    claim.release()
                raise OutputError(
                    f"The output {final} already exists; choose a new name or delete it first."
                )
            return cls(final, final, options, retry, claim)
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
        claim = OutputClaim.take(path, partial, log)
        if path.exists():  # finished by another run between the first check and the claim
            claim.release()
            raise OutputError(
                f"The output {final} already exists: another run finished this output first. "
                "Choose a new name or delete it first."
            )
        return cls(final, str(partial), {}, retry, claim)

    def check_space(self, planes: int, shape: tuple[int, int]) -> None:
        """Refuse at once a local output the disk cannot hold (all `planes` of full chunks)."""
        self.check_free(planes * output_chunk_bytes(shape))

    def check_free(self, needed: int) -> None:
        """Refuse at once a local output the disk cannot hold (`needed` bytes)."""
        if is_remote(self.url):
            return
        free = shutil.disk_usage(Path(self.url).parent).free
        if free < needed:
            raise OutputError(
                f"Cannot write {self.final_url}: {disk_full_words(free, needed)}. Free some "
                "space, choose another folder or a smaller extent."
            )

    def finish(self, attrs: dict | None = None) -> None:
        """Record `attrs`, consolidate the metadata (one read opens the store) and show the
        store under its final name."""
        try:
            if isinstance(self.claim, RemoteClaim):
                self.claim.check_held()
            if attrs:
                group = zarr.open_group(
                    zarr_store(self.url, self.storage_options, read_only=False, retry=self.retry)
                )
                group.attrs.update(attrs)
            consolidate(self.url, self.storage_options, self.retry)
            if self.url != self.final_url:
                if os.path.exists(self.final_url):
                    raise FileExistsError(errno.EEXIST, "exists", self.final_url)
                os.rename(self.url, self.final_url)
        except EmbeddingChangeError:
            raise
        except Exception as exc:
            raise OutputError(
                f"Could not finish the output {self.final_url}: {plain_cause(exc)}. Its partial "
                "data was removed; choose a new name or run again."
            ) from exc
        if self.claim is not None:
            self.claim.release()

    def discard(self) -> None:
        """Remove whatever the run wrote and refuse the late writes of tasks still running."""
        refuse_writes(self.url)
        try:
            if isinstance(self.claim, RemoteClaim) and self.claim.lost:
                pass  # another run holds the output now: what is there is not ours to remove
            elif is_remote(self.url):
                fs, path = fsspec.core.url_to_fs(self.url, **self.storage_options)
                if fs.exists(path):
                    fs.rm(path, recursive=True)
            else:
                shutil.rmtree(self.url, ignore_errors=True)
        except Exception:  # a server gone: nothing more to do; the error that ended the run stands
            pass
        finally:
            if self.claim is not None:
                self.claim.release()


def output_chunk_bytes(shape: tuple[int, int], itemsize: int = 4) -> int:
    """Bytes of one (y, x) plane of the output in whole chunks (edge chunks are padded)."""
    ny, nx = shape
    return math.ceil(ny / OUTPUT_CHUNK) * math.ceil(nx / OUTPUT_CHUNK) * OUTPUT_CHUNK**2 * itemsize


def consolidate(
    url: str, storage_options: dict | None = None, retry: RetryPolicy = DEFAULT_POLICY
) -> None:
    """Consolidate a store's metadata so that one read opens it (remote stores above all)."""
    with warnings.catch_warnings():
        # zarr warns that v3 has no consolidated metadata in its spec yet; readers that do not
        # know it fall back to the plain metadata, so the warning tells users nothing.
        warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
        zarr.consolidate_metadata(zarr_store(url, storage_options, read_only=False, retry=retry))


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
    _create_or_drop(
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


def _create_or_drop(target: OutputTarget, *args, **kwargs) -> None:
    """create_empty_cube, unless (or undone if) the run was discarded meanwhile: the task
    creating the output may still run when a cancel or an error has discarded the run."""
    if writes_refused(target.url):
        raise OutputError(f"The run writing {target.final_url} was discarded.")
    create_empty_cube(target, *args, **kwargs)
    remove_if_refused(target.url)


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
            zarr_store(target.url, target.storage_options, read_only=False, retry=target.retry),
            group=group,
            mode=mode,
            compute=False,
            zarr_format=zarr_format,
            encoding=encoding,
            consolidated=False,
        )
    except Exception as exc:
        raise OutputError(
            f"Cannot write the output {target.final_url}: {plain_cause(exc)}. Check the folder "
            "or bucket can be written to, then run again."
        ) from exc


@functools.lru_cache(maxsize=8)
def _scores_array(url: str, options_json: str, retry: RetryPolicy = DEFAULT_POLICY) -> zarr.Array:
    """The output array, opened once per process (write tasks run on dask workers)."""
    store = zarr_store(url, json.loads(options_json), read_only=False, retry=retry)
    return zarr.open_array(store, path=SCORES)


def write_tile(
    tile: np.ndarray,
    url: str,
    storage_options: dict,
    y0: int,
    x0: int,
    retry: RetryPolicy = DEFAULT_POLICY,
) -> int:
    """Write a (time, band, y, x) tile at output pixel (y0, x0); returns the pixels written.

    A run that was cancelled or failed has already discarded its store while a dask worker
    may still be scoring a tile: that late tile is refused, not written, as writing it would
    bring the discarded folder (or prefix) back.
    """
    try:
        array = _scores_array(url, json.dumps(storage_options, sort_keys=True), retry)
        metadata = "zarr.json" if array.metadata.zarr_format == 3 else ".zarray"
        if writes_refused(url) or not sync(array.store.exists(f"{array.path}/{metadata}")):
            raise OutputError(f"The run writing {url} was discarded; its late tile is dropped.")
        _, _, h, w = tile.shape
        if not write_chunks(array, tile, y0, x0):
            array[:, :, y0 : y0 + h, x0 : x0 + w] = tile
        remove_if_refused(url)
    except OutputError:
        raise
    except Exception as exc:
        raise write_error(url, storage_options, y0, x0, exc, retry) from exc
    return h * w


def remove_if_refused(url: str) -> None:
    """A write that was under way when its run was discarded may have made folders again:
    remove them (a local run's folder; a remote store refuses the write itself)."""
    if writes_refused(url):
        if not is_remote(url):
            shutil.rmtree(url, ignore_errors=True)
        raise OutputError(f"The run writing {url} was discarded; its late tile is dropped.")


def final_name(url: str) -> str:
    """The output's own name for a run's working folder `.<name>.partial-<id>`."""
    if is_remote(url):
        return url
    path = Path(url)
    if path.name.startswith(".") and ".partial-" in path.name:
        return str(path.parent / path.name[1:].rsplit(".partial-", 1)[0])
    return url


def write_error(url: str, storage_options: dict, y0: int, x0: int, exc, retry) -> OutputError:
    """An OutputError naming the output, the chunk key and its year, and the cause."""
    if writes_refused(url):
        return OutputError(f"The run writing {url} was discarded; its late tile is dropped.")
    key = failed_key(exc)
    position = chunk_of_key(key, 4) if key else None
    position = position or (0, 0, y0 // OUTPUT_CHUNK, x0 // OUTPUT_CHUNK)
    try:
        array = _scores_array(url, json.dumps(storage_options, sort_keys=True), retry)
        key = chunk_key(array, position)
        needed = _stored_bytes(zarr.open_group(array.store, mode="r"))
        years = array.attrs.get("embedding_change:years") or _output_years(array)
        which = f"year {years[position[0]]}"
    except Exception:
        key, needed, which = f"{SCORES}/c/{'/'.join(map(str, position))}", 0, "year unknown"
    cause = plain_cause(exc)
    fix = "Check the folder or bucket can be written to, then run again."
    if cause == "disk full" and not is_remote(url):
        free = shutil.disk_usage(Path(url).parent).free if Path(url).parent.exists() else 0
        cause = disk_full_words(free, needed)
        fix = "Free some space, choose another folder or a smaller extent."
    elif cause == "permission denied":
        fix = "Write where you have permission (folder rights, or the bucket's credentials)."
    return OutputError(
        f"Could not write {final_name(url)}, chunk {key} ({which}): {cause}. {fix} "
        "The partial output was removed."
    )


def _stored_bytes(group) -> int:
    """Bytes of every chunk of the output's data arrays (scores and what is written beside)."""
    total = 0
    for _, data in group.arrays():
        if data.ndim >= 3:
            grid = math.prod(math.ceil(s / c) for s, c in zip(data.shape, data.chunks, strict=True))
            total += grid * math.prod(data.chunks) * data.dtype.itemsize
    return total


def _output_years(array) -> list[int]:
    root = zarr.open_group(array.store, mode="r")
    return [int(y) for y in root["time"][...]]
