#!/usr/bin/env bash
# Regenerates every dependency lock in one go:
#   dependencies/locks/py3.X-numpyN.txt  the plugin's runtime packages (runtime.in), one lock per
#                                        (Python minor, numpy major) of the QGIS builds analysts
#                                        run; universal (all OSes), hashed, wheels only
#   requirements/dev-py3.X.txt           the test venv's extras (requirements/dev.in) for Linux
#                                        x86_64, resolved together with runtime.in against the
#                                        runtime lock, listing only what that lock lacks
# Usage: bash scripts/relock.sh            keep every pin that still resolves (idempotent: a second
#                                          run rewrites the same files)
#        bash scripts/relock.sh --upgrade  move every pin to the newest release allowed
# Then: python3 scripts/check_lock_wheels.py (every pin has a wheel on every platform served).
# uv comes from a throwaway venv ($UV_VENV, /tmp/embedding-change-uv by default), always PyPI.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

UV_VERSION=0.13.9
UV_VENV="${UV_VENV:-/tmp/embedding-change-uv}"
UPGRADE=()
case "${1:-}" in
  "") ;;
  --upgrade) UPGRADE=(--upgrade) ;;
  *) echo "usage: bash scripts/relock.sh [--upgrade]" >&2; exit 2 ;;
esac

if [ "$("$UV_VENV/bin/uv" --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  python3 -m venv "$UV_VENV"
  "$UV_VENV/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
# --no-config: no uv.toml of this machine or user; uv's default index (the public registry),
# whatever pip.conf says.
UV=("$UV_VENV/bin/uv" --no-config pip compile
  --generate-hashes --only-binary :all: --no-header "${UPGRADE[@]}")
# With wheels only, uv never builds: the interpreter it finds is fine, it need not download one.
export UV_NO_PROGRESS=1 UV_PYTHON_DOWNLOADS=never

LOCKS=dependencies/locks
# python | family | constraints file | QGIS builds served | platforms checked
RUNTIME=(
  "3.11|numpy1|numpy1-py3.11.constraints|Debian 12 QGIS 3.22 (system numpy 1.24.2: this lock installs numpy 1.26.4, which zarr 3 and xarray need)|manylinux x86_64, win_amd64, macOS arm64"
  "3.12|numpy1|numpy1-py3.12.constraints|Windows OSGeo4W/standalone QGIS 3.40 and 3.44, macOS QGIS 3.44 (numpy 1.26; numpy 2 crashes them)|win_amd64, macOS arm64, manylinux x86_64"
  "3.13|numpy2|numpy2-py3.13.constraints|Debian 13 QGIS 3.40 (system numpy 2.2.4)|manylinux x86_64, win_amd64, macOS arm64"
  "3.14|numpy2|numpy2-py3.14.constraints|Debian sid QGIS 3.44 (system numpy 2.4.6)|manylinux x86_64"
)
# Dev locks: the Linux QGIS builds' Pythons (the project's tests run on Debian).
DEV_PYTHONS=(3.11 3.13 3.14)
# Debian 12's glibc 2.36 is the oldest of the Linux builds served.
DEV_PLATFORM=x86_64-manylinux_2_36

# compile OUT HEADER ARGS...: uv pip compile into OUT, starting from OUT's current pins, and put
# HEADER (comment lines) on top.
compile() {
  local out="$1" header="$2"
  shift 2
  local tmp
  tmp="$(mktemp "$out.XXXX")"
  [ -f "$out" ] && cp "$out" "$tmp"
  # uv says it builds with this machine's Python for any other version: never, with wheels only.
  { "${UV[@]}" "$@" -o "$tmp" 2>&1 >/dev/null; } |
    { grep -v "is not available; .* will be used to build dependencies" >&2 || true; }
  { printf '%s\n' "$header"; grep -v '^# ' "$tmp" | sed '/./,$!d'; } >"$out.new"
  rm -f "$tmp"
  mv "$out.new" "$out"
  echo "wrote $out ($(grep -c '^[a-z0-9]' "$out") packages)"
}

lock_for() { # the runtime lock of a Python minor
  local entry
  for entry in "${RUNTIME[@]}"; do
    IFS='|' read -r python family _ <<<"$entry"
    [ "$python" = "$1" ] && echo "$LOCKS/py$python-$family.txt" && return
  done
  return 1
}

for entry in "${RUNTIME[@]}"; do
  IFS='|' read -r python family constraints serves platforms <<<"$entry"
  out="$LOCKS/py$python-$family.txt"
  args=("$LOCKS/runtime.in" -c "$LOCKS/$constraints" --universal --python-version "$python")
  compile "$out" "# Runtime lock, Python $python, numpy ${family#numpy}.x: serves $serves.
# Wheels checked for: $platforms (python3 scripts/check_lock_wheels.py).
# Regenerate (all locks at once): bash scripts/relock.sh
#   which runs: uv pip compile ${args[*]} --generate-hashes --only-binary :all: -o $out
# Install: pip install --no-deps --require-hashes --only-binary :all: -r $out" "${args[@]}"
done

for python in "${DEV_PYTHONS[@]}"; do
  runtime="$(lock_for "$python")"
  constraints="$(grep -l "^numpy" "$LOCKS"/numpy*-py"$python".constraints)"
  out="requirements/dev-py$python.txt"
  # Everything the runtime lock pins stays out of this one (it is installed from there).
  no_emit=()
  for name in $(grep -o '^[a-z0-9][a-z0-9._-]*' "$runtime"); do
    no_emit+=(--no-emit-package "$name")
  done
  args=(requirements/dev.in "$LOCKS/runtime.in" -c "$runtime" -c "$constraints"
    --python-version "$python" --python-platform "$DEV_PLATFORM")
  compile "$out" "# Dev lock, Python $python, Linux x86_64: the test venv's packages on top of $runtime
# (resolved together with runtime.in against that lock; only what it does not pin is listed).
# Regenerate (all locks at once): bash scripts/relock.sh
#   which runs: uv pip compile ${args[*]} --generate-hashes --only-binary :all: --no-emit-package <each package of $runtime> -o $out
# Install both at once, in a /usr/bin/python3 -m venv --system-site-packages venv:
#   pip install --no-deps --require-hashes --only-binary :all: -r $runtime -r $out" \
    "${args[@]}" "${no_emit[@]}"
done
