"""The hotspots GeoPackage's layers: their names and fields, each feature's year as a date
range the temporal controller animates, and a polygonized year's polygons by region."""

from __future__ import annotations

from osgeo import ogr

HOTSPOTS_LAYER = "hotspots"
REGIONS_LAYER = "hotspot_regions"

HOTSPOT_FIELDS = (
    ("year", ogr.OFTInteger),
    ("score", ogr.OFTString),
    ("region", ogr.OFTInteger64),
    ("pixels", ogr.OFTInteger64),
    ("area_m2", ogr.OFTReal),
    ("max_z", ogr.OFTReal),
    ("mean_z", ogr.OFTReal),
    ("start_date", ogr.OFTDateTime),
    ("end_date", ogr.OFTDateTime),
    ("summary", ogr.OFTInteger64),
)
REGION_FIELDS = (
    ("summary", ogr.OFTInteger64),
    ("score", ogr.OFTString),
    ("first_year", ogr.OFTInteger),
    ("last_year", ogr.OFTInteger),
    ("years", ogr.OFTInteger),
    ("pixel_years", ogr.OFTInteger64),
    ("area_m2", ogr.OFTReal),
    ("max_z", ogr.OFTReal),
    ("mean_z", ogr.OFTReal),
    ("start_date", ogr.OFTDateTime),
    ("end_date", ogr.OFTDateTime),
)


# A feature's year runs from its first to its last second. QGIS's temporal filter compares
# with the frame's ends: against date fields it shows a feature a frame early, and the
# GeoPackage provider compares datetimes as text, so 1 January next year would count as in it.
def year_start(year: int) -> str:
    return f"{year:04d}-01-01T00:00:00Z"


def year_end(year: int) -> str:
    return f"{year:04d}-12-31T23:59:59Z"


def set_fields(feature, values: dict) -> None:
    # By index: looking fields up by name is most of the cost of writing a feature.
    definition = feature.GetDefnRef()
    for name, value in values.items():
        feature.SetField(definition.GetFieldIndex(name), value)


def add_fields(layer, fields) -> None:
    for name, kind in fields:
        layer.CreateField(ogr.FieldDefn(name, kind))


def polygons_by_region(layer):
    """(region id, multipolygon) in region order; GDAL emits polygons in raster order, and
    would give a region two polygons only if its pixels were not connected (they are)."""
    layer.ResetReading()
    fids: dict[int, list[int]] = {}
    for feature in layer:
        fids.setdefault(feature.GetField(0), []).append(feature.GetFID())
    for region in sorted(fids):
        geometry = ogr.Geometry(ogr.wkbMultiPolygon)
        for fid in fids[region]:
            feature = layer.GetFeature(fid)  # owns its geometry: keep it while copying
            geometry.AddGeometry(feature.GetGeometryRef())
        yield region, geometry
