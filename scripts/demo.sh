#!/usr/bin/env bash
# The main job: change scores for a window of an embedding store, run through qgis_process.
# Generates an AEF-like store unless STORE (and BBOX) name a real one; see scripts/demo.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec python scripts/demo.py "$@"
