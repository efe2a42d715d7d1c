"""Speed and memory of the scoring engine on one generated AEF-like store, in one run.

    python benchmarks/bench_scores.py [--size 2048] [--store /tmp/aef2048.zarr]

Prints, next to the targets of issue 3:
- the numba kernel's throughput on 256 x 256 blocks of the store (9 years x 64 bands, both
  scores, z-scores on), from 1 thread and from 2 threads (the way dask threads call it);
- a straightforward vectorised numpy version's throughput on the same block, and the ratio;
- compute_change_scores' throughput on a size/2 window from the store on disk and from the
  loopback S3 server (benchmarks/object_server.py, no latency or bandwidth cap: the S3 path's
  own cost), with the process CPU seconds per Mpx (steadier on a shared machine), and from
  disk with the kernel replaced by a stand-in: what the pipeline itself costs;
- the same window from disk in the mosaic's sharded layout (the store) and from a copy of the
  same values with every chunk an object of its own (layout="chunked"), and their ratio;
- peak RSS of a fresh process scoring the size/2 window and the size window (4x the area),
  and the peak above that process's RSS after its imports, so imports don't hide the growth.

The store is generated once (a few minutes for 2048 x 2048); --store keeps it for later runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import conftest  # noqa: E402,F401  (makes `embedding_change` importable from the checkout)
import object_server  # noqa: E402

from embedding_change.core import compute_change_scores, kernels  # noqa: E402
from embedding_change.core.store import open_embedding_store  # noqa: E402
from embedding_change.core.synthetic import write_aef_like_store  # noqa: E402

BLOCK = 256
NODATA = -128


def numpy_change_scores(block: np.ndarray, nodata: int = NODATA) -> np.ndarray:
    """Both scores under alpha_earth_cosine, z-scored: DATA.md with numpy broadcasting, no loops."""
    T = block.shape[0]
    q = block.reshape(T, block.shape[1], -1).astype(np.float32)
    vectors = np.sign(q) * (q / 127.5) ** 2
    valid = block[:, 0].reshape(T, -1) != nodata
    norms = np.sqrt(np.einsum("tbn,tbn->tn", vectors, vectors))
    dist = 1.0 - np.einsum("ibn,jbn->ijn", vectors, vectors) / (norms[:, None] * norms[None])
    dist = np.where(valid[:, None] & valid[None], dist, np.nan)
    years = np.arange(T)[:, None]
    last_valid = np.maximum.accumulate(np.where(valid, years, -1), axis=0)
    previous = np.concatenate([np.full((1, valid.shape[1]), -1), last_valid[:-1]])
    to_previous = np.take_along_axis(dist, np.maximum(previous, 0)[:, None], axis=1)[:, 0]
    difference = np.where(valid & (previous >= 0), to_previous, np.nan)
    # Leave-one-out medoid: sum over E_-k of d(e_i, e_j) = R_i - d(e_i, e_k).
    row_sums = np.nansum(dist, axis=1)
    totals = row_sums[None, :, :] - np.nan_to_num(np.swapaxes(dist, 0, 1))  # [k, i, n]
    totals = np.where(valid[None] & (years != np.arange(T)[None, :])[:, :, None], totals, np.inf)
    medoid = np.argmin(totals, axis=1)
    loo = np.take_along_axis(dist, medoid[:, None], axis=1)[:, 0]
    loo = np.where(valid & (valid.sum(0) >= 3), loo, np.nan)
    scores = np.stack([difference, loo], axis=1)  # (T, 2, n)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(scores, axis=0)
            mad = np.nanmedian(np.abs(scores - median), axis=0)
        enough = (np.isfinite(scores).sum(0) >= 3) & (mad > 0)
        z = np.where(enough, (scores - median) / (1.4826 * mad), np.nan)
    return z.reshape(T, 2, *block.shape[2:]).astype(np.float32)


def best_time(run, repeats=10):
    """The fastest of `repeats` runs: on a shared machine the neighbours only ever add time."""
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def kernel_figures(store_path):
    store = open_embedding_store(str(store_path))
    blocks = [np.asarray(store.array[:, :, :BLOCK, x : x + BLOCK]) for x in (0, BLOCK)]
    options = {"signed_square": True, "nodata": NODATA, "robust_zscore": True}
    kernels.change_scores(blocks[0][:, :, :4, :4], **options)  # compile / load the cache
    pixels = BLOCK * BLOCK
    one = pixels / best_time(lambda: kernels.change_scores(blocks[0], **options)) / 1e6
    with ThreadPoolExecutor(2) as pool:

        def both():
            list(pool.map(lambda b: kernels.change_scores(b, **options), blocks))

        two = 2 * pixels / best_time(both) / 1e6
    part = blocks[0][:, :, :64]  # a quarter block keeps numpy's temporaries small
    numpy_rate = part.shape[2] * BLOCK / best_time(lambda: numpy_change_scores(part)) / 1e6
    return one, two, numpy_rate


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pipeline_rate(store, workdir, name, bbox, storage_options=None, repeats=2):
    """Best of `repeats` runs: (Mpx/s of wall time, process CPU seconds per Mpx)."""
    best = (0.0, np.inf)
    for i in range(repeats):
        output = Path(workdir) / f"{name}_{i}.zarr"
        start, cpu = time.perf_counter(), cpu_seconds()
        result = compute_change_scores(  # no chunk cache: each run reads the store itself
            store, output, bbox=bbox, storage_options=storage_options, cache=False
        )
        elapsed, used = time.perf_counter() - start, cpu_seconds() - cpu
        mpx = result.sizes["y"] * result.sizes["x"] / 1e6
        best = (max(best[0], mpx / elapsed), min(best[1], used / mpx))
        shutil.rmtree(output)
    return best


def layouts_rates(stores, workdir, bbox, repeats=3):
    """pipeline_rate of each store, best of `repeats` rounds of one run of each."""
    best = [(0.0, np.inf)] * len(stores)
    for _ in range(repeats):
        for i, store in enumerate(stores):
            rate, cpu = pipeline_rate(str(store), workdir, f"layout{i}", bbox, repeats=1)
            best[i] = (max(best[i][0], rate), min(best[i][1], cpu))
    return best


def read_path_cpu(stores, pixels, repeats=3):
    """CPU seconds of reading a pixels^2 window's blocks (all years and bands) into one buffer
    on one thread, per store: the read path alone, best of `repeats` interleaved rounds."""
    from embedding_change.core.block_reads import read_block
    from embedding_change.core.read_ahead import RunReads
    from embedding_change.core.window import PixelWindow, blocks

    sources = [open_embedding_store(str(s)) for s in stores]
    best = [np.inf] * len(stores)
    for _ in range(repeats):
        for i, source in enumerate(sources):
            reads, start = RunReads(), time.process_time()
            out = np.empty((len(source.times), source.array.shape[1], BLOCK, BLOCK), np.int8)
            for block in blocks(PixelWindow(0, pixels, 0, pixels), (BLOCK, BLOCK)):
                read_block(source, range(len(source.times)), block, out, reads)
            best[i] = min(best[i], time.process_time() - start)
    return best


def without_kernel(run):
    """run() with the kernel replaced by a stand-in returning zeros: the pipeline's own cost."""
    kernel = kernels.change_scores

    def stand_in(block, *, methods=kernels.METHODS, **options):
        return np.zeros((block.shape[0], len(methods), *block.shape[2:]), np.float32)

    kernels.change_scores = stand_in
    try:
        return run()
    finally:
        kernels.change_scores = kernel


def window_bbox(store_path, pixels):
    """A box of pixels x pixels at the store's top-left corner, in the store's CRS."""
    grid = open_embedding_store(str(store_path)).grid
    a, _, c, _, e, f = grid.transform
    return (c, f + e * pixels, c + a * pixels, f)


def rss_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(store, output, pixels):
    """Run in a fresh process: RSS after imports and the kernel's first call, then the run's peak.

    The peak is reset after the warm-up (Linux clear_refs), so a numba compile after an edit
    of the kernels (hundreds of MiB of LLVM) does not hide the run's own peak.
    """
    kernels.change_scores(np.zeros((2, 2, 2, 2), np.int8), signed_square=True, nodata=NODATA)
    bbox = window_bbox(store, pixels)
    baseline = rss_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    compute_change_scores(store, output, bbox=bbox)
    print(json.dumps({"baseline": baseline, "peak": rss_mib("VmHWM")}))


def peak_rss_mib(store_path, pixels, workdir):
    """(peak RSS of the run, post-import RSS) in MiB of a fresh process scoring pixels^2."""
    output = Path(workdir) / f"memory_{pixels}.zarr"
    args = ["--memory-child", str(store_path), str(output), str(pixels)]
    done = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True
    )
    shutil.rmtree(output, ignore_errors=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return figures["peak"], figures["baseline"]


def check(value, target, higher=True):
    ok = value >= target if higher else value <= target
    return "meets" if ok else "MISSES"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="store side in pixels")
    parser.add_argument("--store", help="keep the generated store here (reused if present)")
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        store, output, pixels = args.memory_child
        memory_child(store, output, int(pixels))
        return
    size, half = args.size, args.size // 2
    print(f"{os.cpu_count()} CPUs; AEF-like store {size} x {size} px, 9 years, 64 bands")
    with tempfile.TemporaryDirectory() as workdir:
        store = Path(args.store) if args.store else Path(workdir) / "aef.zarr"
        if store.exists():
            print(f"  reusing {store}")
        else:
            start = time.perf_counter()
            write_aef_like_store(str(store), shape=(size, size))
            print(f"  written in {time.perf_counter() - start:.1f} s")
        shape = open_embedding_store(str(store)).grid.shape
        if tuple(shape) != (size, size):
            parser.error(f"{store} is {shape[0]} x {shape[1]} px, not {size} x {size}")

        one, two, numpy_rate = kernel_figures(store)
        print("\nKernel (256 x 256 blocks, both scores, z-scores):")
        print(f"  1 thread  {one:6.2f} Mpx/s")
        print(f"  2 threads {two:6.2f} Mpx/s   target >= 5: {check(two, 5)}")
        print(f"  numpy     {numpy_rate:6.3f} Mpx/s (straightforward, vectorised, 1 thread)")
        ratio = two / numpy_rate
        print(
            f"  ratio     {ratio:6.1f} x (2-thread kernel / numpy)"
            f"   target >= 40: {check(ratio, 40)}"
        )

        chunked = store.with_name(store.stem + "_chunked.zarr")
        if not chunked.exists():
            write_aef_like_store(str(chunked), shape=(size, size), layout="chunked")
        bbox = window_bbox(store, half)
        # Interleaved, so the neighbours' load changes hit both layouts alike.
        (disk, disk_cpu), (plain, plain_cpu) = layouts_rates([store, chunked], workdir, bbox)
        read_sharded, read_chunked = read_path_cpu([store, chunked], half)
        bare, bare_cpu = without_kernel(lambda: pipeline_rate(str(store), workdir, "bare", bbox))
        with object_server.start(store.parent) as server:
            url, options = server.url(store.name), server.storage_options
            s3, s3_cpu = pipeline_rate(url, workdir, "s3", bbox, storage_options=options)
        print(
            f"\nPipeline (compute_change_scores, {half} x {half} px, default scheduler, best of 2):"
        )
        print(
            f"  from disk {disk:6.2f} Mpx/s  {disk_cpu:5.2f} CPU s/Mpx"
            f"   target >= 1.5 Mpx/s: {check(disk, 1.5)}"
        )
        s3_text = f"{s3:6.2f} Mpx/s  {s3_cpu:5.2f} CPU s/Mpx"
        print(f"  from S3   {s3_text}   (loopback object server, uncapped)")
        shards = open_embedding_store(str(store)).array.shards
        print(
            f"  from disk, chunked layout {plain:6.2f} Mpx/s  {plain_cpu:5.2f} CPU s/Mpx;"
            f" sharded ({shards[2]} x {shards[3]} px shards) / chunked: {disk / plain:.2f}"
            f" (CPU: {plain_cpu / disk_cpu:.2f})   target >= 0.9: {check(disk / plain, 0.9)}"
        )
        print(
            f"  read path alone (1 thread, CPU s): sharded {read_sharded:.2f}, chunked"
            f" {read_chunked:.2f}; chunked / sharded {read_chunked / read_sharded:.2f}"
        )
        print(
            f"  pipeline's own cost (disk, kernel replaced by a stand-in): {1 / bare:.2f} s/Mpx,"
            f" {bare_cpu:.2f} CPU s/Mpx"
        )
        # Both parts compete for the same cores, so their times per Mpx add up.
        projected = 1 / (1 / 5 + 1 / bare)
        print(f"  with a 5 Mpx/s kernel that would be ~{projected:.2f} Mpx/s from disk")

        # The peak varies from run to run with how reads and writes interleave: worst of 2.
        small, base_small = max(peak_rss_mib(store, half, workdir) for _ in range(2))
        large, base_large = max(peak_rss_mib(store, size, workdir) for _ in range(2))
        print(
            "\nPeak memory (fresh process per run, worst of 2; 'above' = over RSS after imports):"
        )
        for pixels, base, peak in ((half, base_small, small), (size, base_large, large)):
            size_text = f"{pixels} x {pixels} px"
            print(f"  {size_text:>15}  peak {peak:6.0f} MiB  above {peak - base:6.0f} MiB")
        growth = large / small
        above = (large - base_large) / (small - base_small)
        verdict = check(growth, 1.2, higher=False)
        print(f"  4x the area: peak x {growth:.2f} (target <= 1.2: {verdict}), above x {above:.2f}")


if __name__ == "__main__":
    main()
