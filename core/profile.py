"""One pixel's story: its scores over the years, and its embeddings' year-by-year distances.

Reads the scores output at one pixel, then the same pixel of the embedding store the output
was computed from (its attributes record the store's URL, variable, window and metric): one
small read of every year, no more. The distance matrix uses the run's metric and no-data rules,
in float64: the report's numbers, not the kernel's float32 ones (they agree to ~1e-6).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .credentials import mask
from .errors import StoreError, WindowError
from .quantisation import SIGNED_SQUARE
from .scores_output import open_scores
from .store import open_embedding_store


@dataclass
class PixelProfile:
    """What the report shows about one pixel of a scores output."""

    scores_url: str
    x: float  # pixel centre, in the output's CRS
    y: float
    crs: str | None
    row: int  # in the output
    col: int
    years: list[int]
    scores: dict[str, np.ndarray]  # label -> value per year (NaN: none)
    source: str | None = None
    metric: str | None = None
    distances: np.ndarray | None = None  # (year, year); NaN where a year has no data
    has_data: np.ndarray | None = None  # per year
    note: str | None = None  # why the distances are missing, if they are
    lon_lat: tuple[float, float] | None = None
    medoid_years: list[int | None] = field(default_factory=list)


def pixel_of_point(grid, x: float, y: float) -> tuple[int, int]:
    """(row, col) of the output pixel holding the point (output CRS); outside is an error."""
    a, _, c, _, e, f = grid.transform
    row, col = math.floor((y - f) / e), math.floor((x - c) / a)
    ny, nx = grid.shape
    if not (0 <= row < ny and 0 <= col < nx):
        xmin, ymin, xmax, ymax = grid.bbox
        raise WindowError(
            f"The point ({x:.6f}, {y:.6f}) lies outside the scores output, which covers "
            f"({xmin:.6f}, {ymin:.6f}, {xmax:.6f}, {ymax:.6f}) in {grid.crs or 'its CRS'}. "
            "Pick a point on the scores."
        )
    return row, col


def point_in_crs(x: float, y: float, point_crs: str | None, crs: str | None):
    """The point moved from `point_crs` into `crs` (GDAL's osr); unchanged if either is None."""
    if not point_crs or not crs:
        return x, y
    from osgeo import osr

    from .grid import spatial_reference

    source, target = spatial_reference(point_crs), spatial_reference(crs)
    if source is None or target is None:
        raise WindowError(f"Cannot place the point: GDAL does not know {point_crs!r} or {crs!r}.")
    if source.IsSame(target):
        return x, y
    for srs in (source, target):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    tx, ty, _ = osr.CoordinateTransformation(source, target).TransformPoint(x, y)
    return tx, ty


def read_pixel_profile(
    scores,
    x: float,
    y: float,
    *,
    point_crs: str | None = None,
    storage_options: dict | None = None,
    with_embeddings: bool = True,
    credentials: Callable[[dict | None, str], dict | None] | None = None,
) -> PixelProfile:
    """The profile of the output pixel under (x, y); `point_crs` None means the output's CRS.

    storage_options are for the embedding store; None: those the run recorded (endpoint,
    region, anon; never secrets), passed through credentials(options, url) when given, so a
    private store is reached the way the run reached it (the plugin adds back the secrets of
    the authentication configuration the run used; AWS variables and profiles need nothing)."""
    output = open_scores(scores)
    grid = output.grid
    px, py = point_in_crs(x, y, point_crs, grid.crs)
    row, col = pixel_of_point(grid, px, py)
    values = np.asarray(output.array[:, :, row, col], dtype=np.float64)  # (time, band)
    years = [int(t) for t in output.times]
    profile = PixelProfile(
        scores_url=output.url,
        x=float(grid.x_coords(col, col + 1)[0]),
        y=float(grid.y_coords(row, row + 1)[0]),
        crs=grid.crs,
        row=row,
        col=col,
        years=years,
        scores={band: values[:, b] for b, band in enumerate(output.bands)},
        source=output.attrs.get("embedding_change:source"),
        metric=output.attrs.get("embedding_change:metric"),
    )
    if grid.crs:
        profile.lon_lat = point_in_crs(profile.x, profile.y, grid.crs, "EPSG:4326")
    if with_embeddings:
        try:
            options = _source_options(output.attrs, storage_options, credentials, profile.source)
        except Exception as exc:  # the front end's look-up of the credentials
            profile.note = (
                "The credentials for the embedding store were not found, only the scores are "
                f"shown: {mask(exc)}"
            )
        else:
            _add_embedding_distances(profile, output.attrs, options)
    return profile


def _source_options(attrs: dict, storage_options, credentials, url):
    if storage_options is not None:
        return storage_options
    recorded = attrs.get("embedding_change:storage_options") or None
    if credentials is not None and url:
        return credentials(recorded, url)
    return recorded


def _add_embedding_distances(profile: PixelProfile, attrs: dict, storage_options) -> None:
    window = attrs.get("embedding_change:window")
    if not profile.source or not window:
        profile.note = (
            "The output does not record its embedding store (embedding_change:source and "
            "embedding_change:window attributes): only the scores are shown."
        )
        return
    try:
        store = open_embedding_store(
            profile.source, attrs.get("embedding_change:variable", "embeddings"), storage_options
        )
    except StoreError as exc:
        profile.note = f"The embedding store could not be read, only the scores are shown: {exc}"
        return
    times = [int(t) for t in store.times]
    missing = [year for year in profile.years if year not in times]
    if missing:
        profile.note = f"The embedding store has no years {missing}: only the scores are shown."
        return
    indices = [times.index(year) for year in profile.years]
    r, c = window["row0"] + profile.row, window["col0"] + profile.col
    # One-pixel slices, not integers: zarr 3.1 fails on integer y/x of a sharded array
    # (it broadcasts the inner chunk's (64, 1, 1) into (1, 64)).
    pixel = (indices, slice(None), slice(r, r + 1), slice(c, c + 1))
    raw = np.asarray(store.array.get_orthogonal_selection(pixel))[:, :, 0, 0]
    vectors, valid = embedding_vectors(raw, store.quantisation, profile.metric)
    profile.distances = distance_matrix(vectors, valid, profile.metric or "alpha_earth_cosine")
    profile.has_data = valid
    profile.medoid_years = [
        None if m is None else profile.years[m] for m in loo_medoids(profile.distances, valid)
    ]


def embedding_vectors(raw: np.ndarray, quantisation, metric: str | None):
    """(year, band) float64 vectors as the metric sees them, and which years have data."""
    raw = np.asarray(raw)
    if raw.dtype.kind == "f":
        valid = ~np.isnan(raw[:, 0])
    else:
        valid = raw[:, 0] != quantisation.nodata if quantisation.nodata is not None else None
        valid = np.ones(len(raw), bool) if valid is None else valid
    values = raw.astype(np.float64)
    if quantisation.method == SIGNED_SQUARE and metric != "cosine":
        values = np.sign(values) * (values / 127.5) ** 2
    values[~valid] = np.nan
    return values, valid


def distance_matrix(vectors: np.ndarray, valid: np.ndarray, metric: str) -> np.ndarray:
    """d(e_i, e_j) for every pair of years; NaN where either year has no data."""
    T = len(vectors)
    out = np.full((T, T), np.nan)
    v = np.where(valid[:, None], vectors, 0.0)
    if metric == "euclidean":
        d = np.sqrt(np.maximum(((v[:, None, :] - v[None, :, :]) ** 2).sum(-1), 0.0))
    else:
        norms = np.linalg.norm(v, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            d = 1.0 - (v @ v.T) / np.outer(norms, norms)
    both = valid[:, None] & valid[None, :]
    out[both] = d[both]
    np.fill_diagonal(out, np.where(valid, 0.0, np.nan))
    return out


def loo_medoids(distances: np.ndarray, valid: np.ndarray) -> list[int | None]:
    """Each year's leave-one-out medoid (index), among the other years with data; None if the
    year has no data or fewer than two others have (the engine needs 3 valid years)."""
    T = len(valid)
    result: list[int | None] = []
    for k in range(T):
        others = [j for j in range(T) if j != k and valid[j]]
        if not valid[k] or len(others) < 2:
            result.append(None)
            continue
        sub = distances[np.ix_(others, others)]
        result.append(others[int(np.argmin(sub.sum(axis=1)))])
    return result
