"""A finished scores output, opened for reading: its array, years, score labels and grid."""

from __future__ import annotations

from .errors import StoreError
from .grid import Grid
from .store import EmbeddingStore, open_embedding_store

SCORES_VARIABLE = "scores"


def default_score(bands) -> str:
    """The loo_medoid robust z-score if the output has one, else its first z-score or score."""
    bands = [str(b) for b in bands]
    for wanted in (
        lambda b: b.startswith("loo_medoid") and b.endswith("robust_time_zscore"),
        lambda b: b.endswith("zscore"),
    ):
        found = [b for b in bands if wanted(b)]
        if found:
            return found[0]
    return bands[0]


def open_scores(scores) -> EmbeddingStore:
    """The scores output opened as a cube (time, band, y, x); a clear error for anything else.

    A multiscale pyramid of scores (Build multiscale pyramid) stands for the scores it was built
    from, which its attributes record: its layers lead back to the full-resolution scores.
    """
    try:
        source = open_embedding_store(scores, SCORES_VARIABLE)
    except StoreError as exc:
        built_from = _pyramid_source(scores)
        if built_from is not None:
            return open_scores(built_from)
        raise StoreError(
            f"{scores} is not a change scores output (a Zarr folder with a 'scores' variable, "
            f"as Change scores writes it): {exc}"
        ) from exc
    if source.dtype.kind != "f":
        raise StoreError(f"{scores} holds {source.dtype} values; change scores are floats.")
    return source


def gdal_geotransform(grid: Grid) -> tuple[float, ...]:
    """GDAL's (c, a, b, f, d, e) from the grid's spatial:transform (a, b, c, d, e, f)."""
    a, b, c, d, e, f = grid.transform
    return (c, a, b, f, d, e)


def _pyramid_source(path) -> str | None:
    """The scores a multiscale pyramid was built from, if `path` is such a pyramid."""
    import zarr

    from .store import store_url, zarr_store

    try:
        attrs = dict(zarr.open_group(zarr_store(store_url(path)), mode="r").attrs)
    except Exception:  # not a Zarr group at all: the caller's error says so
        return None
    source = attrs.get("embedding_change:source")
    if "multiscales" in attrs and source and store_url(source) != store_url(path):
        return source
    return None
