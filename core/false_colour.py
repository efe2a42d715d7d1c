"""The embedding as a picture: three bands, or the first three principal components, as RGB.

One colour mapping serves every year, so colours compare across years: the principal
components (or the three chosen bands) and the stretch (2nd..98th percentile per colour) come
from a sample (every 4th pixel both ways) of up to 4 x 4 store tiles spread over the extent,
all years. Then the extent is read a row of tiles at a time (memory grows with its width, not
its area), each year projected into <output>/<year>.tif: 3 bands of bytes, 1..255, 0 where the
year has no data (the engine's rule: the first band holds the no-data value, or NaN).

Every tile is read from the store once: the sampled tiles, read whole for the fit, wait on disk
(a hidden folder in the output, removed at the end; at most 16 tiles a year, 4 MiB each for
the mosaic) until their row of tiles is drawn, so memory stays bounded.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from osgeo import gdal

from .errors import CancelledError, OutputError, ParameterError
from .grid import spatial_reference
from .quantisation import SIGNED_SQUARE
from .run_size import DEFAULT_MAX_PIXELS, guard_run
from .scores_output import gdal_geotransform
from .store import open_embedding_store
from .window import PixelWindow, blocks, pixel_window

SAMPLE_TILES = 4  # per side: up to 4 x 4 tiles of the extent for the fit
SAMPLE_STEP = 4  # every 4th pixel of a sampled tile, both ways
PERCENTILES = (2.0, 98.0)


@dataclass(frozen=True)
class ColourMapping:
    """vector -> colour: (v - mean) @ axes, stretched from low..high to 1..255."""

    mean: np.ndarray  # (band,)
    axes: np.ndarray  # (band, 3)
    low: np.ndarray  # (3,)
    high: np.ndarray  # (3,)
    names: tuple[str, str, str]

    def colours(self, vectors: np.ndarray) -> np.ndarray:
        """(n, band) float vectors -> (n, 3) uint8 colours in 1..255."""
        projected = (vectors - self.mean) @ self.axes
        span = np.where(self.high > self.low, self.high - self.low, 1.0)
        scaled = 1.0 + 254.0 * np.clip((projected - self.low) / span, 0.0, 1.0)
        return np.round(scaled).astype(np.uint8)


@dataclass(frozen=True)
class FalseColourResult:
    folder: str
    files: list[str]
    years: list[int]
    mapping: ColourMapping


def embedding_false_colour(
    store,
    output,
    *,
    bbox=None,
    variable: str = "embeddings",
    years=None,
    bands=None,
    storage_options: dict | None = None,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    log: Callable[[str], None] | None = None,
) -> FalseColourResult:
    """Write a 3-band picture per year of the extent: `bands` (three band names) or, when
    None, the first three principal components fitted on the extent over all chosen years.
    A window over max_pixels stops before reading (core.run_size); log(line) gets its size."""
    source = open_embedding_store(store, variable, storage_options)
    window = pixel_window(source.grid, bbox)
    times = [int(t) for t in source.times]
    chosen = sorted({int(y) for y in years}) if years else times
    missing = [y for y in chosen if y not in times]
    if missing:
        raise ParameterError(f"Years {missing} are not in the store, which has {times}.")
    indices = [times.index(y) for y in chosen]
    guard_run(source, window, len(indices), max_pixels, local=True, log=log or (lambda _: None))
    if bands:
        bands = [str(b).strip() for b in bands]
        unknown = [b for b in bands if b not in source.bands]
        if len(bands) != 3 or unknown:
            raise ParameterError(
                f"Give three of the store's band names ({source.bands[0]}..{source.bands[-1]}), "
                f"not {', '.join(bands)}."
            )

    def check_cancel():
        if cancel is not None and cancel():
            raise CancelledError("Embedding false colour was cancelled.")

    check_cancel()
    folder = Path(output).absolute()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot create the output folder {folder}: {exc}") from exc
    files = [folder / f"{year}.tif" for year in chosen]
    try:
        with tempfile.TemporaryDirectory(prefix=".fit-tiles-", dir=folder) as kept_folder:
            kept = KeptTiles(Path(kept_folder))
            sample = sample_vectors(source, window, indices, kept, check_cancel)
            mapping = fit_mapping(sample, source.bands, bands)
            del sample
            check_cancel()
            _write_pictures(source, window, indices, mapping, files, progress, check_cancel, kept)
    except BaseException:
        for path in files:
            path.unlink(missing_ok=True)
        if not any(folder.iterdir()):
            shutil.rmtree(folder, ignore_errors=True)
        raise
    if progress is not None:
        progress(1.0)
    return FalseColourResult(str(folder), [str(p) for p in files], chosen, mapping)


class KeptTiles:
    """Tiles read for the fit, kept on disk as they were read until the pictures use them."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.kept: set[tuple[int, PixelWindow]] = set()

    def _path(self, t: int, block: PixelWindow) -> Path:
        return self.folder / f"{t}_{block.row0}_{block.col0}.npy"

    def put(self, t: int, block: PixelWindow, raw: np.ndarray) -> None:
        np.save(self._path(t, block), raw, allow_pickle=False)
        self.kept.add((t, block))

    def in_strip(self, t: int, row0: int) -> list[PixelWindow]:
        """The kept blocks of year t in the row of tiles starting at row0, left to right."""
        return sorted((b for k, b in self.kept if k == t and b.row0 == row0), key=lambda b: b.col0)

    def take(self, t: int, block: PixelWindow) -> np.ndarray:
        """The block as read (then forgotten: each is drawn once)."""
        path = self._path(t, block)
        raw = np.load(path, allow_pickle=False)
        path.unlink()
        self.kept.discard((t, block))
        return raw


def read_raw(source, t: int, rows: slice, cols: slice) -> np.ndarray:
    """(band, y, x) values of a block of one year, as stored."""
    return np.asarray(source.array.get_orthogonal_selection((t, slice(None), rows, cols)))


def read_vectors(source, t: int, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
    """(pixels, band) float64 vectors of a block of one year as the engine sees them (AEF's
    signed_square dequantised), and which pixels have data."""
    return vectors_of(read_raw(source, t, rows, cols), source)


def vectors_of(raw: np.ndarray, source) -> tuple[np.ndarray, np.ndarray]:
    """read_vectors for values already read: (band, y, x) -> (pixels, band), valid."""
    B = raw.shape[0]
    flat = raw.reshape(B, -1).T
    if flat.dtype.kind == "f":
        valid = ~np.isnan(flat[:, 0])
    elif source.quantisation.nodata is not None:
        valid = flat[:, 0] != source.quantisation.nodata
    else:
        valid = np.ones(len(flat), bool)
    values = flat.astype(np.float64)
    if source.quantisation.method == SIGNED_SQUARE:
        values = np.sign(values) * (values / 127.5) ** 2
    return values, valid


def sampled_blocks(source, window) -> list[PixelWindow]:
    """Up to SAMPLE_TILES x SAMPLE_TILES of the window's blocks (store tiles cut at the
    window's edges), evenly spread over its rows and columns of tiles."""
    every = blocks(window, (source.chunks[2], source.chunks[3]))
    row0s = sorted({b.row0 for b in every})
    col0s = sorted({b.col0 for b in every})
    rows, cols = set(_spread(row0s)), set(_spread(col0s))
    return [b for b in every if b.row0 in rows and b.col0 in cols]


def _spread(starts: list[int]) -> list[int]:
    picks = np.linspace(0, len(starts) - 1, min(len(starts), SAMPLE_TILES)).round().astype(int)
    return [starts[k] for k in np.unique(picks)]


def sample_vectors(source, window, indices, kept=None, check_cancel=None) -> np.ndarray:
    """Valid vectors, every SAMPLE_STEP-th pixel both ways, of the sampled blocks, all years;
    each block read whole and handed to `kept` (KeptTiles) for the pictures."""
    parts = []
    for t in indices:
        for block in sampled_blocks(source, window):
            if check_cancel is not None:
                check_cancel()
            raw = read_raw(source, t, slice(block.row0, block.row1), slice(block.col0, block.col1))
            values, valid = vectors_of(
                np.ascontiguousarray(raw[:, ::SAMPLE_STEP, ::SAMPLE_STEP]), source
            )
            parts.append(values[valid])
            if kept is not None:
                kept.put(t, block, raw)
    return np.concatenate(parts) if parts else np.zeros((0, len(source.bands)))


def fit_mapping(sample: np.ndarray, band_names, bands=None) -> ColourMapping:
    """The principal axes (or the chosen bands) and the stretch, from the sampled vectors."""
    B = len(band_names)
    if len(sample) < 3:
        raise ParameterError(
            "The extent has (almost) no pixels with data in the chosen years: nothing to colour."
        )
    if bands:
        axes = np.zeros((B, 3))
        for k, name in enumerate(bands):
            axes[list(band_names).index(name), k] = 1.0
        mean, names = np.zeros(B), tuple(bands)
    else:
        mean = sample.mean(axis=0)
        covariance = np.cov(sample - mean, rowvar=False)
        _, vectors = np.linalg.eigh(covariance)
        axes = vectors[:, ::-1][:, :3].copy()
        # Signs are arbitrary: make each axis's largest loading positive, for stable colours.
        axes *= np.sign(axes[np.abs(axes).argmax(axis=0), range(3)])
        names = ("PC1", "PC2", "PC3")
    projected = (sample - mean) @ axes
    low, high = np.percentile(projected, PERCENTILES, axis=0)
    return ColourMapping(mean, axes, low, high, names)


def _write_pictures(source, window, indices, mapping, files, progress, check_cancel, kept):
    h, w = window.shape
    srs = spatial_reference(source.grid.crs) if source.grid.crs else None
    grid = source.grid.subset(window.row0, window.row1, window.col0, window.col1)
    outputs = []
    for path in files:
        ds = gdal.GetDriverByName("GTiff").Create(
            str(path), w, h, 3, gdal.GDT_Byte, ["TILED=YES", "COMPRESS=DEFLATE", "PHOTOMETRIC=RGB"]
        )
        if ds is None:
            raise OutputError(f"Cannot write {path}: {gdal.GetLastErrorMsg()}")
        ds.SetGeoTransform(gdal_geotransform(grid))
        if srs is not None:
            ds.SetSpatialRef(srs)
        for k, name in enumerate(mapping.names):
            band = ds.GetRasterBand(k + 1)
            band.SetNoDataValue(0)
            band.SetDescription(name)
        outputs.append(ds)
    cy = source.chunks[2]
    edges = [window.row0, *range((window.row0 // cy + 1) * cy, window.row1, cy), window.row1]
    strips = list(zip(edges[:-1], edges[1:], strict=True))
    for s, (r0, r1) in enumerate(strips):
        for ds, t in zip(outputs, indices, strict=True):
            check_cancel()
            values, valid = vectors_of(_read_strip(source, window, t, r0, r1, kept), source)
            picture = np.zeros((len(values), 3), np.uint8)
            picture[valid] = mapping.colours(values[valid])
            for k in range(3):
                block = picture[:, k].reshape(r1 - r0, w)
                ds.GetRasterBand(k + 1).WriteArray(block, 0, r0 - window.row0)
        if progress is not None:
            progress((s + 1) / len(strips))
    for ds in outputs:
        ds.FlushCache()
    outputs.clear()


def _read_strip(source, window, t: int, r0: int, r1: int, kept: KeptTiles) -> np.ndarray:
    """A row of tiles of one year, (band, y, x): its kept blocks from disk, the rest from the
    store in as few reads as the kept blocks leave (one when none is kept)."""
    here = kept.in_strip(t, r0)
    if not here:
        return read_raw(source, t, slice(r0, r1), slice(window.col0, window.col1))
    raw = np.empty((source.array.shape[1], r1 - r0, window.shape[1]), source.dtype)
    col = window.col0
    for block in [*here, None]:
        stop = window.col1 if block is None else block.col0
        if stop > col:
            part = slice(col - window.col0, stop - window.col0)
            raw[:, :, part] = read_raw(source, t, slice(r0, r1), slice(col, stop))
        if block is not None:
            raw[:, :, block.col0 - window.col0 : block.col1 - window.col0] = kept.take(t, block)
            col = block.col1
    return raw
