#!/usr/bin/env bash
# The install steps behind scripts/setup.sh, in their own process so that any failing step
# stops the install (set -e does not hold inside a function called left of `||`).
# Idempotent: quick when everything is there. Writes the venv's stamp only when all went well.
#   QGIS and GDAL from Debian's apt (3.22 on Debian 12, 3.40 on Debian 13, 3.44 on sid)
#   .venv: /usr/bin/python3 -m venv --system-site-packages (so `qgis` imports), then ONE pip
#          command with the plugin's lock for this Python (dependencies/locks, QGIS's numpy kept
#          where it serves) and the dev lock (requirements/dev-py3.X.txt), hashes required
#   .venv/qgis-plugins/embedding_change -> the checkout, on the venv's path
#   the scoring kernels compiled into numba's cache (NUMBA_CACHE_DIR, as scripts/setup.sh sets it)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PLUGINS="$VENV/qgis-plugins"
APT_PACKAGES=(qgis python3-qgis qgis-providers gdal-bin python3-gdal python3-venv
  python3-pip xvfb xauth ca-certificates)

log() { printf '[setup] %s\n' "$*" >&2; }
fail() { log "FAILED: $*"; exit 1; }

install_qgis() {
  if [ -x /usr/bin/qgis_process.bin ] && /usr/bin/python3 -c 'import venv, qgis.core' 2>/dev/null \
    && /usr/bin/python3 -m pip --version >/dev/null 2>&1; then
    return
  fi
  log "installing QGIS and GDAL from apt (about a minute)"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo apt-get update -qq 2>"$ROOT/.venv-apt-update.log"; then
    # A mirror snapshot of sid can carry an expired Release file: say so, then accept it.
    grep -q "is expired" "$ROOT/.venv-apt-update.log" \
      || fail "apt-get update (is the Debian mirror reachable?): $(tail -1 "$ROOT/.venv-apt-update.log")"
    log "the Debian mirror's index is past its Valid-Until date; using it anyway"
    $sudo apt-get update -qq -o Acquire::Check-Valid-Until=false || fail "apt-get update"
  fi
  rm -f "$ROOT/.venv-apt-update.log"
  $sudo apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null \
    || fail "apt-get install ${APT_PACKAGES[*]}"
}

link_plugin() {
  # QGIS finds plugins by folder name and Python imports by package name:
  # one link named embedding_change serves both.
  mkdir -p "$PLUGINS"
  ln -sfn "$ROOT" "$PLUGINS/embedding_change"
}

install_venv() {
  local python_tag numpy requirements dev stamp
  python_tag="$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  numpy="$(/usr/bin/python3 -c 'import importlib.metadata as m; print(m.version("numpy"))' \
    2>/dev/null || true)"
  dev="$ROOT/requirements/dev-py$python_tag.txt"
  [ -f "$dev" ] || fail "no dev lock for Python $python_tag ($dev): see scripts/relock.sh"
  mkdir -p "$VENV"
  requirements="$VENV/requirements-py$python_tag.txt"
  # The plugin's own choice of lock and pins for this Python and its numpy (stdlib only).
  PYTHONPATH="$PLUGINS" /usr/bin/python3 -m embedding_change.dependencies.locks \
    ${numpy:+--numpy "$numpy"} >"$requirements.new" || fail "choosing the lock for Python $python_tag"
  cat "$dev" >>"$requirements.new"
  mv "$requirements.new" "$requirements"
  stamp="$VENV/.installed"
  if [ -f "$stamp" ] && cmp -s "$stamp" "$requirements" && [ -x "$VENV/bin/python" ]; then
    return
  fi
  rm -f "$stamp"
  log "creating the venv for Python $python_tag (QGIS's numpy ${numpy:-none}) with the pinned packages"
  [ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$VENV" \
    || fail "python3 -m venv (is python3-venv installed?)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --require-hashes \
    --only-binary :all: -r "$requirements" || fail "pip install -r $requirements"
  local site
  site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$PLUGINS" >"$site/embedding_change_checkout.pth"
  "$VENV/bin/python" -c 'import numba, zarr, xarray, dask, s3fs, pytest, embedding_change' \
    || fail "the venv's packages do not import"
  cp "$requirements" "$stamp"
}

compile_kernels() {
  # Once per venv: a first run (demo, qgis_process) then loads the kernels instead of compiling
  # them for ~40 s. Later edits of the kernels recompile on their first run, as numba does.
  local stamp="$VENV/.kernels-compiled"
  [ -f "$stamp" ] && cmp -s "$stamp" "$VENV/.installed" && return
  log "compiling the scoring kernels into $NUMBA_CACHE_DIR (once, about a minute)"
  if ! "$VENV/bin/python" -m embedding_change.core.compile_kernels >/dev/null; then
    log "could not compile the kernels now: the first run compiles them instead"
    return
  fi
  cp "$VENV/.installed" "$stamp"
}

install_qgis
link_plugin
install_venv
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/embedding_change/kernels}"
compile_kernels
