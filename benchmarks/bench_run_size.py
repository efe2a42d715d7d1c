"""How close the size guard's estimate (core/run_size.py) comes to what runs really take.

    python benchmarks/bench_run_size.py [--size 1024] [--store /tmp/aef1024.zarr]

In one process, on a generated AEF-like store (9 years, 64 bands):
- from disk, windows of a quarter, half and all of the store: the estimate's pixels, bytes
  and seconds next to the run's bytes of whole chunks read and wall seconds;
- through the loopback object server (benchmarks/object_server.py) on a 100 Mbit link with
  30 ms latency: a first window (no rate measured yet: the estimate counts pixels only), then a
  disjoint window of the same size (the estimate uses the rate the first run reached).
The figures to read are the ratios estimate / actual: the guard only needs the right order of
magnitude to decide "too big"; the time is what the log shows the analyst.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import conftest  # noqa: E402,F401  (makes `embedding_change` importable from the checkout)
import object_server  # noqa: E402

from embedding_change.core import compute_change_scores  # noqa: E402
from embedding_change.core.run_size import estimate_run, measured_rate  # noqa: E402
from embedding_change.core.store import open_embedding_store  # noqa: E402
from embedding_change.core.synthetic import write_aef_like_store  # noqa: E402
from embedding_change.core.window import PixelWindow  # noqa: E402


def box_of(grid, window: PixelWindow):
    a, _, c, _, e, f = grid.transform
    return (c + a * window.col0, f + e * window.row1, c + a * window.col1, f + e * window.row0)


def timed_run(url, output, window, grid, options=None):
    started = time.perf_counter()
    compute_change_scores(
        url, output, bbox=box_of(grid, window), storage_options=options, max_pixels=None
    ).close()
    return time.perf_counter() - started


def row(label, estimate, seconds):
    print(
        f"{label:<34} {estimate.pixels / 1e6:6.2f} Mpx {estimate.nbytes / 1e6:8.0f} MB "
        f"est {estimate.seconds:6.1f} s  actual {seconds:6.1f} s  "
        f"est/actual {estimate.seconds / seconds:5.2f}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--store", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-run-size-"))
    store = args.store or work / "served" / "aef.zarr"
    if not store.exists():
        store.parent.mkdir(parents=True, exist_ok=True)
        print(f"generating {args.size} x {args.size} store at {store} ...")
        write_aef_like_store(store, shape=(args.size, args.size), seed=1)
    source = open_embedding_store(store)
    grid, n = source.grid, args.size
    n_years = len(source.times)
    # Warm the kernel (numba's compile is not what the estimate is about).
    timed_run(store, work / "warm.zarr", PixelWindow(0, 256, 0, 256), grid)
    print("from disk")
    for k, side in enumerate((n // 4, n // 2, n)):
        window = PixelWindow(0, side, 0, side)
        estimate = estimate_run(source, window, n_years)
        row(f"  {side} x {side}", estimate, timed_run(store, work / f"d{k}.zarr", window, grid))

    with object_server.start(store.parent, latency_s=0.03, link_bps=100e6) as server:
        url = server.url(store.name)
        options = server.storage_options
        remote = open_embedding_store(url, storage_options=options)
        half = n // 2
        print("object server, 100 Mbit, 30 ms")
        first = PixelWindow(0, half, 0, half)
        estimate = estimate_run(remote, first, n_years)
        seconds = timed_run(url, work / "r0.zarr", first, grid, options)
        row(f"  {half} x {half}, no rate yet", estimate, seconds)
        print(f"  rate measured: {measured_rate(url) / 1e6:.1f} MB/s (link 12.5 MB/s)")
        second = PixelWindow(half, n, half, n)
        estimate = estimate_run(remote, second, n_years)
        seconds = timed_run(url, work / "r1.zarr", second, grid, options)
        row(f"  {half} x {half}, disjoint, rate known", estimate, seconds)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
