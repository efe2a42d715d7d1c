"""Areas in square metres: of one pixel per grid row, and of polygons in the output's CRS."""

from __future__ import annotations

import math

import numpy as np
from osgeo import osr

from .grid import Grid

# The sphere of WGS84's area (authalic radius): pixel areas within ~0.1% of the ellipsoid's.
AUTHALIC_RADIUS = 6371007.181


def pixel_row_areas(grid: Grid, srs) -> np.ndarray:
    """Area in m2 of one pixel of each row (a geographic grid's pixels shrink towards the poles)."""
    a, _, _, _, e, f = grid.transform
    ny = grid.shape[0]
    if srs is not None and srs.IsGeographic():
        edges = np.radians(f + e * np.arange(ny + 1, dtype=np.float64))
        band = np.abs(np.sin(edges[:-1]) - np.sin(edges[1:]))
        return AUTHALIC_RADIUS**2 * math.radians(abs(a)) * band
    unit = srs.GetLinearUnits() if srs is not None and srs.IsProjected() else 1.0
    return np.full(ny, abs(a * e) * unit**2)


class AreaMeter:
    """Areas in m2 of geometries in the output's CRS: projected CRSs as they are, geographic
    ones in one Lambert azimuthal equal-area projection centred on the output (equal-area
    everywhere, so one projection serves every region)."""

    def __init__(self, srs, grid: Grid):
        self.unit = 1.0
        self.transform = None
        if srs is not None and srs.IsProjected():
            self.unit = srs.GetLinearUnits() ** 2
        elif srs is not None:
            xmin, ymin, xmax, ymax = grid.bbox
            equal_area = osr.SpatialReference()
            equal_area.SetLAEA((ymin + ymax) / 2, (xmin + xmax) / 2, 0, 0)
            equal_area.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
            self.transform = osr.CoordinateTransformation(srs, equal_area)

    def area_m2(self, geometry) -> float:
        if self.transform is None:
            return geometry.GetArea() * self.unit
        projected = geometry.Clone()
        projected.Transform(self.transform)
        return projected.GetArea()
