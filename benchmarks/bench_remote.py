"""Remote reads of the scoring engine: a generated store behind a loopback S3 server, in one run.

    python benchmarks/bench_remote.py [--window 1024] [--quick] [--store DIR] [--layout NAME]
        [--links 1000,100] [--latencies 0,30,80] [--conn-mbps N] [--option NAME=VALUE ...]
        [--parts disk,links,cache]

The store (window x 2*window px, 9 years, 64 bands; --store keeps it for later runs) is served
by benchmarks/object_server.py with a per-request latency and a link bandwidth cap. Prints:
- the server alone: ranged GETs on 32 connections, uncapped and under the 1 Gbit/s cap, so the
  figures below are the engine's, not the server's;
- the view from disk in the mosaic's sharded layout and in the chunked one (the same values,
  each chunk an object), and their ratio;
- requests to open the store (by operation), and the open's time at each latency;
- for each link and latency, compute_change_scores on a window x window view: time to the
  first tile (its progress callback) and to completion, bytes fetched, link utilisation over
  the whole run (bytes fetched * 8 / run time / link) and over the reading (the embedding
  array's requests, shard indexes included, from the first one's start to the last one's end),
  the seconds before the reading (the open) and after it (the last blocks' scoring and the
  output's finish), requests, how many were in flight (mean, most); next
  to it, what 10 connections of plain ranged GETs of chunk-sized pieces reach at that setting
  (botocore's pool size), and the same view from disk (the engine's ceiling on these CPUs);
- if compute_change_scores has a `cache` argument: at 100 Mbit/s and 30 ms, a cold run, the
  same view again and a view panned by half a window, with what each fetched (the link rows
  above run with cache=False).
Every run starts cold: s3fs's instances and the engine's per-process store cache are dropped.
--option passes engine options the signature has (others are reported and skipped).
"""

from __future__ import annotations

import argparse
import ast
import gc
import http.client
import inspect
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import conftest  # noqa: E402,F401  (makes `embedding_change` importable from the checkout)
import numpy as np  # noqa: E402
import object_server  # noqa: E402
from bench_scores import layouts_rates  # noqa: E402

from embedding_change.core import compute_change_scores, kernels  # noqa: E402
from embedding_change.core import store as store_module  # noqa: E402
from embedding_change.core.store import open_embedding_store  # noqa: E402
from embedding_change.core.synthetic import write_aef_like_store  # noqa: E402

ENGINE = inspect.signature(compute_change_scores).parameters
GENERATOR = inspect.signature(write_aef_like_store).parameters
# Issue 13's targets for the link's use while reading: (link Mbit/s, latency ms) -> share.
TARGETS = {(1000.0, 30.0): 0.95, (1000.0, 80.0): 0.90}
LAYOUT_TARGET = 0.9  # the sharded layout from disk, x the chunked layout's speed
CACHED_TARGET = 10  # the same view again at 100 Mbit/s, x as fast as cold
SHARD_SIDE = 4096  # the mosaic's shard side in pixels
POOL = 10  # botocore's default connection pool: the peer's connection count
# Runs that measure the link read past the engine's chunk cache, where it has one.
NO_CACHE = {"cache": False} if "cache" in ENGINE else {}


def generated_store(folder: Path, window: int, layout: str | None) -> Path:
    """A window x 2*window store in `folder` (reused when there), in `layout` if the generator
    knows layouts; its shards as large as the mosaic's allow (a view reads part of each)."""
    name = f"aef_{window}_{layout or 'default'}.zarr"
    path = folder / name
    if path.exists():
        print(f"  reusing {path}")
        return path
    options = {}
    if layout and "layout" in GENERATOR:
        options["layout"] = layout
    if "shard" in GENERATOR and (layout or GENERATOR["layout"].default) == "sharded":
        options["shard"] = (min(SHARD_SIDE, window), min(SHARD_SIDE, 2 * window))
    start = time.perf_counter()
    write_aef_like_store(path, shape=(window, 2 * window), **options)
    print(f"  written {path} in {time.perf_counter() - start:.0f} s {options or ''}")
    return path


def view_bbox(store_path, pixels: int, col0: int = 0):
    """The box of pixels x pixels from the top row and column col0, a quarter pixel inside."""
    a, _, c, _, e, f = open_embedding_store(str(store_path)).grid.transform
    inset = a / 4
    return (
        c + a * col0 + inset,
        f + e * pixels + inset,
        c + a * (col0 + pixels) - inset,
        f - inset,
    )


def forget_opened_stores():
    """Drop what a previous run left open, so the next one pays its own open and connections."""
    import s3fs
    from zarr.core.sync import sync

    for fs in list(s3fs.S3FileSystem._cache.values()):
        client = getattr(fs, "_s3creator", None)
        if client is not None and fs.asynchronous:  # zarr's: its session lives on zarr's loop
            sync(client.__aexit__(None, None, None))  # closes its connections
    s3fs.S3FileSystem.clear_instance_cache()
    opened = getattr(store_module, "_opened", None)
    if hasattr(opened, "clear"):
        opened.clear()
    gc.collect()  # the previous run's garbage, collected here rather than in the next run


def engine_options(pairs: list[str]) -> dict:
    """NAME=VALUE pairs (values as Python literals) that compute_change_scores accepts."""
    options = {}
    for pair in pairs:
        name, _, text = pair.partition("=")
        if name not in ENGINE:
            print(f"  skipping --option {pair}: compute_change_scores has no {name!r}")
            continue
        try:
            options[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            options[name] = text
    return options


def timed_run(store, output, bbox, storage_options=None, **options) -> dict:
    """compute_change_scores with its progress watched: seconds to the first tile and done."""
    first = []
    start = time.monotonic()  # the clock of the object server's timeline

    def progress(fraction):
        if fraction > 0 and not first:
            first.append(time.monotonic() - start)

    compute_change_scores(
        store, output, bbox=bbox, storage_options=storage_options, progress=progress, **options
    )
    done = time.monotonic() - start
    shutil.rmtree(output, ignore_errors=True)
    return {"first": first[0] if first else done, "done": done, "start": start}


def reading(counts: dict, run: dict, array: str = "embeddings") -> dict:
    """The run's reading of the embedding array (shard indexes and chunks) in the server's
    timeline: seconds before its first request began and after its last ended, its bytes and
    the span between."""
    reads = [r for r in counts["timeline"] if f"/{array}/c/" in r[3]]
    began, ended = min(r[0] for r in reads), max(r[1] for r in reads)
    return {
        "before": began - run["start"],
        "after": run["start"] + run["done"] - ended,
        "bytes": sum(r[4] for r in reads),
        "span": ended - began,
    }


def parallel_ranged_gets(server, key: str, size: int, piece: int, connections: int, seconds):
    """Bytes per second that `connections` keep-alive connections of back-to-back ranged GETs
    of `piece` bytes move for `seconds`: the plain peer of the engine's reads."""
    host = server.endpoint_url.split("//", 1)[1]
    moved, lock = [0], threading.Lock()
    stop = time.monotonic() + seconds

    def fetch(i):
        connection = http.client.HTTPConnection(host, timeout=60)
        buffer = memoryview(bytearray(piece))
        offset, got = (i * piece) % max(1, size - piece), 0
        while time.monotonic() < stop:
            last = min(size, offset + piece) - 1
            headers = {"Range": f"bytes={offset}-{last}"}
            connection.request("GET", f"/{server.bucket}/{key}", headers=headers)
            answer = connection.getresponse()
            while n := answer.readinto(buffer):
                got += n
            offset = (offset + piece) % max(1, size - piece)
        connection.close()
        with lock:
            moved[0] += got

    start = time.monotonic()
    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return moved[0] / (time.monotonic() - start)


def largest_object(store_path: Path) -> tuple[str, int]:
    """(key relative to the served folder, size) of the store's largest object (a shard)."""
    path = max((p for p in store_path.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    return path.relative_to(store_path.parent).as_posix(), path.stat().st_size


def typical_chunk_bytes(store_path: Path, window: int) -> int:
    """Bytes a view of the window reads per 256 x 256 chunk (the size of the engine's GETs)."""
    embeddings = store_path / "embeddings"
    total = sum(p.stat().st_size for p in embeddings.rglob("*") if p.is_file())
    chunks = 9 * (window // 256) * (2 * window // 256)
    return max(1, total // chunks)


def open_figures(server, url) -> tuple[float, dict]:
    """(seconds, counts) of opening the store cold."""
    forget_opened_stores()
    server.reset_counts()
    start = time.perf_counter()
    open_embedding_store(url, storage_options=server.storage_options)
    return time.perf_counter() - start, server.counts()


def gbit(bytes_per_second: float) -> float:
    return bytes_per_second * 8 / 1e9


def server_alone(server, key, size):
    """Print the server's own throughput on ranged 1 MiB GETs from 32 connections."""
    piece = 1 << 20
    server.configure()
    uncapped = parallel_ranged_gets(server, key, size, piece, 32, 2.0)
    server.configure(link_bps=1e9)
    capped = parallel_ranged_gets(server, key, size, piece, 32, 2.0)
    server.configure(link_bps=1e9, latency_s=0.08)
    capped_80 = parallel_ranged_gets(server, key, size, piece, 32, 3.0)
    print("\nThe server alone (32 connections of ranged 1 MiB GETs, client in this process):")
    print(f"  uncapped             {gbit(uncapped):6.2f} Gbit/s = {gbit(uncapped):.1f} x 1 Gbit/s")
    for name, rate in (("0 ms ", capped), ("80 ms", capped_80)):
        share = f"{gbit(rate) * 100:.0f} % of the cap"
        print(f"  1 Gbit/s cap, {name}  {gbit(rate):6.2f} Gbit/s = {share}")


def link_table(server, url, store_path, window, links, latencies, options, disk_done, conn):
    bbox = view_bbox(store_path, window)
    piece = typical_chunk_bytes(store_path, window)
    key, size = largest_object(store_path)
    options = {**NO_CACHE, **options}
    print(
        f"\nLinks ({window} x {window} px view, {9 * (window // 256) ** 2} chunks; input from the"
        f" server, output on disk; engine options {options or 'default'}"
        + (f"; at most {conn:g} Mbit/s per connection" if conn else "")
        + "):"
    )
    header = (
        f"  {'link':>9} {'latency':>7} {'open':>6} {'1st tile':>8} {'done':>7} {'fetched':>8}"
        f" {'whole run':>9} {'reading':>7} {'before':>6} {'after':>6} {'requests':>8}"
        f" {'GET':>5} {'HEAD':>5} {'in flight':>9} {'10-conn peer':>12} {'x ceiling':>9}"
        "  target (reading)"
    )
    print(header)
    server_cpu = []  # the server's CPU seconds per second of each run
    with tempfile.TemporaryDirectory() as workdir:
        for link in links:
            for latency in latencies:
                server.configure(
                    latency_s=latency / 1000, link_bps=link * 1e6, conn_bps=conn and conn * 1e6
                )
                opened, _ = open_figures(server, url)
                forget_opened_stores()
                server.reset_counts()
                output = Path(workdir) / "scores.zarr"
                run = timed_run(url, output, bbox, server.storage_options, **options)
                counts = server.counts()
                ops = counts["operations"]
                fetched = counts["bytes_sent"]
                mean = counts["request_seconds"] / max(counts["span_s"], 1e-9)
                in_flight = f"{mean:.1f}/{counts['max_in_flight']}"
                utilisation = fetched * 8 / run["done"] / (link * 1e6)
                read = reading(counts, run)
                while_reading = read["bytes"] * 8 / read["span"] / (link * 1e6)
                peer_seconds = max(2.0, 30 * latency / 1000)
                peer = parallel_ranged_gets(server, key, size, piece, POOL, peer_seconds)
                peer_use = peer * 8 / (link * 1e6)
                ceiling = max(disk_done, fetched * 8 / (link * 1e6))
                server_cpu.append(counts["cpu_seconds"] / run["done"])
                print(
                    f"  {link:>4g} Mbit {latency:>4g} ms {opened:>5.2f}s {run['first']:>7.2f}s"
                    f" {run['done']:>6.2f}s {fetched / 1e6:>6.0f}MB {utilisation * 100:>8.0f}%"
                    f" {while_reading * 100:>6.0f}% {read['before']:>5.2f}s {read['after']:>5.2f}s"
                    f" {counts['requests']:>8} {ops.get('GetObject', 0):>5}"
                    f" {ops.get('HeadObject', 0):>5} {in_flight:>9}"
                    f" {peer_use * 100:>11.0f}% {run['done'] / ceiling:>9.2f}"
                    f"  {verdict(while_reading, TARGETS.get((link, latency)))}"
                )
    print(f"  from disk, same view: done in {disk_done:.2f} s (the engine's ceiling here)")
    print(
        f"  the server's own CPU: {min(server_cpu) * 100:.0f}-{max(server_cpu) * 100:.0f} % of"
        " one core during the runs"
    )
    print("  whole run: bytes fetched x 8 / the run's time / the link")
    print("  reading: the embedding array's bytes x 8 / the time from its first request's start")
    print("    to its last one's end / the link; before: the run's start to that first request")
    print("    (opening the store); after: that last end to the run's end (the last blocks'")
    print("    scoring, the output's finish)")
    print("  in flight: requests being answered, mean over the run's requests / most at once")
    print("  x ceiling: run time / the larger of the disk run's time and the link's time for the")
    print("    bytes fetched (1.00: as fast as this machine's CPUs or the link allow)")
    print(
        f"  10-conn peer: {POOL} keep-alive connections of back-to-back ranged GETs of"
        f" {piece / 1e6:.1f} MB (a chunk's bytes), as a share of the link"
    )


def disk_layouts(store_path: Path, folder: Path, window: int, workdir) -> None:
    """Print the view's speed from disk in the sharded layout and in the chunked one."""
    chunked = generated_store(folder, window, "chunked")
    bbox = view_bbox(store_path, window)
    (sharded, sharded_cpu), (plain, plain_cpu) = layouts_rates(
        [store_path, chunked], workdir, bbox, repeats=5
    )
    print(f"\nFrom disk ({window} x {window} px view, compute_change_scores, best of 5 each):")
    print(f"  sharded layout (the mosaic's) {sharded:6.2f} Mpx/s  {sharded_cpu:5.2f} CPU s/Mpx")
    print(f"  chunked layout (same values)  {plain:6.2f} Mpx/s  {plain_cpu:5.2f} CPU s/Mpx")
    ratio = sharded / plain
    print(
        f"  sharded / chunked {ratio:.2f}  target >= {LAYOUT_TARGET}:"
        f" {'meets' if ratio >= LAYOUT_TARGET else 'MISSES'}"
    )


def verdict(value, target) -> str:
    """'>= 90 %: meets' or '... MISSES' against a target share; '' where there is none."""
    if target is None:
        return ""
    return f">= {target * 100:.0f} %: {'meets' if value >= target else 'MISSES'}"


def cache_runs(server, url, store_path, window, options):
    """Cold, again, and panned by half a window, at 100 Mbit/s and 30 ms, with a fresh cache."""
    server.configure(latency_s=0.03, link_bps=1e8)
    views = [
        ("cold", view_bbox(store_path, window)),
        ("same view again", view_bbox(store_path, window)),
        ("panned by half", view_bbox(store_path, window, window // 2)),
    ]
    print(f"\nLocal chunk cache (100 Mbit/s, 30 ms, {window} x {window} px, a fresh cache folder):")
    with tempfile.TemporaryDirectory() as workdir:
        cache = Path(workdir) / "cache"
        cold = None
        for name, bbox in views:
            forget_opened_stores()
            server.reset_counts()
            output = Path(workdir) / "scores.zarr"
            run = timed_run(url, output, bbox, server.storage_options, cache=str(cache), **options)
            counts = server.counts()
            cold = cold or run["done"]
            speed = f"{cold / run['done']:5.1f} x as fast as cold" if cold != run["done"] else ""
            if name == "same view again":
                met = "meets" if cold / run["done"] >= CACHED_TARGET else "MISSES"
                speed += f"  target >= {CACHED_TARGET} x: {met}"
            print(
                f"  {name:>16}: done in {run['done']:6.2f} s, fetched"
                f" {counts['bytes_sent'] / 1e6:6.0f} MB in"
                f" {counts['operations'].get('GetObject', 0):3} GETs  {speed}"
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=1024, help="view side in pixels")
    parser.add_argument("--quick", action="store_true", help="a 512 px view, fewer settings")
    parser.add_argument("--store", help="folder to keep the generated stores in (reused)")
    layouts = GENERATOR["layout"].default if "layout" in GENERATOR else None
    parser.add_argument("--layout", default=layouts, help="generator layout (sharded, chunked)")
    parser.add_argument("--links", default="1000,100", help="link caps in Mbit/s")
    parser.add_argument("--latencies", default="0,30,80", help="per-request latencies in ms")
    parser.add_argument("--conn-mbps", type=float, help="a cap per connection too (Mbit/s)")
    parser.add_argument("--option", action="append", default=[], help="engine NAME=VALUE")
    parser.add_argument(
        "--parts", default="disk,links,cache", help="what to run: disk (the layouts), links, cache"
    )
    args = parser.parse_args()
    window = 512 if args.quick and args.window == 1024 else args.window
    if window % 256:
        parser.error("--window must be a multiple of 256 (whole chunks)")
    links = [float(v) for v in args.links.split(",")]
    latencies = [float(v) for v in args.latencies.split(",")]
    if args.quick and args.latencies == "0,30,80":
        latencies = [0.0, 80.0]
    if args.layout and "layout" not in GENERATOR:
        print(f"  the generator has no layouts: --layout {args.layout} ignored")
        args.layout = None
    options = engine_options(args.option)
    parts = set(args.parts.split(","))

    print(f"{os.cpu_count()} CPUs (shared machine: figures move from run to run)")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.store) if args.store else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        store_path = generated_store(folder, window, args.layout)
        kernels.change_scores(np.zeros((2, 2, 2, 2), np.int8), signed_square=True, nodata=-128)
        with object_server.start(folder) as server:
            url = server.url(store_path.name)
            key, size = largest_object(store_path)
            server_alone(server, key, size)

            server.configure()
            with tempfile.TemporaryDirectory() as workdir:  # warm the imports and the kernel
                small = view_bbox(store_path, 256)
                warm = Path(workdir) / "warm.zarr"
                timed_run(url, warm, small, server.storage_options, **NO_CACHE)
                disk_done = min(
                    timed_run(
                        store_path, Path(workdir) / f"disk{i}.zarr", view_bbox(store_path, window)
                    )["done"]
                    for i in range(2)
                )
                if args.layout == "sharded" and "disk" in parts:
                    disk_layouts(store_path, folder, window, workdir)
            seconds, counts = open_figures(server, url)
            ops = ", ".join(f"{n} {op}" for op, n in sorted(counts["operations"].items()))
            print(
                f"\nOpening the store: {counts['requests']} requests ({ops}),"
                f" {seconds:.2f} s at 0 ms"
            )

            if "links" in parts:
                link_table(
                    server,
                    url,
                    store_path,
                    window,
                    links,
                    latencies,
                    options,
                    disk_done,
                    args.conn_mbps,
                )
            if "cache" in parts and "cache" in ENGINE:
                cache_runs(server, url, store_path, window, options)
            elif "cache" in parts:
                print("\n(compute_change_scores has no cache argument: no cache figures)")


if __name__ == "__main__":
    main()
