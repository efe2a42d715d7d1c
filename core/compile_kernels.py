"""Compile the scoring kernels ahead of the first run, into numba's cache.

The dependency installer (dependencies/pip_install.py) and scripts/install.sh run it once after
installing, so an analyst's first run loads the kernels (~1 s) instead of compiling them
(~40 s for the four copies). numba keeps them where NUMBA_CACHE_DIR says: the plugin points it
at a folder of the QGIS profile (dependencies/caches.py), never next to the plugin's files,
which may be read-only.

    python -m embedding_change.core.compile_kernels [YEARS ...]
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np

from . import kernels

# The mosaic's 9 years first, then next year's 10 and 8; 0 stands for any other count.
YEAR_COUNTS = (9, 10, 8, 0)
OTHER_COUNT = 5  # a count without a copy of its own: compiles the general one


def compile_kernels(
    year_counts=YEAR_COUNTS, dtype=np.int8, log: Callable[[str], None] = print
) -> float:
    """Compile (or load) the kernel for int8 blocks of each year count; total seconds."""
    total = 0.0
    for count in year_counts:
        seconds = kernels.warm_up(dtype, count or OTHER_COUNT)
        total += seconds
        which = f"{count} years" if count else "other year counts"
        log(f"Scoring kernel for {which}: {seconds:.1f} s")
    return total


def main(argv=None) -> int:
    counts = tuple(int(v) for v in (sys.argv[1:] if argv is None else argv)) or YEAR_COUNTS
    total = compile_kernels(counts)
    print(f"Scoring kernels ready in {total:.1f} s (numba's cache: later runs load them).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
