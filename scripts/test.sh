#!/usr/bin/env bash
# Runs the whole test suite (engine, QGIS, style) after installing what it needs.
# Extra arguments go to pytest, e.g.: bash scripts/test.sh tests/core -k medoid
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec python -m pytest "$@"
