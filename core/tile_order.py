"""Which blocks a run scores first, and telling a viewer as each output tile is written.

A run shown while it is computed (the QGIS desktop's live layers) scores the blocks nearest the
window's centre first, so the middle of the analyst's view fills in first, and reports every
tile as it is written. Both work on the task keys core.block_tasks.tile_writes makes:
("change-scores-<token>", row0, col0) for a block, ("write-tile-<token>", y0, x0) for a write.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .output import OUTPUT_CHUNK
from .window import PixelWindow

BLOCK_KEY = "change-scores-"


def centre_first_rank(window: PixelWindow, chunk: tuple[int, int]) -> Callable[[object], float]:
    """run_tasks(first=...): a block's distance from its centre to the window's centre, in pixels.

    Anything but a block (the task creating the output) ranks before every block.
    """
    cy, cx = (window.row0 + window.row1) / 2, (window.col0 + window.col1) / 2

    def rank(key) -> float:
        if not (isinstance(key, tuple) and len(key) == 3 and str(key[0]).startswith(BLOCK_KEY)):
            return -1.0
        _, row0, col0 = key  # the block's top-left pixel; the block ends at a chunk edge
        row1 = min((row0 // chunk[0] + 1) * chunk[0], window.row1)
        col1 = min((col0 // chunk[1] + 1) * chunk[1], window.col1)
        return math.hypot((row0 + row1) / 2 - cy, (col0 + col1) / 2 - cx)

    return rank


def tile_reporter(
    on_tile: Callable[[str, int, int, int, int], None] | None,
    url: str,
    window: PixelWindow,
    log: Callable[[str], None],
) -> Callable[[object], None] | None:
    """run_tasks(on_done=...): a finished write's key -> on_tile(url, y0, x0, height, width)."""
    if on_tile is None:
        return None
    ny, nx = window.shape
    failed = []

    def report(key) -> None:
        _, y0, x0 = key
        try:
            on_tile(url, y0, x0, min(OUTPUT_CHUNK, ny - y0), min(OUTPUT_CHUNK, nx - x0))
        except Exception as exc:  # noqa: BLE001 (a viewer's failure must not end the run)
            if not failed:
                failed.append(exc)
                log(f"Showing the tiles as they are written stopped: {exc}")

    return report
