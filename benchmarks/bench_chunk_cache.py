"""The local chunk cache: a view run cold, run again and panned by half, behind a capped link.

    python benchmarks/bench_chunk_cache.py [--window 1024] [--link-mbps 100] [--latency-ms 30]

A generated store (window x 2*window px, 9 years, 64 bands) and a sharded copy of it (shards
of window x window px of 256 x 256 inner chunks, read as ranged GETs of the shard objects, as
zarr reads the AEF mosaic) are served by benchmarks/object_server.py with the link cap and
latency. For each layout, in one process: the view with cache=False (the peer), then with a
fresh cache folder cold, the same view again and the view panned east by half; each row gives
the time, the ratio to the cold run, the bytes and GETs the server answered and the engine's
cache line; last, the same view from disk (the engine's ceiling here). Every run starts
without the open stores and connections of the last one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import conftest  # noqa: E402,F401  (makes `embedding_change` importable from the checkout)
import numpy as np  # noqa: E402
import object_server  # noqa: E402
import xarray as xr  # noqa: E402
from bench_remote import forget_opened_stores, view_bbox  # noqa: E402

from embedding_change.core import compute_change_scores, kernels  # noqa: E402
from embedding_change.core.synthetic import write_aef_like_store  # noqa: E402


def stores(folder: Path, window: int) -> dict[str, Path]:
    """The generated store and a copy in shards of window x window px."""
    plain = folder / "chunks.zarr"
    write_aef_like_store(plain, shape=(window, 2 * window), seed=11)
    sharded = folder / "shards.zarr"
    ds = xr.open_zarr(plain).chunk({"y": window, "x": window})
    for variable in ds.variables.values():
        variable.encoding.clear()
    encoding = {"embeddings": {"chunks": (1, 64, 256, 256), "shards": (1, 64, window, window)}}
    ds.to_zarr(sharded, zarr_format=3, consolidated=False, encoding=encoding)
    return {"one object per chunk": plain, "sharded": sharded}


def timed(server, url, bbox, workdir: Path, cache) -> dict:
    forget_opened_stores()
    server.reset_counts()
    output = workdir / "scores.zarr"
    lines = []
    start = time.perf_counter()
    compute_change_scores(
        url,
        output,
        bbox=bbox,
        storage_options=server.storage_options,
        cache=cache,
        log=lines.append,
    )
    seconds = time.perf_counter() - start
    shutil.rmtree(output)
    counts = server.counts()
    line = next((text for text in lines if text.startswith("Chunk cache")), "")
    return {
        "seconds": seconds,
        "bytes": counts["bytes_sent"],
        "gets": counts["operations"].get("GetObject", 0),
        "cache": line.split(": ", 1)[-1] if line else "off",
    }


def timed_local(path: Path, bbox, workdir: Path) -> dict:
    """The same view from the store on disk: the engine's ceiling on this machine."""
    output = workdir / "scores.zarr"
    start = time.perf_counter()
    compute_change_scores(path, output, bbox=bbox)
    seconds = time.perf_counter() - start
    shutil.rmtree(output)
    return {"seconds": seconds, "bytes": 0, "gets": 0, "cache": "(a local store: none)"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=1024, help="view side in pixels")
    parser.add_argument("--link-mbps", type=float, default=100.0)
    parser.add_argument("--latency-ms", type=float, default=30.0)
    args = parser.parse_args()
    window = args.window
    print(f"{os.cpu_count()} CPUs (shared machine: figures move from run to run)")
    kernels.change_scores(np.zeros((9, 2, 2, 2), np.int8), signed_square=True, nodata=-128)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "served"
        folder.mkdir()
        layouts = stores(folder, window)
        link = f"{args.link_mbps:g} Mbit/s, {args.latency_ms:g} ms"
        with object_server.start(folder, latency_s=args.latency_ms / 1000) as server:
            server.configure(latency_s=args.latency_ms / 1000, link_bps=args.link_mbps * 1e6)
            for name, path in layouts.items():
                url = server.url(path.name)
                view = view_bbox(path, window)
                panned = view_bbox(path, window, window // 2)
                workdir = Path(scratch) / "work"
                workdir.mkdir(exist_ok=True)
                cache = str(Path(scratch) / f"cache-{path.stem}")
                runs = [
                    ("cache=False", timed(server, url, view, workdir, False)),
                    ("cold", timed(server, url, view, workdir, cache)),
                    ("same view again", timed(server, url, view, workdir, cache)),
                    ("panned by half", timed(server, url, panned, workdir, cache)),
                ]
                runs.append(("from disk", timed_local(path, view, workdir)))
                cold = runs[1][1]["seconds"]
                print(f"\n{name}, {window} x {window} px view, {link}:")
                for label, run in runs:
                    print(
                        f"  {label:>16}: {run['seconds']:6.2f} s ({cold / run['seconds']:5.1f} x"
                        f" faster than cold), fetched {run['bytes'] / 1e6:6.1f} MB in"
                        f" {run['gets']:4d} GETs; cache: {run['cache']}"
                    )


if __name__ == "__main__":
    main()
