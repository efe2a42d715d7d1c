#!/usr/bin/env bash
# Installs what the project needs (scripts/install.sh: QGIS from Debian's apt, a venv from the
# system Python with the pinned packages for its version, a link that makes the checkout import
# as `embedding_change`), then sets up the environment. Quick when everything is there.
#   source scripts/setup.sh   (or run it: bash scripts/setup.sh)
# Sourced, it leaves the calling shell's options alone. A failed step stops with a message.
# New pins: bash scripts/relock.sh

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

bash "$ROOT/scripts/install.sh" || {
  printf '[setup] set-up failed: see the messages above\n' >&2
  return 1 2>/dev/null || exit 1
}

# The environment QGIS, qgis_process and the tests need (PLATFORM.md).
export PATH="$VENV/bin:$PATH"
export QT_QPA_PLATFORM=offscreen
export QGIS_PLUGINPATH="$VENV/qgis-plugins"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/runtime-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
export EMBEDDING_CHANGE_VENV="$VENV"
# The kernels scripts/install.sh compiled (a user folder: never next to the checkout's files).
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/embedding_change/kernels}"
