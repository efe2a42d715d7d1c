"""Speed and memory of the scoring engine on one generated AEF-like store, in one run.

    python benchmarks/bench_scores.py [--size 768]

Prints, next to the targets of issue 3:
- the numba kernel's throughput on 256 x 256 blocks of the store (9 years x 64 bands, both
  scores, z-scores on), from 1 thread and from 2 threads (the way dask threads call it);
- a straightforward vectorised numpy version's throughput on the same block, and the ratio;
- compute_change_scores' throughput from the store on disk and from a local S3 server (moto);
- peak RSS of a fresh process scoring a window, and a window four times its area.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import conftest  # noqa: E402,F401  (makes `embedding_change` importable from the checkout)

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


def best_time(run, repeats=3):
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
    numpy_rate = part.shape[2] * BLOCK / best_time(lambda: numpy_change_scores(part), 2) / 1e6
    return one, two, numpy_rate


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto():
    port = free_port()
    executable = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    process = subprocess.Popen(
        [executable, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("moto_server did not start")


def pipeline_rate(store, output, bbox, storage_options=None):
    start = time.perf_counter()
    result = compute_change_scores(store, output, bbox=bbox, storage_options=storage_options)
    elapsed = time.perf_counter() - start
    return result.sizes["y"] * result.sizes["x"] / elapsed / 1e6


def window_bbox(store_path, pixels):
    """A box of pixels x pixels at the store's top-left corner, in the store's CRS."""
    grid = open_embedding_store(str(store_path)).grid
    a, _, c, _, e, f = grid.transform
    return (c, f + e * pixels, c + a * pixels, f)


def peak_rss_mib(store_path, pixels, workdir):
    """Peak RSS of a fresh Python process that scores a pixels x pixels window."""
    bbox = window_bbox(store_path, pixels)
    output = Path(workdir) / f"memory_{pixels}.zarr"
    code = (
        "import json, resource, sys; sys.path.insert(0, sys.argv[1]); import conftest; "
        "from embedding_change.core import compute_change_scores; "
        "compute_change_scores(sys.argv[2], sys.argv[3], bbox=json.loads(sys.argv[4])); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    args = [str(ROOT / "tests"), str(store_path), str(output), json.dumps(bbox)]
    done = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True
    )
    return int(done.stdout.split()[-1]) / 1024


def check(value, target, higher=True):
    ok = value >= target if higher else value <= target
    return "meets" if ok else "MISSES"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=768, help="store side in pixels")
    size = parser.parse_args().size
    print(f"{os.cpu_count()} CPUs; generated AEF-like store {size} x {size} px, 9 years, 64 bands")
    with tempfile.TemporaryDirectory() as workdir:
        store = Path(workdir) / "aef.zarr"
        start = time.perf_counter()
        write_aef_like_store(str(store), shape=(size, size))
        print(f"  written in {time.perf_counter() - start:.1f} s")

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

        half = size // 2
        bbox = window_bbox(store, half)
        disk = pipeline_rate(str(store), str(Path(workdir) / "disk.zarr"), bbox)
        moto, endpoint = start_moto()
        try:
            options = {"key": "testing", "secret": "testing", "endpoint_url": endpoint}
            import s3fs

            s3fs.S3FileSystem(**options).mkdir("bench")
            write_aef_like_store("s3://bench/aef.zarr", shape=(half, half), storage_options=options)
            s3 = pipeline_rate(
                "s3://bench/aef.zarr", str(Path(workdir) / "s3.zarr"), None, storage_options=options
            )
        finally:
            moto.terminate()
            moto.wait(10)
        print(f"\nPipeline (compute_change_scores, {half} x {half} px window, default scheduler):")
        print(f"  from disk {disk:6.2f} Mpx/s   target >= 1.5: {check(disk, 1.5)}")
        print(f"  from S3   {s3:6.2f} Mpx/s   (moto on loopback)")

        small = peak_rss_mib(store, half, workdir)
        large = peak_rss_mib(store, size, workdir)
        growth = large / small
        print("\nPeak memory (RSS of a fresh process):")
        print(f"  {half} x {half} px  {small:7.0f} MiB")
        print(f"  {size} x {size} px {large:7.0f} MiB (4x the area)")
        print(f"  ratio {growth:.2f}   target <= 1.2: {check(growth, 1.2, higher=False)}")


if __name__ == "__main__":
    main()
