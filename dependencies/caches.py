"""The plugin's cache folders in the QGIS profile: compiled kernels and fetched chunks.

    <profile>/embedding_change/kernels/   numba's cache of the scoring kernels
    <profile>/embedding_change/chunks/    chunks of remote stores (core.chunk_cache)

In a writable folder of the user's, never next to the plugin's files (a system-wide or
managed install can be read-only). NUMBA_CACHE_DIR and EMBEDDING_CHANGE_CACHE_DIR, when set,
take precedence. Stdlib only: the kernel folder is set before the engine imports numba.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

KERNELS_VARIABLE = "NUMBA_CACHE_DIR"
CHUNKS_VARIABLE = "EMBEDDING_CHANGE_CACHE_DIR"  # core.chunk_cache.CACHE_DIR_VARIABLE


def plugin_cache_root(profile: str | Path) -> Path:
    return Path(profile) / "embedding_change"


def kernel_cache_folder(profile: str | Path) -> Path:
    """Where numba keeps the compiled kernels: NUMBA_CACHE_DIR, else the profile's folder."""
    chosen = os.environ.get(KERNELS_VARIABLE, "").strip()
    return Path(chosen) if chosen else plugin_cache_root(profile) / "kernels"


def chunk_cache_folder(profile: str | Path) -> Path:
    """Where remote chunks are kept: EMBEDDING_CHANGE_CACHE_DIR, else the profile's folder."""
    chosen = os.environ.get(CHUNKS_VARIABLE, "").strip()
    return Path(chosen).expanduser() if chosen else plugin_cache_root(profile) / "chunks"


def use_kernel_cache(profile: str | Path) -> Path:
    """Point numba's cache at kernel_cache_folder (before the engine compiles or loads a
    kernel). Process-wide: numba has one cache setting, so other numba users share it."""
    folder = kernel_cache_folder(profile)
    os.environ[KERNELS_VARIABLE] = str(folder)
    numba = sys.modules.get("numba")
    if numba is not None:  # imported already (another plugin): numba read the variable then
        numba.config.CACHE_DIR = str(folder)
    return folder
