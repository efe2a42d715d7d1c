"""How long QGIS takes to draw a large score layer, with and without the multiscale pyramid.

    source scripts/setup.sh
    python scripts/time_pyramid_render.py --size 16384 --runs 3

Writes a scores Zarr v2 of one year and one band (size x size float32, 256 x 256 chunks, what
GDAL 3.6 reads), builds its pyramid (max), then renders, offscreen with
QgsMapRendererSequentialJob at 1200 x 800 pixels, the full extent and a 1/16 zoom-in, once from
the plain Zarr slice and once through the pyramid's VRT (its overviews are the coarser levels).
Each run opens a fresh layer, so GDAL's block cache starts empty (the OS file cache is warm).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_large_scores(path: Path, size: int) -> None:
    """Smooth score fields plus noise and a few hot spots, float32, chunks (1, 1, 256, 256)."""
    import dask.array as da
    import numpy as np
    import xarray as xr

    gsd = 8.983111749910169e-05
    rows = da.arange(size, chunks=256, dtype=np.float32)[:, None]
    cols = da.arange(size, chunks=256, dtype=np.float32)[None, :]
    noise = da.random.default_rng(0).standard_normal((size, size), chunks=256, dtype=np.float32)
    field = 2.0 * da.sin(rows / 900.0) * da.cos(cols / 700.0) + 0.5 * noise
    scores = field.astype(np.float32)[None, None]
    x = -105.3 + gsd * (np.arange(size) + 0.5)
    y = 40.3 - gsd * (np.arange(size) + 0.5)
    ds = xr.Dataset(
        {"scores": (("time", "band", "y", "x"), scores, {"_CRS": {"url": EPSG_4326_URL}})},
        coords={
            "time": ("time", np.array([2024], dtype=np.int32)),
            "band": ("band", np.array([BAND])),
            "y": ("y", y),
            "x": ("x", x),
        },
        attrs={"proj:code": "EPSG:4326"},
    )
    encoding = {"scores": {"chunks": (1, 1, 256, 256), "_FillValue": np.nan}}
    ds.to_zarr(path, zarr_format=2, encoding=encoding, consolidated=True, mode="w-")


EPSG_4326_URL = "http://www.opengis.net/def/crs/EPSG/0/4326"
BAND = "loo_medoid_alpha_earth_cosine_distance_robust_time_zscore"


def render_seconds(uri: str, zoom: float, size=(1200, 800)) -> float:
    """Seconds to render a fresh layer of `uri`, its extent shrunk `zoom` times about the centre."""
    from qgis.core import QgsMapRendererSequentialJob, QgsMapSettings, QgsRasterLayer
    from qgis.PyQt.QtCore import QSize

    from embedding_change.layers import score_layers, score_slice

    layer = QgsRasterLayer(uri, "scores", "gdal")
    if not layer.isValid():
        raise SystemExit(f"GDAL cannot open {uri}")
    score = score_slice.ScoreSlice(uri, ("zscore",), "zscore", (2024,), 2024, 8.0)
    score_layers.style_score_layer(layer, score)
    extent = layer.extent()
    extent.scale(1.0 / zoom)
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setOutputSize(QSize(*size))
    settings.setExtent(extent)
    job = QgsMapRendererSequentialJob(settings)
    started = time.perf_counter()
    job.start()
    job.waitForFinished()
    seconds = time.perf_counter() - started
    del job, layer
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384, help="pixels per side (default 16384)")
    parser.add_argument("--runs", type=int, default=3, help="renders per case (median reported)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the stores go")
    parser.add_argument("--keep", action="store_true", help="keep the stores afterwards")
    args = parser.parse_args()

    sys.path.append("/usr/share/qgis/python/plugins")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qgis.core import QgsApplication

    from embedding_change.core import build_multiscales
    from embedding_change.layers import pyramid as pyramid_layers

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pyramid-render-"))
    workdir.mkdir(parents=True, exist_ok=True)
    scores, pyramid = workdir / "scores.zarr", workdir / "pyramid.zarr"
    app = QgsApplication([], False)
    QgsApplication.setPrefixPath("/usr", True)
    app.initQgis()
    try:
        started = time.perf_counter()
        write_large_scores(scores, args.size)
        print(
            f"scores: {args.size} x {args.size} float32 written in "
            f"{time.perf_counter() - started:.1f} s"
        )
        started = time.perf_counter()
        tree = build_multiscales(scores, pyramid, resampling="max", zarr_format=2)
        levels = len(tree.children)
        tree.close()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(
            f"pyramid: {levels} levels built in {time.perf_counter() - started:.1f} s "
            f"(peak memory of this process so far: {peak:.2f} GiB)"
        )
        vrt = pyramid_layers.write_slice_vrts(pyramid)[(0, 0)]
        plain = f'ZARR:"{scores}":/scores:0:0'
        print(f"{'view':<22}{'plain Zarr (s)':>16}{'pyramid VRT (s)':>17}{'speed-up':>10}")
        for label, zoom in (("full extent", 1.0), ("1/16 of the extent", 4.0)):
            without = statistics.median(render_seconds(plain, zoom) for _ in range(args.runs))
            with_pyramid = statistics.median(render_seconds(vrt, zoom) for _ in range(args.runs))
            print(
                f"{label:<22}{without:>16.3f}{with_pyramid:>17.3f}{without / with_pyramid:>9.1f}x"
            )
    finally:
        app.exitQgis()
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
