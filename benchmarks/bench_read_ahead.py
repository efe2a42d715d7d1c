"""Read-ahead of remote chunks: link utilisation with and without it, in one run.

    python benchmarks/bench_read_ahead.py [--window 1024] [--store DIR] [--latencies 0,30,80]
        [--link-mbps 1000] [--requests 32]

A window x window view of a generated store in the mosaic's layout (kept in --store), served
by benchmarks/object_server.py (per-request latency, a shared link cap). For each latency it
runs compute_change_scores with read_ahead=0 (only the blocks being scored in flight, as
before) and with the default read-ahead, and the read-ahead again with the kernel replaced by
a stand-in (the read path alone). Per run: seconds, link utilisation over the run (bytes
fetched * 8 / run time / link) and over the fetching span (first request to last answer,
from the server's counts), the mean and the most requests in flight, and the most blocks the
read-ahead held fetched but not yet taken (its memory bound: blocks_ahead).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import conftest  # noqa: E402,F401  (makes `embedding_change` importable from the checkout)
import object_server  # noqa: E402  (benchmarks/object_server.py)
from bench_remote import forget_opened_stores  # noqa: E402
from bench_scores import without_kernel  # noqa: E402

from embedding_change.core import compute_change_scores, kernels, read_ahead  # noqa: E402
from embedding_change.core.store import open_embedding_store  # noqa: E402
from embedding_change.core.synthetic import write_aef_like_store  # noqa: E402


class HeldBlocks:
    """Watches ReadAhead: the most blocks fetched ahead and not yet taken at once."""

    def __init__(self):
        self.most = 0
        self.bound = 0
        self._top_up = read_ahead.ReadAhead._top_up

    def __enter__(self):
        watcher = self

        def top_up(ahead):
            watcher._top_up(ahead)
            watcher.most = max(watcher.most, len(ahead._waiting))
            watcher.bound = ahead.blocks_ahead

        read_ahead.ReadAhead._top_up = top_up
        return self

    def __exit__(self, *exc):
        read_ahead.ReadAhead._top_up = self._top_up


def one_run(server, url, bbox, workdir, link_bps, **options) -> dict:
    forget_opened_stores()
    server.reset_counts()
    output = Path(workdir) / "scores.zarr"
    with HeldBlocks() as held:
        start = time.perf_counter()
        compute_change_scores(  # no chunk cache: each run fetches its chunks from the server
            url, output, bbox=bbox, storage_options=server.storage_options, cache=False, **options
        )
        seconds = time.perf_counter() - start
    shutil.rmtree(output, ignore_errors=True)
    counts = server.counts()
    fetched = counts["bytes_sent"]
    return {
        "seconds": seconds,
        "run": fetched * 8 / seconds / link_bps,
        "span": fetched * 8 / max(counts["span_s"], 1e-9) / link_bps,
        "mean": counts["request_seconds"] / max(counts["span_s"], 1e-9),
        "most": counts["max_in_flight"],
        "held": f"{held.most}/{held.bound}" if held.bound else "-",
        "mb": fetched / 1e6,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--store", help="folder to keep the generated store in (reused)")
    parser.add_argument("--latencies", default="0,30,80", help="per-request latencies in ms")
    parser.add_argument("--link-mbps", type=float, default=1000)
    parser.add_argument("--requests", type=int, default=read_ahead.READ_AHEAD_REQUESTS)
    args = parser.parse_args()
    window, link = args.window, args.link_mbps * 1e6
    kernels.change_scores(np.zeros((9, 64, 8, 8), np.int8), signed_square=True, nodata=-128)
    with tempfile.TemporaryDirectory() as workdir:
        folder = Path(args.store or workdir)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"aef_{window}_sharded.zarr"
        if not (path / "zarr.json").exists():
            write_aef_like_store(path, shape=(window, window), seed=1)
        grid = open_embedding_store(path).grid
        a, _, c, _, e, f = grid.transform
        bbox = (c, f + e * window, c + a * window, f)
        server = object_server.start(folder)
        url = server.url(path.name)
        print(
            f"{window} x {window} px view, 9 years, 64 bands, mosaic layout; link"
            f" {args.link_mbps:g} Mbit/s; read-ahead {args.requests} requests"
        )
        print(
            f"  {'latency':>7} {'read-ahead':<18} {'seconds':>7} {'use/run':>7} {'use/fetch':>9}"
            f" {'in flight':>9} {'held':>6} {'fetched':>8}"
        )
        try:
            for latency in (float(v) for v in args.latencies.split(",")):
                server.configure(latency_s=latency / 1000, link_bps=link)
                cases = [
                    ("off (read_ahead=0)", lambda: {"read_ahead": 0}, False),
                    ("on", lambda: {"read_ahead": args.requests}, False),
                    ("on, kernel stand-in", lambda: {"read_ahead": args.requests}, True),
                ]
                for name, options, stand_in in cases:

                    def run(options=options):
                        return one_run(server, url, bbox, workdir, link, **options())

                    r = without_kernel(run) if stand_in else run()
                    print(
                        f"  {latency:>4g} ms {name:<18} {r['seconds']:>7.2f} {r['run']:>7.0%}"
                        f" {r['span']:>9.0%} {r['mean']:>4.1f}/{r['most']:<4} {r['held']:>6}"
                        f" {r['mb']:>6.0f}MB"
                    )
        finally:
            server.stop()
    print(
        "  use/run: bytes fetched x 8 / run time / link; use/fetch: the same over the server's"
        " first request to last answer\n  in flight: mean / most requests being answered;"
        " held: most blocks fetched ahead and not yet taken / the bound"
    )


if __name__ == "__main__":
    main()
