"""The pixel grid of a store: an affine transform (GDAL order), a shape and a CRS."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
from zarr_cm import proj, spatial

from .errors import StoreError


@dataclass(frozen=True)
class Grid:
    """x = c + a*col + b*row, y = f + d*col + e*row at pixel corners; shape is (ny, nx)."""

    transform: tuple[float, float, float, float, float, float]
    shape: tuple[int, int]
    crs: str | None

    @classmethod
    def from_coordinates(cls, x, y, crs: str | None) -> Grid:
        """A north-up grid from 1-D pixel-centre coordinates (the first two values of each)."""
        nx, ny = x.shape[0], y.shape[0]
        if nx < 2 or ny < 2:
            raise StoreError("x/y coordinates need at least two values each to define the grid.")
        x0, x1 = (float(v) for v in x[:2])
        y0, y1 = (float(v) for v in y[:2])
        a, e = x1 - x0, y1 - y0
        return cls((a, 0.0, x0 - a / 2, 0.0, e, y0 - e / 2), (ny, nx), crs)

    @property
    def is_north_up(self) -> bool:
        a, b, _, d, e, _ = self.transform
        return b == 0 and d == 0 and a > 0 and e < 0

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the pixel edges."""
        a, _, c, _, e, f = self.transform
        ny, nx = self.shape
        xs, ys = (c, c + a * nx), (f, f + e * ny)
        return min(xs), min(ys), max(xs), max(ys)

    def x_coords(self, col0: int, col1: int) -> np.ndarray:
        """Pixel-centre x of columns col0..col1-1."""
        a, _, c, *_ = self.transform
        return c + a * (np.arange(col0, col1, dtype=np.float64) + 0.5)

    def y_coords(self, row0: int, row1: int) -> np.ndarray:
        """Pixel-centre y of rows row0..row1-1."""
        *_, e, f = self.transform
        return f + e * (np.arange(row0, row1, dtype=np.float64) + 0.5)

    def subset(self, row0: int, row1: int, col0: int, col1: int) -> Grid:
        """The grid of the pixels rows row0..row1-1, columns col0..col1-1."""
        a, b, c, d, e, f = self.transform
        return Grid(
            (a, b, c + a * col0 + b * row0, d, e, f + d * col0 + e * row0),
            (row1 - row0, col1 - col0),
            self.crs,
        )

    def spatial_attrs(self) -> dict:
        """The zarr "spatial" and "proj" convention attributes, declared in `zarr_conventions`."""
        attrs = spatial.insert(
            {},
            {
                "spatial:dimensions": ["y", "x"],
                "spatial:transform": list(self.transform),
                "spatial:transform_type": "affine",
                "spatial:shape": list(self.shape),
                "spatial:bbox": list(self.bbox),
                "spatial:registration": "pixel",
            },
        )
        if self.crs:
            attrs = proj.insert(attrs, {"proj:code": self.crs})
        return attrs


def spatial_reference(crs: str):
    """GDAL's osr.SpatialReference for a CRS (code, WKT, PROJ string); None without GDAL or if
    GDAL cannot read it.

    GDAL says it cannot read one by a return code or, where exceptions are on (QGIS may turn
    them on, GDAL 4 will by default), a RuntimeError: both are handled. GDAL >= 3.7 gets
    exceptions for this reading only, which also spares the FutureWarning GDAL 3.10 prints when
    a SpatialReference is made with neither mode chosen; the process-wide setting is left alone.
    """
    try:
        from osgeo import osr
    except ImportError:
        return None
    scope = osr.ExceptionMgr() if hasattr(osr, "ExceptionMgr") else contextlib.nullcontext()
    try:
        with scope:
            srs = osr.SpatialReference()
            return srs if srs.SetFromUserInput(crs) == 0 else None
    except RuntimeError:
        return None
