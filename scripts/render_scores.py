"""Render one year of a scores Zarr to PNG with QGIS's own map renderer (the README's picture).

    python scripts/render_scores.py demo-output/scores.zarr --year 2021 --out docs/scores-2021.png

The layers load as in QGIS (layers/score_layers.py: groups, colour ramp, one-year ranges);
the map is rendered for that year's frame, so the temporal filtering picks the layers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BACKGROUND = "#3b3b3b"  # dark grey: transparent (ordinary) pixels read as "nothing happened"


def render_year(store, year: int, out, *, width: int = 1000, band: str | None = None, project=None):
    """Load the store's score layers, render `year` (only bands starting with `band`) to `out`."""
    import zarr
    from qgis.core import QgsMapRendererParallelJob, QgsMapSettings, QgsProject
    from qgis.PyQt.QtCore import QSize
    from qgis.PyQt.QtGui import QColor

    from embedding_change.layers import score_layers, score_slice, temporal

    project = project or QgsProject.instance()
    layers = score_layers.load_score_layers(store, project)
    # From the store, not the layers: on QGIS >= 3.38 a layer holds every year as a band.
    years = [int(t) for t in zarr.open_group(str(store), mode="r")["time"][:]]
    if year not in years:
        raise SystemExit(f"{store} has no year {year}; it has {years[0]}..{years[-1]}.")
    labels = [layer.customProperty("embedding_change/band") for layer in layers]
    # No band asked for: the score the map shows first (each score has its own ramp).
    band = band or score_slice.default_band(labels)
    chosen = [layer for layer, label in zip(layers, labels, strict=True) if label.startswith(band)]
    if not chosen:
        raise SystemExit(f"No score in {store} starts with {band!r}.")
    extent = chosen[0].extent()
    height = max(1, round(width * extent.height() / extent.width()))

    settings = QgsMapSettings()
    settings.setLayers(chosen)  # every year: the frame's range shows only `year`
    settings.setDestinationCrs(chosen[0].crs())
    settings.setExtent(extent)
    settings.setOutputSize(QSize(width, height))
    settings.setBackgroundColor(QColor(BACKGROUND))
    settings.setIsTemporal(True)
    settings.setTemporalRange(temporal.years_range(year, year))

    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    if not image.save(str(out), "PNG"):
        raise SystemExit(f"Could not write {out}.")
    return Path(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", help="scores Zarr written by Change scores")
    parser.add_argument("--year", type=int, required=True)
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--width", type=int, default=1000, help="image width in pixels")
    parser.add_argument(
        "--band", default="loo_medoid", help="render the scores whose name starts with this"
    )
    args = parser.parse_args(argv)

    from qgis.core import QgsApplication, QgsProject

    QgsApplication.setPrefixPath("/usr", True)
    app = QgsApplication([], False)
    app.initQgis()
    try:
        out = render_year(args.store, args.year, args.out, width=args.width, band=args.band)
        print(out)
    finally:
        QgsProject.instance().clear()  # layers must go before exitQgis, or Python crashes
        app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
