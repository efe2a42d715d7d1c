"""Check the QGIS >= 3.38 score layers on a real QGIS: one layer per score, a band per year.

    QT_QPA_PLATFORM=offscreen python3 scripts/check_qgis340.py

Needs a QGIS of 3.38 or later with its Python bindings, numpy and zarr >= 3 (on Debian 13:
`apt-get install python3-qgis qgis-providers python3-zarr python3-numpy`); this machine's QGIS is
3.22, so it runs in a Debian 13 chroot (QGIS 3.40 LTR, GDAL 3.10). It writes a tiny scores
Zarr as the engine does (v2 for GDAL < 3.11), loads it through layers/score_layers.py and
checks the layer tree, the per-band temporal ranges, the band the temporal controller's frames
pick, and what QGIS's map renderer paints for different years. Prints each check; exits 1 if
any fails.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

YEARS = (2017, 2018, 2019)
BANDS = (
    "difference_alpha_earth_cosine_distance_robust_time_zscore",
    "loo_medoid_alpha_earth_cosine_distance_robust_time_zscore",
)
SHAPE = (20, 30)  # rows, columns
GSD = 0.001
WEST, NORTH = -105.3, 40.05
# (year index, rows, columns, z-score): a dark red event in 2018, a yellow one in 2019.
EVENTS = ((1, slice(2, 8), slice(3, 10), 9.0), (2, slice(12, 18), slice(18, 27), 4.0))
SCALE = 10  # rendered pixels per store pixel


def write_scores(path: Path):
    """scores(time, band, y, x) float32, NaN fill, coordinates and CRS as the engine writes them,
    in the Zarr format the engine picks for this GDAL."""
    import numpy as np
    import zarr
    from osgeo import osr

    ny, nx = SHAPE
    scores = np.zeros((len(YEARS), len(BANDS), ny, nx), np.float32)
    for t, rows, cols, value in EVENTS:
        scores[t, :, rows, cols] = value
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    from embedding_change.layers import sources

    zarr_format = sources.zarr_format_for_layers()
    group = zarr.open_group(str(path), mode="w-", zarr_format=zarr_format)
    group.attrs["proj:code"] = "EPSG:4326"

    def array(name, values, dims, **kwargs):
        if zarr_format == 3:
            kwargs["dimension_names"] = dims
        out = group.create_array(name, shape=values.shape, dtype=values.dtype, **kwargs)
        if zarr_format == 2:
            out.attrs["_ARRAY_DIMENSIONS"] = list(dims)
        out[...] = values
        return out

    data = array(
        "scores",
        scores,
        ("time", "band", "y", "x"),
        chunks=(1, 1, 256, 256),
        fill_value=np.nan,
        compressors=None,
    )
    data.attrs["_CRS"] = {"wkt": srs.ExportToWkt()}
    array("time", np.array(YEARS, np.int32), ("time",))
    array("band", np.arange(len(BANDS), dtype=np.int32), ("band",))
    array("x", WEST + GSD * (np.arange(nx) + 0.5), ("x",))
    array("y", NORTH - GSD * (np.arange(ny) + 0.5), ("y",))
    return scores


def plugin_importable() -> None:
    """The checkout imports as `embedding_change` (as QGIS's plugin folder names it)."""
    checkout = Path(__file__).resolve().parents[1]
    folder = Path(tempfile.mkdtemp(prefix="plugin-"))
    (folder / "embedding_change").symlink_to(checkout)
    sys.path.insert(0, str(folder))


def rendered_rgba(layer, time_range):
    """What QGIS's map renderer paints for the layer in that time range: (rows, cols, rgba)."""
    import numpy as np
    from qgis.core import QgsMapRendererSequentialJob, QgsMapSettings
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor, QImage

    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setExtent(layer.extent())
    settings.setOutputSize(QSize(SHAPE[1] * SCALE, SHAPE[0] * SCALE))
    settings.setBackgroundColor(QColor(0, 0, 0, 0))
    settings.setIsTemporal(True)
    settings.setTemporalRange(time_range)
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage().convertToFormat(QImage.Format_RGBA8888)
    height, width = image.height(), image.width()
    buffer = image.constBits()
    buffer.setsize(image.sizeInBytes())
    rows = np.frombuffer(bytes(buffer), np.uint8).reshape(height, image.bytesPerLine())
    return rows[:, : width * 4].reshape(height, width, 4).copy()


def pixel(rgba, rows: slice, cols: slice):
    """The painted colour at the centre of a block of store pixels."""
    row = (rows.start + rows.stop) * SCALE // 2
    col = (cols.start + cols.stop) * SCALE // 2
    return tuple(int(v) for v in rgba[row, col])


def main() -> int:
    from qgis.core import (
        Qgis,
        QgsApplication,
        QgsInterval,
        QgsPointXY,
        QgsProject,
        QgsTemporalNavigationObject,
        QgsUnitTypes,
    )

    QgsApplication.setPrefixPath("/usr", True)
    app = QgsApplication([], False)
    app.initQgis()
    plugin_importable()
    from embedding_change.layers import score_layers, sources
    from embedding_change.layers.score_slice import band_rank, score_title
    from embedding_change.layers.styles import RAMPS
    from embedding_change.layers.temporal import PER_BAND_TEMPORAL, years_range

    failures = []

    def check(what: str, ok: bool, found) -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {what}: {found}")
        if not ok:
            failures.append(what)

    from osgeo import gdal

    print(f"QGIS {Qgis.QGIS_VERSION}, GDAL {gdal.__version__}, Python {sys.version.split()[0]}")
    if not PER_BAND_TEMPORAL:
        print("This QGIS has no per-band temporal ranges (3.38+): nothing to check.")
        return 1
    project = QgsProject.instance()
    try:
        with tempfile.TemporaryDirectory() as folder:
            store = Path(folder) / "scores.zarr"
            scores = write_scores(store)
            print(f"     Zarr v{sources.zarr_format_for_layers()} store")
            layers = score_layers.load_score_layers(store, project, labels=(YEARS, BANDS))

            check("one layer per score", len(layers) == len(BANDS), [lyr.name() for lyr in layers])
            (run_group,) = project.layerTreeRoot().findGroups()
            groups = run_group.findGroups()
            titles = [score_title(b) for b in sorted(BANDS, key=lambda b: band_rank(BANDS, b))]
            check("a group per score", [g.name() for g in groups] == titles, len(groups))
            check(
                "each group holds its score's one layer",
                [
                    [n.layer().customProperty("embedding_change/band") for n in g.findLayers()]
                    for g in groups
                ]
                == [[b] for b in sorted(BANDS, key=lambda b: band_rank(BANDS, b))],
                [len(g.findLayers()) for g in groups],
            )
            layer = layers[1]
            check(
                "valid, EPSG:4326",
                layer.isValid() and layer.crs().authid() == "EPSG:4326",
                layer.crs().authid(),
            )
            extent = layer.extent()
            ny, nx = SHAPE
            box = (WEST, NORTH - ny * GSD, WEST + nx * GSD, NORTH)
            corners = (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
            check(
                "extent is the store's box",
                max(abs(a - b) for a, b in zip(corners, box, strict=True)) < 1e-9,
                tuple(round(c, 6) for c in corners),
            )
            check("a band per year", layer.bandCount() == len(YEARS), layer.bandCount())
            provider = layer.dataProvider()
            names = [layer.bandName(i + 1) for i in range(len(YEARS))]
            check(
                "band names say the years",
                all(str(y) in n for y, n in zip(YEARS, names, strict=True)),
                names,
            )
            for t, rows, cols, _value in EVENTS:
                read = provider.sample(
                    QgsPointXY(WEST + GSD * (cols.start + 0.5), NORTH - GSD * (rows.start + 0.5)),
                    t + 1,
                )[0]
                check(
                    f"band {t + 1} reads year index {t}",
                    read == scores[t, 1, rows.start, cols.start],
                    read,
                )
            temporal = layer.temporalProperties()
            check("temporal properties active", temporal.isActive(), temporal.isActive())
            check(
                "mode FixedRangePerBand",
                temporal.mode() == Qgis.RasterTemporalMode.FixedRangePerBand,
                temporal.mode(),
            )
            ranges = temporal.fixedRangePerBand()
            check(
                "band i has year i's range",
                {b: (r.begin().date().year(), r.end().date().year()) for b, r in ranges.items()}
                == {i + 1: (y, y + 1) for i, y in enumerate(YEARS)},
                {
                    b: (
                        r.begin().toString("yyyy-MM-dd"),
                        r.end().toString("yyyy-MM-dd"),
                        r.includeBeginning(),
                        r.includeEnd(),
                    )
                    for b, r in ranges.items()
                },
            )

            # The temporal controller as animate_years sets it up in the desktop: one year a frame.
            navigation = QgsTemporalNavigationObject()
            settings = project.timeSettings()
            navigation.setNavigationMode(QgsTemporalNavigationObject.Animated)
            navigation.setTemporalExtents(settings.temporalRange())
            navigation.setFrameDuration(QgsInterval(1, QgsUnitTypes.TemporalYears))
            frames = [
                navigation.dateTimeRangeForFrameNumber(i)
                for i in range(navigation.totalFrameCount())
            ]
            check("one frame per year", len(frames) == len(YEARS), len(frames))
            picked = [temporal.bandForTemporalRange(layer, frame) for frame in frames]
            check("each frame picks its year's band", picked == [1, 2, 3], picked)
            picked = [temporal.bandForTemporalRange(layer, years_range(y, y)) for y in YEARS]
            check("years_range(y, y) picks year y's band", picked == [1, 2, 3], picked)

            paint = {
                y: rendered_rgba(layer, frame) for y, frame in zip(YEARS, frames, strict=False)
            }
            event18, event19 = EVENTS[0][1:3], EVENTS[1][1:3]
            seen = {y: (pixel(paint[y], *event18), pixel(paint[y], *event19)) for y in YEARS}
            print("     rendered (r, g, b, a) at the 2018 event, the 2019 event:", seen)
            dark_red = (*RAMPS["loo_medoid"][-1], 255)  # layers[1]: the LOO medoid z-score
            check(
                "2017 frame: nothing painted",
                seen[2017] == ((0, 0, 0, 0), (0, 0, 0, 0)),
                seen[2017],
            )
            check(
                "2018 frame: the 2018 event dark red, not the 2019 one",
                seen[2018][0] == dark_red and seen[2018][1][3] == 0,
                seen[2018],
            )
            check(
                "2019 frame: the 2019 event painted, not the 2018 one",
                seen[2019][0][3] == 0 and seen[2019][1][3] > 0 and seen[2019][1] != seen[2018][0],
                seen[2019],
            )
            del layers, layer, provider, temporal
            project.clear()
    finally:
        project.clear()  # layers must go before exitQgis, or Python crashes
        app.exitQgis()
    print("all checks passed" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
