"""How big a run is before anything is read, and the guard that stops one too big to run here.

The estimate counts the window's pixels, the bytes of the whole chunks it touches (every year
and band: what the run downloads or decodes), and a time: the bytes at the rate runs from the
same server reached so far in this process, or, before any was measured (and for local
stores), the pixels at the pipeline's rate from disk on a 2-core machine (README: ~1 Mpx/s).

The limit (default 50 Mpx, about a 70 x 70 km view at 10 m) protects this computer: a run on
the canvas extent of a zoomed-out map would read terabytes for hours. A run on a dask
scheduler gets its own, larger limit: the cluster does the reading, but this computer still
builds the task graph (a few tasks per 256 x 256 tile, ~300,000 for 5e9 pixels, ~3 s to
build; a continent's would not fit in memory), so the limit there is the larger of the given
one and CLUSTER_MAX_PIXELS (Colorado, 3.5e9 px, fits). max_pixels=None turns both off.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import WindowError

DEFAULT_MAX_PIXELS = 50_000_000
CLUSTER_MAX_PIXELS = 5_000_000_000
LOCAL_PIXEL_RATE = 1.0e6  # px/s, the pipeline from disk here (README, Speed and memory)
GSD_METRES = 10.0  # the mosaic's pixel, for "about a N x N km view"


class RunTooLargeError(WindowError):
    """The window is over the pixel limit; the message names the size and the ways on."""


@dataclass(frozen=True)
class RunEstimate:
    """What a run over a window will read, and about how long it will take."""

    height: int
    width: int
    years: int
    bands: int
    nbytes: int  # the whole chunks touched, all chosen years and bands
    link_rate: float | None = None  # bytes/s reached from this store's server so far
    remote: bool = False

    @property
    def pixels(self) -> int:
        return self.height * self.width

    @property
    def seconds(self) -> float:
        by_pixels = self.pixels / LOCAL_PIXEL_RATE
        if self.link_rate:
            return max(by_pixels, self.nbytes / self.link_rate)
        return by_pixels

    def describe(self) -> str:
        if self.link_rate:
            basis = f"at the {self.link_rate / 1e6:,.1f} MB/s reached from this server so far"
        elif self.remote:  # the pixels alone would promise far too little (benchmarks/)
            basis = (
                f"of computing at ~{LOCAL_PIXEL_RATE / 1e6:g} Mpx/s, plus the download (no "
                "download from this server measured yet)"
            )
        else:
            basis = f"at ~{LOCAL_PIXEL_RATE / 1e6:g} Mpx/s"
        return (
            f"Estimate: {self.width:,} x {self.height:,} = {megapixels(self.pixels)} over "
            f"{self.years} years and {self.bands} bands, about {gigabytes(self.nbytes)} to read, "
            f"about {duration(self.seconds)} {basis}."
        )


def estimate_run(source, window, n_years: int) -> RunEstimate:
    """The estimate for reading `window` (core.window.PixelWindow) of an opened store."""
    _, n_bands, cy, cx = (int(v) for v in source.chunks)
    rows = _aligned_span(window.row0, window.row1, cy)
    cols = _aligned_span(window.col0, window.col1, cx)
    nbytes = rows * cols * n_years * n_bands * source.dtype.itemsize
    height, width = window.shape
    remote = "://" in source.url
    return RunEstimate(height, width, n_years, n_bands, nbytes, measured_rate(source.url), remote)


def check_run_size(
    estimate: RunEstimate, max_pixels: int | None = DEFAULT_MAX_PIXELS, *, local: bool = True
) -> None:
    """Stop a run over the limit with a message naming its size and the ways on."""
    if max_pixels is None:
        return
    limit = int(max_pixels) if local else max(int(max_pixels), CLUSTER_MAX_PIXELS)
    if estimate.pixels <= limit:
        return
    side = math.sqrt(limit) * GSD_METRES / 1000
    ways = (
        "zoom in (or draw a smaller extent), raise the limit (the advanced parameter "
        "MAX_PIXELS; max_pixels= in compute_change_scores, None for none)"
    )
    ways += (
        ", or give a dask scheduler (SCHEDULER) to run it on a cluster."
        if local
        else f"; a scheduler run's limit is at least {megapixels(CLUSTER_MAX_PIXELS)}."
    )
    raise RunTooLargeError(
        f"The extent is too big to run {'here' if local else 'from this computer'}: "
        f"{estimate.width:,} x {estimate.height:,} = {megapixels(estimate.pixels)}, about "
        f"{gigabytes(estimate.nbytes)} to read, about {duration(estimate.seconds)}; the limit "
        f"is {megapixels(limit)} (about a {side:,.0f} x {side:,.0f} km view at 10 m). "
        f"Ways on: {ways}"
    )


def guard_run(source, window, n_years: int, max_pixels, *, local: bool, log) -> RunEstimate:
    """Log the run's estimate, then stop it if it is over the limit."""
    estimate = estimate_run(source, window, n_years)
    log(estimate.describe())
    check_run_size(estimate, max_pixels, local=local)
    return estimate


# Bytes per second reached by earlier runs, per server (scheme and host), in this process.
_rates: dict[str, float] = {}
_rates_lock = threading.Lock()


def note_transfer(url: str, nbytes: int, seconds: float) -> None:
    """Remember what a finished run from a remote store reached, for the next estimates."""
    if "://" not in url or seconds <= 0 or nbytes <= 0:
        return
    with _rates_lock:
        _rates[_server(url)] = nbytes / seconds


def measured_rate(url: str) -> float | None:
    if "://" not in url:
        return None
    with _rates_lock:
        return _rates.get(_server(url))


def _server(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _aligned_span(start: int, stop: int, step: int) -> int:
    return (-(-stop // step) - start // step) * step


def megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:,.1f} Mpx"


def gigabytes(nbytes: int) -> str:
    if nbytes < 1e9:
        return f"{nbytes / 1e6:,.0f} MB"
    return f"{nbytes / 1e9:,.1f} GB"


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:,.0f} days"
