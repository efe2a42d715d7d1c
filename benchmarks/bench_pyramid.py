"""Speed of the pyramid build, level by level, against xarray's coarsen, in one run.

    python benchmarks/bench_pyramid.py [--size 4096] [--years 9] [--scores 2]

Generates a scores-like store (float32 (time, band, y, x), NaN edges and holes, chunks
(1, 1, 256, 256), uncompressed: what Change scores writes), then for `max` and `second_max`:
- ours: build_multiscales, its seconds per level (level 0 hard-links the source's chunks);
- the peer: straightforward xarray, one level after the other from the level written before,
  `xr.open_zarr(level k).coarsen(y=2, x=2, boundary="pad").max()` (NaN-skipping) and for
  second_max `coarsen(...).construct(...)` reduced by a numpy sort over each 2 x 2 block;
  level 0 is `xr.open_zarr(source).to_zarr(level 0)` (xarray can only copy it). Written
  uncompressed too, with dask's threads.
Prints wall and process-CPU seconds per level for both and the ratios peer / ours (above 1:
ours is faster; CPU seconds are steadier on a shared machine), and checks both pyramids hold
the same values.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import conftest  # noqa: E402,F401  (makes `embedding_change` importable from the checkout)
import xarray as xr  # noqa: E402

from embedding_change.core import build_multiscales  # noqa: E402
from embedding_change.core.pyramid_levels import level_shapes  # noqa: E402

TILE = 256


def write_scores_like_store(path: Path, size: int, years: int, scores: int) -> None:
    """Robust z-score-like noise with NaN edges, holes and a few planted events."""
    rng = np.random.default_rng(0)
    ny, nx = size, size - 37  # not a multiple of the tile: edge chunks and odd level sizes
    values = rng.standard_normal((years, scores, ny, nx), dtype=np.float32)
    values[..., :5, :] = np.nan
    values[..., size // 3 : size // 3 + 300, 100:700] = np.nan
    values[rng.random(values.shape, dtype=np.float32) < 0.02] = np.nan
    for _ in range(20):
        t, r, c = rng.integers(years), rng.integers(ny - 64), rng.integers(nx - 64)
        values[t, :, r : r + 40, c : c + 40] += 8
    gsd = 8.983111749910169e-05
    transform = [gsd, 0.0, -105.3, 0.0, -gsd, 40.1]
    ds = xr.Dataset(
        {"scores": (("time", "band", "y", "x"), values)},
        coords={
            "time": ("time", np.arange(2017, 2017 + years, dtype=np.int32)),
            "band": ("band", np.array([f"score_{i}" for i in range(scores)], dtype=object)),
            "y": ("y", 40.1 - gsd * (np.arange(ny) + 0.5)),
            "x": ("x", -105.3 + gsd * (np.arange(nx) + 0.5)),
        },
        attrs={
            "proj:code": "EPSG:4326",
            "spatial:dimensions": ["y", "x"],
            "spatial:transform": transform,
            "spatial:shape": [ny, nx],
        },
    )
    encoding = {"scores": {"chunks": (1, 1, TILE, TILE), "fill_value": np.nan, "compressors": None}}
    ds.to_zarr(path, encoding=encoding, zarr_format=3, consolidated=True)


def second_largest(values, axis):
    """The second-largest valid value over `axis` (the only one if one is valid), else NaN;
    block by block on a dask array (coarsen hands it whole, its 2 x 2 windows in one chunk)."""
    if not isinstance(values, np.ndarray):
        return values.map_blocks(
            second_largest,
            axis=axis,
            drop_axis=axis,
            dtype=values.dtype,
            meta=np.array((), values.dtype),
        )
    moved = np.moveaxis(values, axis, (-2, -1))
    blocks = moved.reshape(*moved.shape[:-2], -1)
    ordered = np.sort(blocks, axis=-1)  # NaN last
    count = (~np.isnan(blocks)).sum(axis=-1)
    index = np.clip(count - 2, 0, blocks.shape[-1] - 1)[..., np.newaxis]
    picked = np.take_along_axis(ordered, index, axis=-1)[..., 0]
    return np.where(count > 0, picked, np.nan).astype(values.dtype)


def xarray_pyramid(source: Path, folder: Path, method: str, n_levels: int):
    """The peer: one level after the other with xarray's coarsen; seconds and process CPU
    seconds per level."""
    seconds, cpu = [], []
    encoding = {"scores": {"chunks": (1, 1, TILE, TILE), "compressors": None}}
    for level in range(n_levels):
        started, cpu_started = time.perf_counter(), time.process_time()
        if level == 0:
            data = xr.open_zarr(source)[["scores"]]
        else:
            above = xr.open_zarr(folder / str(level - 1))[["scores"]]
            coarse = above.coarsen(y=2, x=2, boundary="pad")
            data = coarse.max() if method == "max" else coarse.reduce(second_largest)
        data = data.chunk({"time": 1, "band": 1, "y": TILE, "x": TILE})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data.to_zarr(folder / str(level), encoding=encoding, zarr_format=3, mode="w")
        seconds.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--years", type=int, default=9)
    parser.add_argument("--scores", type=int, default=2)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-pyramid-"))
    try:
        source = folder / "scores.zarr"
        started = time.perf_counter()
        write_scores_like_store(source, args.size, args.years, args.scores)
        shape = (args.size, args.size - 37)
        shapes = level_shapes(shape, TILE)
        mib = args.years * args.scores * shape[0] * shape[1] * 4 / 2**20
        print(
            f"source: {args.years} years x {args.scores} scores x {shape[0]} x {shape[1]} "
            f"float32 ({mib:,.0f} MiB), {len(shapes)} levels; written in "
            f"{time.perf_counter() - started:.1f} s"
        )
        # Compile or load the numba kernel outside the timings (as a second run would).
        build_multiscales(source, folder / "warm.zarr", resampling="second_max").close()
        shutil.rmtree(folder / "warm.zarr")
        for method in ("max", "second_max"):
            tree = build_multiscales(source, folder / f"ours-{method}.zarr", resampling=method)
            ours = tree.attrs["embedding_change:level_seconds"]
            ours_cpu = tree.attrs["embedding_change:level_cpu_seconds"]
            linked = tree.attrs["embedding_change:level_0_linked"]
            peer_folder = folder / f"xarray-{method}"
            peer, peer_cpu = xarray_pyramid(source, peer_folder, method, len(shapes))
            for level in range(len(shapes)):
                a = tree[str(level)].ds["scores"].values
                b = xr.open_zarr(peer_folder / str(level))["scores"].values
                np.testing.assert_array_equal(a, b, err_msg=f"{method} level {level}")
            tree.close()
            print(f"\n{method}: seconds per level, wall and CPU (ours: level 0 linked={linked})")
            print(
                f"{'level':>5} {'shape':>13} {'ours s':>8} {'xarray s':>9} {'ratio':>6}"
                f" {'ours cpu':>9} {'xarray cpu':>11} {'ratio':>6}"
            )
            rows = [(str(level), f"{ny} x {nx}", [level]) for level, (ny, nx) in enumerate(shapes)]
            rows += [("all", "", range(len(shapes))), ("1..N", "", range(1, len(shapes)))]
            for label, shape_words, levels in rows:
                wall = sum(ours[k] for k in levels), sum(peer[k] for k in levels)
                used = sum(ours_cpu[k] for k in levels), sum(peer_cpu[k] for k in levels)
                print(
                    f"{label:>5} {shape_words:>13} {wall[0]:>8.3f} {wall[1]:>9.3f} "
                    f"{wall[1] / max(wall[0], 1e-4):>5.1f}x {used[0]:>9.3f} {used[1]:>11.3f} "
                    f"{used[1] / max(used[0], 1e-4):>5.1f}x"
                )
            print("(ratio: xarray / ours, above 1: ours is faster. 1..N: the levels both compute)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
