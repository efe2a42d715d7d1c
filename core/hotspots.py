"""Change hotspots: the connected regions where a score passes a threshold, as polygons.

For each year the score is read one row of tiles at a time (memory grows with the output's
width, not its area, as in the pipeline). Each strip is labelled on its own (core/region_labels)
and joined to the regions left open at the previous strip's last row, so a region crossing any
number of tile edges comes out whole. Pixel labels go to a temporary GeoTIFF (mostly zeros,
compressed); once the year is done a backward pass over the strips gives every pixel its
region's final id (0 where the region is under the minimum size) and GDAL polygonizes that
raster. With `merge_years`, regions of consecutive years that share a pixel form one summary
region across those years.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from osgeo import gdal, ogr, osr

from . import region_labels
from .areas import AreaMeter, pixel_row_areas
from .errors import CancelledError, OutputError, ParameterError
from .grid import spatial_reference
from .hotspot_features import (
    HOTSPOT_FIELDS,
    HOTSPOTS_LAYER,
    REGION_FIELDS,
    REGIONS_LAYER,
    add_fields,
    polygons_by_region,
    set_fields,
    year_end,
    year_start,
)
from .scores_output import default_score, gdal_geotransform, open_scores

STRIP_ROWS = 256


@dataclass(frozen=True)
class HotspotsResult:
    """Where the polygons went and how many there are."""

    path: str
    layer: str
    regions_layer: str | None
    features: int
    regions: int
    years: tuple[int, ...]
    score: str


@dataclass
class _Stats:
    """Per region: pixels, sum and max of the score, area in m2."""

    count: np.ndarray
    total: np.ndarray
    top: np.ndarray
    area: np.ndarray

    @classmethod
    def empty(cls, n: int = 0) -> _Stats:
        return cls(np.zeros(n, np.int64), np.zeros(n), np.full(n, -np.inf), np.zeros(n, np.float64))

    def take(self, index) -> _Stats:
        return _Stats(self.count[index], self.total[index], self.top[index], self.area[index])

    def add_into(self, out: _Stats, index) -> None:
        np.add.at(out.count, index, self.count)
        np.add.at(out.total, index, self.total)
        np.maximum.at(out.top, index, self.top)
        np.add.at(out.area, index, self.area)

    @staticmethod
    def concat(parts: list[_Stats]) -> _Stats:
        if not parts:
            return _Stats.empty()
        return _Stats(*(np.concatenate([getattr(p, k) for p in parts]) for k in _STAT_FIELDS))


_STAT_FIELDS = ("count", "total", "top", "area")


def change_hotspots(
    scores,
    output,
    *,
    score: str | None = None,
    threshold: float = 3.0,
    min_pixels: int = 4,
    connectivity: int = 4,
    years=None,
    merge_years: bool = False,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    strip_rows: int = STRIP_ROWS,
) -> HotspotsResult:
    """Write a GeoPackage of one polygon per connected region per year where score >= threshold.

    Regions under `min_pixels` pixels are left out. Fields: year, score (the band label), pixels,
    area_m2, max_z, mean_z, start_date/end_date (the calendar year's first and last second,
    for the temporal controller),
    region (its id within the year) and, with `merge_years`, summary: the id of its feature in
    the second layer, which joins regions of consecutive years that share a pixel. An existing
    `output` is replaced, as QGIS's own tools do.
    """
    source = open_scores(scores)
    bands = list(source.bands)
    score = score or default_score(bands)
    if score not in bands:
        raise ParameterError(f"The output has no score {score!r}; it has {', '.join(bands)}.")
    threshold = float(threshold)
    if not math.isfinite(threshold):
        raise ParameterError(f"The threshold must be a finite number, not {threshold!r}.")
    if int(min_pixels) < 1:
        raise ParameterError("The minimum region size must be at least 1 pixel.")
    if connectivity not in (4, 8):
        raise ParameterError(f"Connectivity is 4 or 8 neighbours, not {connectivity!r}.")
    all_years = [int(t) for t in source.times]
    chosen = sorted({int(y) for y in years}) if years else all_years
    missing = [y for y in chosen if y not in all_years]
    if missing:
        raise ParameterError(f"Years {missing} are not in the output, which has {all_years}.")

    output = Path(output).absolute()
    if output.suffix.lower() != ".gpkg":
        raise OutputError(
            f"The hotspots are written as a GeoPackage: name it *.gpkg, not {output}."
        )
    if not output.parent.is_dir():
        raise OutputError(f"The output folder {output.parent} does not exist; create it first.")
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{output.stem}-", dir=output.parent))
    except OSError as exc:
        raise OutputError(f"Cannot write in {output.parent}: {exc}") from exc
    try:
        job = _Job(source, bands.index(score), threshold, int(min_pixels), connectivity == 8,
                   strip_rows, work, progress, cancel, len(chosen), merge_years)  # fmt: skip
        per_year = [job.label_year(all_years.index(y), k) for k, y in enumerate(chosen)]
        summary = job.merge_consecutive(chosen, per_year) if merge_years else None
        partial = work / "hotspots.gpkg"
        features, regions = job.write_polygons(partial, chosen, per_year, summary, score)
        job.labels = None
        if output.exists():
            output.unlink()
        os.replace(partial, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if progress:
        progress(1.0)
    return HotspotsResult(
        str(output),
        HOTSPOTS_LAYER,
        REGIONS_LAYER if merge_years else None,
        features,
        regions,
        tuple(chosen),
        score,
    )


class _Job:
    """One run: the scores, the labelling parameters, the temporary files and the progress."""

    def __init__(self, source, band, threshold, min_pixels, eight, strip_rows, work, progress,
                 cancel, n_years, merge):  # fmt: skip
        self.array = source.array
        self.band = band
        self.grid = source.grid
        self.threshold = threshold
        self.min_pixels = min_pixels
        self.eight = eight
        self.work = work
        self.progress = progress
        self.cancel = cancel
        ny, nx = self.grid.shape
        self.strips = [(r, min(r + strip_rows, ny)) for r in range(0, ny, strip_rows)]
        self.srs = spatial_reference(self.grid.crs) if self.grid.crs else None
        if self.srs is not None:
            self.srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        self.row_area = pixel_row_areas(self.grid, self.srs)
        self.labels = self._raster("labels.tif", n_years)
        self.local = None
        passes = 2 * n_years + (n_years - 1 if merge else 0)
        self.steps, self.done = passes * len(self.strips) + n_years, 0

    def _raster(self, name: str, bands: int):
        ny, nx = self.grid.shape
        options = ["TILED=YES", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"]
        ds = gdal.GetDriverByName("GTiff").Create(
            str(self.work / name), nx, ny, bands, gdal.GDT_Int32, options
        )
        if ds is None:
            raise OutputError(f"Cannot write temporary rasters in {self.work}.")
        ds.SetGeoTransform(gdal_geotransform(self.grid))
        if self.srs is not None:
            ds.SetSpatialRef(self.srs)
        return ds

    def tick(self) -> None:
        if self.cancel is not None and self.cancel():
            raise CancelledError("Change hotspots was cancelled; nothing was written.")
        self.done += 1
        if self.progress is not None:
            self.progress(min(self.done / self.steps, 0.99))

    def label_year(self, t: int, k: int) -> _Stats:
        """Label year t into band k+1 of the labels raster; the stats of its kept regions."""
        prev_row, prev = None, None
        kept: list[_Stats] = []
        next_id = 1
        # A fresh file a year: rewriting a compressed GeoTIFF's tiles only appends to it.
        self.local = self._raster(f"local-{k}.tif", 1)
        local_band = self.local.GetRasterBand(1)

        def close(stats: _Stats) -> np.ndarray:
            nonlocal next_id
            keep = stats.count >= self.min_pixels
            ids = np.zeros(len(keep), np.int64)
            ids[keep] = np.arange(next_id, next_id + keep.sum())
            next_id += int(keep.sum())
            kept.append(stats.take(keep))
            return ids

        for s, (r0, r1) in enumerate(self.strips):
            values = np.asarray(self.array[t, self.band, r0:r1, :], dtype=np.float32)
            with np.errstate(invalid="ignore"):
                mask = values >= self.threshold
            labels, n = region_labels.label_mask(mask, self.eight)
            count, total, top, area = region_labels.region_stats(
                labels, values, self.row_area[r0:r1], n
            )
            strip = _Stats(count[1:], total[1:], top[1:], area[1:])
            open_groups = np.unique(prev_row[prev_row >= 0]) if prev_row is not None else []
            K = len(open_groups)
            a, b = self._edge_pairs(prev_row, open_groups, labels[0]) if K else ([], [])
            group_of_node, G = region_labels.join_nodes(
                K + n, np.asarray(a, np.int64), np.asarray(b, np.int64)
            )
            has_strip = np.zeros(G, bool)
            has_strip[group_of_node[K:]] = True
            new_index = np.where(has_strip, np.cumsum(has_strip) - 1, -1)
            groups = np.full(n + 1, -1, np.int64)
            groups[1:] = new_index[group_of_node[K:]]
            current = _Stats.empty(int(has_strip.sum()))
            strip.add_into(current, groups[1:])
            if prev is not None:
                outcome = np.zeros(len(prev.count), np.int64)
                follows = np.full(len(prev.count), -1, np.int64)
                follows[open_groups] = new_index[group_of_node[:K]]
                going_on = follows >= 0
                prev.take(going_on).add_into(current, follows[going_on])
                outcome[going_on] = -(follows[going_on] + 1)
                outcome[~going_on] = close(prev.take(~going_on))
                np.save(self.work / f"outcome-{s - 1}.npy", outcome)
            np.save(self.work / f"groups-{s}.npy", groups)
            local_band.WriteArray(labels, 0, r0)
            prev_row, prev = groups[labels[-1]], current
            self.tick()
        np.save(self.work / f"outcome-{len(self.strips) - 1}.npy", close(prev))
        self._final_labels(k)
        self.local = None
        (self.work / f"local-{k}.tif").unlink()
        return _Stats.concat(kept)

    def _edge_pairs(self, prev_row, open_groups, first_row):
        """(open group node, strip label node) for pixels touching across the strip edge."""
        K = len(open_groups)
        shifts = (-1, 0, 1) if self.eight else (0,)
        w = len(first_row)
        a, b = [], []
        for dx in shifts:
            above = prev_row[max(0, -dx) : w - max(0, dx)]
            below = first_row[max(0, dx) : w - max(0, -dx)]
            touch = (above >= 0) & (below > 0)
            a.append(np.searchsorted(open_groups, above[touch]))
            b.append(K + below[touch].astype(np.int64) - 1)
        return np.concatenate(a), np.concatenate(b)

    def _final_labels(self, k: int) -> None:
        """Backward over the strips: each pixel's region id (0: none or too small) into band k+1."""
        band = self.labels.GetRasterBand(k + 1)
        local = self.local.GetRasterBand(1)
        final_next = None
        for s in reversed(range(len(self.strips))):
            r0, r1 = self.strips[s]
            outcome = np.load(self.work / f"outcome-{s}.npy")
            final = outcome.copy()
            going_on = outcome < 0
            if going_on.any():
                final[going_on] = final_next[-outcome[going_on] - 1]
            groups = np.load(self.work / f"groups-{s}.npy")
            lookup = np.zeros(len(groups), np.int32)
            lookup[1:] = final[groups[1:]]
            labels = local.ReadAsArray(0, r0, self.grid.shape[1], r1 - r0)
            band.WriteArray(lookup[labels], 0, r0)
            final_next = final
            self.tick()
        band.FlushCache()

    def merge_consecutive(self, years, per_year: list[_Stats]) -> np.ndarray:
        """Summary id (1..) of every region, regions of years y and y+1 sharing a pixel joined.

        Returns one array over the regions of all years, year by year (offsets by region count).
        """
        offsets = np.concatenate([[0], np.cumsum([len(s.count) for s in per_year])])
        a, b = [], []
        nx = self.grid.shape[1]
        for k in range(len(years) - 1):
            if years[k + 1] != years[k] + 1:
                continue
            first, second = self.labels.GetRasterBand(k + 1), self.labels.GetRasterBand(k + 2)
            for r0, r1 in self.strips:
                one = first.ReadAsArray(0, r0, nx, r1 - r0)
                two = second.ReadAsArray(0, r0, nx, r1 - r0)
                both = (one > 0) & (two > 0)
                pairs = np.unique((one[both].astype(np.int64) << 32) | two[both].astype(np.int64))
                a.append(offsets[k] + (pairs >> 32) - 1)
                b.append(offsets[k + 1] + (pairs & 0xFFFFFFFF) - 1)
                self.tick()
        a = np.concatenate(a) if a else np.zeros(0, np.int64)
        b = np.concatenate(b) if b else np.zeros(0, np.int64)
        group, _ = region_labels.join_nodes(int(offsets[-1]), a, b)
        return group + 1

    def write_polygons(self, path: Path, years, per_year, summary, score: str):
        """Polygonize each year's labels into the GeoPackage; the summary layer if merging."""
        gpkg = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
        if gpkg is None:
            raise OutputError(f"Cannot create the GeoPackage {path}.")
        layer = gpkg.CreateLayer(HOTSPOTS_LAYER, self.srs, ogr.wkbMultiPolygon)
        add_fields(layer, HOTSPOT_FIELDS)
        scratch = ogr.GetDriverByName("GPKG").CreateDataSource(str(self.work / "scratch.gpkg"))
        parts: dict[int, list] = {}
        features = 0
        offset = 0
        for k, (year, stats) in enumerate(zip(years, per_year, strict=True)):
            raw = scratch.CreateLayer(f"y{year}", self.srs, ogr.wkbPolygon)
            raw.CreateField(ogr.FieldDefn("region", ogr.OFTInteger64))
            band = self.labels.GetRasterBand(k + 1)
            options = ["8CONNECTED=8"] if self.eight else []
            raw.StartTransaction()
            gdal.Polygonize(band, band, raw, 0, options)
            raw.CommitTransaction()
            layer.StartTransaction()
            for region, geometry in polygons_by_region(raw):
                i = region - 1
                feature = ogr.Feature(layer.GetLayerDefn())
                feature.SetGeometry(geometry)
                values = {
                    "year": year,
                    "score": score,
                    "region": region,
                    "pixels": int(stats.count[i]),
                    "area_m2": float(stats.area[i]),
                    "max_z": float(stats.top[i]),
                    "mean_z": float(stats.total[i] / stats.count[i]),
                    "start_date": year_start(year),
                    "end_date": year_end(year),
                }
                if summary is not None:
                    values["summary"] = int(summary[offset + i])
                    parts.setdefault(values["summary"], []).append((year, i, stats, geometry))
                set_fields(feature, values)
                layer.CreateFeature(feature)
                features += 1
            layer.CommitTransaction()
            offset += len(stats.count)
            self.tick()
        regions = self._write_summary(gpkg, parts, score) if summary is not None else 0
        scratch = None
        gpkg = None
        return features, regions

    def _write_summary(self, gpkg, parts: dict[int, list], score: str) -> int:
        meter = AreaMeter(self.srs, self.grid)
        layer = gpkg.CreateLayer(REGIONS_LAYER, self.srs, ogr.wkbMultiPolygon)
        add_fields(layer, REGION_FIELDS)
        layer.StartTransaction()
        for summary_id in sorted(parts):
            members = parts[summary_id]
            if len(members) == 1:  # most regions last one year: nothing to join
                union = members[0][-1]
            else:
                union = ogr.Geometry(ogr.wkbMultiPolygon)
                for *_, geometry in members:
                    for g in range(geometry.GetGeometryCount()):
                        union.AddGeometry(geometry.GetGeometryRef(g))
                union = ogr.ForceToMultiPolygon(union.UnionCascaded())
            member_years = sorted({year for year, *_ in members})
            pixels = sum(int(stats.count[i]) for _, i, stats, _ in members)
            total = sum(float(stats.total[i]) for _, i, stats, _ in members)
            feature = ogr.Feature(layer.GetLayerDefn())
            feature.SetGeometry(union)
            values = {
                "summary": summary_id,
                "score": score,
                "first_year": member_years[0],
                "last_year": member_years[-1],
                "years": len(member_years),
                "pixel_years": pixels,
                "area_m2": (
                    float(members[0][2].area[members[0][1]])
                    if len(members) == 1
                    else meter.area_m2(union)
                ),
                "max_z": max(float(stats.top[i]) for _, i, stats, _ in members),
                "mean_z": total / pixels,
                "start_date": year_start(member_years[0]),
                "end_date": year_end(member_years[-1]),
            }
            set_fields(feature, values)
            layer.CreateFeature(feature)
        layer.CommitTransaction()
        return len(parts)
