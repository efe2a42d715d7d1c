"""Results while they arrive: when a viewer gets the first tile and what reporting costs.

    python benchmarks/bench_live.py [--size 1024] [--store /tmp/aef1024.zarr] [--repeat 3]

On one generated AEF-like store, the whole store as the window, prints for four ways of running
compute_change_scores (the best of --repeat runs each): as Processing runs it (no reports); with
a tile report (on_tile) in dask's order; with reports and centre_first, as the desktop's live
layers run it; and the same with the callback reading each tile back from the partial store (a
pessimistic stand-in for the map reading it). For each: seconds to the first tile written, to the
tile holding the window's centre, to completion, and completion time over Processing's way.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import conftest  # noqa: E402,F401  (makes `embedding_change` importable from the checkout)
import numpy as np  # noqa: E402
import zarr  # noqa: E402

from embedding_change.core import compute_change_scores, kernels  # noqa: E402
from embedding_change.core.output import OUTPUT_CHUNK  # noqa: E402
from embedding_change.core.synthetic import write_aef_like_store  # noqa: E402

# (name, report tiles, centre first, read each tile back from the partial store)
WAYS = (
    ("Processing's way (no reports)", False, False, False),
    ("reports, dask's order", True, False, False),
    ("reports, centre first (live)", True, True, False),
    ("centre first + reading each tile", True, True, True),
)


def timed_run(store: Path, output: Path, report: bool, centre: bool, read_back: bool) -> dict:
    """One run; seconds to the first tile, to the tile holding the window's centre, to the end."""
    ny, nx = zarr.open_group(str(store), mode="r")["embeddings"].shape[2:]
    times = {}
    started = time.perf_counter()

    def on_tile(url, y0, x0, h, w):
        if read_back:
            zarr.open_group(url, mode="r")["scores"][:, :, y0 : y0 + h, x0 : x0 + w]
        now = time.perf_counter() - started
        times.setdefault("first", now)
        if y0 <= ny // 2 < y0 + h and x0 <= nx // 2 < x0 + w:
            times["centre"] = now

    compute_change_scores(
        store, output, on_tile=on_tile if report else None, centre_first=centre
    ).close()
    times["end"] = time.perf_counter() - started
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--store", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = args.store or folder / "aef.zarr"
        if not store.exists():
            print(f"generating a {args.size}² store at {store} …", flush=True)
            write_aef_like_store(store, shape=(args.size, args.size), seed=3)
        kernels.warm_up(np.dtype("int8"), 9)
        ny, nx = zarr.open_group(str(store), mode="r")["embeddings"].shape[2:]
        tiles = -(-ny // OUTPUT_CHUNK) * -(-nx // OUTPUT_CHUNK)
        print(f"store {store}: {nx} x {ny} px, {tiles} output tiles\n")
        best = {}
        for i in range(args.repeat):  # interleaved, so a busy moment hits every way alike
            for name, report, centre, read_back in WAYS:
                output = folder / f"out-{i}-{len(best)}-{time.monotonic_ns()}.zarr"
                times = timed_run(store, output, report, centre, read_back)
                if name not in best or times["end"] < best[name]["end"]:
                    best[name] = times
        plain = best[WAYS[0][0]]["end"]
        print(f"{'':34} {'first tile':>10} {'centre tile':>11} {'complete':>9} {'ratio':>6}")
        for name, *_ in WAYS:
            t = best[name]
            first = f"{t['first']:.2f} s" if "first" in t else "-"
            centre = f"{t['centre']:.2f} s" if "centre" in t else "-"
            print(
                f"{name:34} {first:>10} {centre:>11} {t['end']:>7.2f} s {t['end'] / plain:>5.2f}x"
            )


if __name__ == "__main__":
    main()
