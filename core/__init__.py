"""The engine: embedding cube in, change scores Zarr out; multiscale pyramids. Never imports qgis.

from embedding_change.core import compute_change_scores
compute_change_scores("s3://bucket/aef.zarr", "scores.zarr", bbox=(xmin, ymin, xmax, ymax))
"""

from .errors import (
    CancelledError,
    EmbeddingChangeError,
    OutputError,
    ParameterError,
    StoreError,
    WindowError,
)


def __getattr__(name):
    # The entry points import dask, xarray and zarr: load them on first use so that
    # `import embedding_change.core` (and QGIS's plugin start) stays quick.
    if name == "compute_change_scores":
        from .pipeline import compute_change_scores

        return compute_change_scores
    if name == "build_multiscales":
        from .multiscales import build_multiscales

        return build_multiscales
    raise AttributeError(name)


__all__ = [
    "CancelledError",
    "EmbeddingChangeError",
    "OutputError",
    "ParameterError",
    "StoreError",
    "WindowError",
    "build_multiscales",
    "compute_change_scores",
]
