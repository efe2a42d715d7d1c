#!/usr/bin/env bash
# Installs what the project needs, idempotently: QGIS 3.22 from Debian's apt,
# a venv made from the system Python (so `qgis` imports) with the pinned pip
# packages, and a plugin folder that makes the checkout import as
# `embedding_change` whatever its folder is called.
# Quick when everything is already there. Source it to get the environment:
#   source scripts/setup.sh        (or run it: bash scripts/setup.sh)
#   bash scripts/setup.sh --relock (re-resolve requirements.in into requirements.lock)
# Sourced, it leaves the calling shell's options alone: the install steps run in a subshell.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PLUGINS="$VENV/qgis-plugins"
APT_PACKAGES=(qgis python3-qgis qgis-providers gdal-bin python3-gdal python3-venv
  python3-pip xvfb xauth)

log() { printf '[setup] %s\n' "$*" >&2; }

install_qgis() {
  if [ -x /usr/bin/qgis_process.bin ] && /usr/bin/python3 -c 'import venv, qgis.core' 2>/dev/null; then
    return
  fi
  log "installing QGIS and GDAL from apt (about a minute)"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
}

install_venv() {
  local stamp="$VENV/.requirements.lock"
  if [ -f "$stamp" ] && cmp -s "$stamp" "$ROOT/requirements.lock"; then
    return
  fi
  log "creating the venv with the pinned packages (about a minute)"
  [ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$ROOT/requirements.lock"
  cp "$ROOT/requirements.lock" "$stamp"
}

relock() {
  local tmp
  tmp="$(mktemp -d)"
  /usr/bin/python3 -m venv --system-site-packages "$tmp/venv"
  # One pip command with everything, so numpy<2 holds for every package.
  "$tmp/venv/bin/python" -m pip install -q -r "$ROOT/requirements.in"
  {
    sed -n '1,/^# Regenerate/p' "$ROOT/requirements.lock"
    "$tmp/venv/bin/python" -m pip freeze --local
  } >"$ROOT/requirements.lock.new"
  mv "$ROOT/requirements.lock.new" "$ROOT/requirements.lock"
  rm -rf "$tmp"
  log "requirements.lock rewritten"
}

link_plugin() {
  # QGIS finds plugins by folder name and Python imports by package name:
  # one link named embedding_change serves both.
  mkdir -p "$PLUGINS"
  ln -sfn "$ROOT" "$PLUGINS/embedding_change"
  local site
  site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$PLUGINS" >"$site/embedding_change_checkout.pth"
}

if [ "${1:-}" = "--relock" ]; then
  (set -euo pipefail; install_qgis; relock) || exit 1
  exit 0
fi

(set -euo pipefail; install_qgis; install_venv; link_plugin) || {
  log "set-up failed: see the messages above"
  return 1 2>/dev/null || exit 1
}

# The environment QGIS, qgis_process and the tests need (PLATFORM.md).
export PATH="$VENV/bin:$PATH"
export QT_QPA_PLATFORM=offscreen
export QGIS_PLUGINPATH="$PLUGINS"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/runtime-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
export EMBEDDING_CHANGE_VENV="$VENV"
