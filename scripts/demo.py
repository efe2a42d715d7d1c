"""The main job, end to end: change scores for a window of an embedding store, through qgis_process.

Without STORE it generates an AEF-like store (planted one-year events and lasting changes) in
demo-output/ and scores a window of it; with STORE (and BBOX) it scores that store, e.g. the AEF
mosaic. It then prints where the output is and the strongest one-year anomalies per year.

    STORE=s3://us-west-2.opendata.source.coop/tge-labs/aef-mosaic/ \
    BBOX=-105.30,39.98,-105.22,40.06 bash scripts/demo.sh

BBOX is xmin,ymin,xmax,ymax in EPSG:4326; OUTPUT names the scores folder; STORAGE_OPTIONS is JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

from embedding_change.core.store import open_embedding_store
from embedding_change.core.synthetic import write_aef_like_store

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo-output"
QGIS_PROCESS = "/usr/bin/qgis_process.bin"  # /usr/bin/qgis_process is broken on Debian 12
LOO_ZSCORE = "loo_medoid_alpha_earth_cosine_distance_robust_time_zscore"
DIFFERENCE_ZSCORE = "difference_alpha_earth_cosine_distance_robust_time_zscore"


def main() -> int:
    DEMO.mkdir(exist_ok=True)
    store = os.environ.get("STORE") or str(generated_store())
    options = os.environ.get("STORAGE_OPTIONS", "")
    bbox = os.environ.get("BBOX") or default_bbox(store, options)
    output = Path(
        os.environ.get("OUTPUT") or DEMO / f"scores-{time.strftime('%Y%m%d-%H%M%S')}.zarr"
    )
    xmin, ymin, xmax, ymax = (float(v) for v in bbox.split(","))
    print(f"store:  {store}\nextent: {xmin},{ymin},{xmax},{ymax} (EPSG:4326)", flush=True)
    run_change_scores(store, (xmin, ymin, xmax, ymax), output, options)
    summarise(output)
    return 0


def generated_store() -> Path:
    """An AEF-like store of 1024 x 1024 px over Boulder, made once and reused."""
    path = DEMO / "aef-like.zarr"
    if (path / "zarr.json").exists() and not (path / "README.md").exists():
        shutil.rmtree(path)  # made by an older version, before stores took the mosaic's layout
    if not (path / "zarr.json").exists():
        print("generating an AEF-like store (1024 x 1024 px, 9 years, 64 bands)...", flush=True)
        write_aef_like_store(path, shape=(1024, 1024), seed=42)
    return path


def default_bbox(store: str, options: str) -> str:
    """A window across chunk edges in the middle of the store (about 600 x 600 px)."""
    grid = open_embedding_store(store, storage_options=json.loads(options or "{}")).grid
    xmin, ymin, xmax, ymax = grid.bbox
    width, height = xmax - xmin, ymax - ymin
    return ",".join(
        f"{v:.9f}"
        for v in (xmin + 0.2 * width, ymin + 0.2 * height, xmin + 0.8 * width, ymin + 0.8 * height)
    )


def run_change_scores(store: str, bbox, output: Path, options: str) -> None:
    """qgis_process run embeddingchange:changescores, in an isolated QGIS profile."""
    profile = tempfile.mkdtemp(prefix="embedding-change-profile-")
    env = {**os.environ, "QGIS_CUSTOM_CONFIG_PATH": profile, "QT_QPA_PLATFORM": "offscreen"}
    subprocess.run(
        [QGIS_PROCESS, "plugins", "enable", "embedding_change"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    xmin, ymin, xmax, ymax = bbox
    command = [
        QGIS_PROCESS,
        "run",
        "embeddingchange:changescores",
        "--",
        f"STORE={store}",
        f"EXTENT={xmin},{xmax},{ymin},{ymax} [EPSG:4326]",
        f"OUTPUT={output}",
    ]
    if options:
        command.append(f"STORAGE_OPTIONS={options}")
    print("running: " + " ".join(command), flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, env=env)
    if done.returncode != 0:
        sys.exit(f"qgis_process failed (exit {done.returncode}); its messages are above.")
    print(f"qgis_process finished in {time.perf_counter() - started:.1f} s", flush=True)


def summarise(output: Path) -> None:
    """Where the output is, what stands out each year, and a generated store's planted events."""
    ds = xr.open_zarr(output)
    print(f"\noutput: {output}")
    print(f"        {dict(ds.sizes)}; bands: {', '.join(map(str, ds.band.values))}")
    if LOO_ZSCORE not in ds.band.values or DIFFERENCE_ZSCORE not in ds.band.values:
        return
    loo = ds.scores.sel(band=LOO_ZSCORE).load()
    difference = ds.scores.sel(band=DIFFERENCE_ZSCORE).load()
    print("\nyear   share of pixels with LOO-medoid z > 3.5")
    for year in ds.time.values:
        z = loo.sel(time=year).values
        print(f"{int(year)}   {np.nanmean(z > 3.5):6.1%}")
    source = ds.attrs.get("embedding_change:source", "")
    changes = planted_changes(source)
    if changes:
        print_planted(loo, difference, ds.attrs["embedding_change:window"], changes)


def planted_changes(source: str) -> list[dict]:
    try:
        return open_embedding_store(source).attrs.get("synthetic:changes", [])
    except Exception:  # a remote or private store: nothing planted to compare with
        return []


def print_planted(loo, difference, window: dict, changes: list[dict]) -> None:
    """Median z-scores inside each planted change, in its year and in the other years.

    One-year events stand out in the LOO-medoid score; lasting changes in the difference.
    """
    print(
        "\nmedian z inside   year   LOO-medoid: this year / others   difference: this year / others"
    )
    for change in changes:
        if change["kind"] == "no_data":
            continue
        rows = slice(change["rows"][0] - window["row0"], change["rows"][1] - window["row0"])
        cols = slice(change["cols"][0] - window["col0"], change["cols"][1] - window["col0"])
        if (
            rows.start < 0
            or cols.start < 0
            or rows.stop > loo.sizes["y"]
            or cols.stop > loo.sizes["x"]
        ):
            continue
        medians = []
        for score in (loo, difference):
            inside = score.isel(y=rows, x=cols)
            medians.append(float(inside.sel(time=change["year"]).median()))
            medians.append(float(inside.drop_sel(time=change["year"]).median()))
        a, b, c, d = medians
        print(
            f"{change['kind']:<18}  {change['year']}   {a:14.1f} / {b:<14.1f}   {c:14.1f} / {d:.1f}"
        )


if __name__ == "__main__":
    sys.exit(main())
