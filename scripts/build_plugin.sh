#!/usr/bin/env bash
# Builds the zip an analyst installs and the QGIS plugin repository takes:
#   bash scripts/build_plugin.sh [--out-dir DIR]     (default: dist/; or OUT_DIR=DIR)
# writes DIR/embedding_change-<version>.zip (version from metadata.txt) and prints its path.
#
# What goes in: the files git tracks plus untracked ones it does not ignore (so new,
# uncommitted files build), under the top-level entries in PLUGIN_ENTRIES only: a new
# top-level folder ships once it is added there. Caches never ship. Entries are sorted and
# carry a fixed timestamp and mode, so the same tree gives the same bytes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# What QGIS loads and the repository needs; layers/, gui/ and dependencies/ when they exist.
PLUGIN_ENTRIES=(metadata.txt LICENSE __init__.py provider algorithms core dependencies layers gui
  resources models)
PACKAGE=embedding_change

OUT_DIR="${OUT_DIR:-$ROOT/dist}"
while [ $# -gt 0 ]; do
  case "$1" in
    --out-dir) OUT_DIR="$2"; shift 2 ;;
    --out-dir=*) OUT_DIR="${1#*=}"; shift ;;
    -h | --help) sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build_plugin: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

# The system Python where there is one (Debian's), so builds on a machine agree byte for byte.
PYTHON="${PYTHON:-$(command -v /usr/bin/python3 || command -v python3)}"

# The zip writer; it reads the NUL-separated file list on standard input.
BUILD_ZIP="$(cat <<'PY'
import configparser
import sys
import zipfile
from pathlib import Path

root, out_dir, package = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
CACHES = {"__pycache__", ".pytest_cache", ".ruff_cache"}
CACHE_SUFFIXES = (".pyc", ".pyo", ".nbi", ".nbc")
STAMP = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold

metadata = configparser.ConfigParser(interpolation=None)
metadata.read(root / "metadata.txt", encoding="utf-8")
version = metadata["general"]["version"].strip()

# --cached also lists tracked files deleted in the work tree: those are gone, skip them.
names = sorted(
    {
        name
        for name in sys.stdin.buffer.read().decode().split("\0")
        if name
        and (root / name).is_file()
        and not CACHES.intersection(name.split("/"))
        and not name.endswith(CACHE_SUFFIXES)
    }
)
if "LICENSE" not in names or "metadata.txt" not in names:
    sys.exit("build_plugin: LICENSE and metadata.txt must be in the checkout")
parts = [name.split("/") for name in names]
folders = sorted({"/".join(p[:i]) for p in parts for i in range(1, len(p))})


def entry(name, mode):
    info = zipfile.ZipInfo(f"{package}/{name}", STAMP)
    info.external_attr = mode << 16
    info.create_system = 3  # unix, so the mode means the same everywhere
    return info


out_dir.mkdir(parents=True, exist_ok=True)
target = out_dir / f"{package}-{version}.zip"
partial = target.with_suffix(".zip.partial")
with zipfile.ZipFile(partial, "w") as archive:
    top = entry("", 0o40755)
    archive.writestr(top, b"")
    for name in sorted([f"{folder}/" for folder in folders] + names):
        if name.endswith("/"):
            archive.writestr(entry(name, 0o40755), b"")
        else:
            info = entry(name, 0o100644)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, (root / name).read_bytes(), compresslevel=9)
partial.replace(target)
print(target)
PY
)"

git -C "$ROOT" ls-files -z --cached --others --exclude-standard -- "${PLUGIN_ENTRIES[@]}" |
  "$PYTHON" -c "$BUILD_ZIP" "$ROOT" "$OUT_DIR" "$PACKAGE"
