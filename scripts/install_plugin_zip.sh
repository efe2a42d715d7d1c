#!/usr/bin/env bash
# Installs a built plugin zip into a QGIS profile folder as the Plugin Manager would, enabled:
#   bash scripts/install_plugin_zip.sh dist/embedding_change-0.2.0.zip PROFILES_DIR
# unpacks it into PROFILES_DIR/profiles/default/python/plugins/ (replacing an earlier copy)
# and sets [PythonPlugins] <plugin>=true in PROFILES_DIR/profiles/default/QGIS/QGIS3.ini.
# Then, for the analyst's QGIS with nothing of this project's venv on PATH:
#   QGIS_CUSTOM_CONFIG_PATH=PROFILES_DIR PATH=/usr/bin:/bin QT_QPA_PLATFORM=offscreen \
#     qgis_process.bin list
# Prints the installed plugin folder.
set -euo pipefail
if [ $# -ne 2 ]; then
  sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
ZIP="$1"
PROFILE="$2/profiles/default"
PYTHON="${PYTHON:-$(command -v /usr/bin/python3 || command -v python3)}"

INSTALL="$(cat <<'PY'
import shutil
import sys
import zipfile
from pathlib import Path

archive_path, profile = Path(sys.argv[1]), Path(sys.argv[2])
with zipfile.ZipFile(archive_path) as archive:
    tops = {name.split("/")[0] for name in archive.namelist()}
    if len(tops) != 1:
        sys.exit(f"install_plugin_zip: want one top folder in {archive_path}, found {sorted(tops)}")
    (plugin,) = tops
    if any(".." in name.split("/") or name.startswith("/") for name in archive.namelist()):
        sys.exit(f"install_plugin_zip: {archive_path} has paths outside its folder")
    plugins = profile / "python" / "plugins"
    shutil.rmtree(plugins / plugin, ignore_errors=True)
    plugins.mkdir(parents=True, exist_ok=True)
    archive.extractall(plugins)

# QGIS3.ini is QSettings' INI: edit the one line, leave the rest as QGIS wrote it.
ini = profile / "QGIS" / "QGIS3.ini"
ini.parent.mkdir(parents=True, exist_ok=True)
lines = ini.read_text(encoding="utf-8").splitlines() if ini.exists() else []
setting = f"{plugin}=true"
section, last = None, 0
for i, line in enumerate(lines):
    if line.startswith("["):
        if section == "[PythonPlugins]":
            lines.insert(last + 1, setting)
            break
        section = line.strip()
    elif section == "[PythonPlugins]" and line.split("=")[0].strip() == plugin:
        lines[i] = setting
        break
    if line.strip():
        last = i
else:
    if section != "[PythonPlugins]":
        lines += ["", "[PythonPlugins]"] if lines else ["[PythonPlugins]"]
    lines.append(setting)
ini.write_text("\n".join(lines) + "\n", encoding="utf-8")
print(plugins / plugin)
PY
)"

"$PYTHON" -c "$INSTALL" "$ZIP" "$PROFILE"
