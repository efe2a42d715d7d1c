"""The plugin's dependency folder in a QGIS profile, and putting it on sys.path.

    <profile>/python/dependencies/embedding_change/py3.11/
        current                     the name of the active set (switched only when complete)
        py3.11-numpy1-20261201T0930/  one installed set: the packages, and stamp.json

One folder per Python minor, so a QGIS upgrade to another Python never loads wheels built for
the old one. The stamp (lock hash, Python, QGIS's numpy) says when a set should be installed
again. Where the set carries its own numpy (QGIS's is older within the major), that numpy must
load before QGIS's: QGIS's Processing plugin imports numpy at start, before any other plugin, so
a block in QGIS's start-up script (run before plugins) puts the set first; see startup_hook.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .requirements import version_tuple

PLUGIN = "embedding_change"
POINTER = "current"
STAMP = "stamp.json"


def python_tag(python=None) -> str:
    major, minor = tuple(python or sys.version_info[:2])
    return f"py{major}.{minor}"


def dependencies_root(profile: str | Path, python=None) -> Path:
    """<profile>/python/dependencies/embedding_change/py<major>.<minor>"""
    return Path(profile) / "python" / "dependencies" / PLUGIN / python_tag(python)


def active_set(profile: str | Path, python=None) -> Path | None:
    """The installed set the pointer names, if it is there."""
    root = dependencies_root(profile, python)
    try:
        name = (root / POINTER).read_text().strip()
    except OSError:
        return None
    folder = root / name
    return folder if name and (folder / STAMP).is_file() else None


def read_stamp(folder: Path) -> dict:
    try:
        return json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        return {}


def switch_to(root: Path, folder: Path) -> None:
    """Make `folder` the active set in one atomic step (a half-written pointer is never read)."""
    partial = root / f".{POINTER}.{os.getpid()}"
    partial.write_text(folder.name + "\n")
    os.replace(partial, root / POINTER)


def qgis_numpy_version(profile: str | Path | None = None) -> str | None:
    """The version of the numpy QGIS itself provides, ignoring the plugin's folders."""
    ours = str(Path(profile) / "python" / "dependencies") if profile else None
    path = [p for p in sys.path if not (ours and p.startswith(ours))]
    for distribution in importlib.metadata.distributions(path=path):
        if (distribution.metadata["Name"] or "").lower() == "numpy":
            return distribution.version
    return None


@dataclass
class Activation:
    """What putting the plugin's set on sys.path did."""

    folder: Path | None  # the active set, None when nothing is installed
    active: bool = False  # it is on sys.path
    problems: list[str] | None = None  # what keeps it from working (for the notice)
    reinstall: str | None = None  # why it should be installed again


def stale_reason(stamp: dict, lock_sha256: str, qgis_numpy: str | None) -> str | None:
    """Why a set no longer matches this plugin and QGIS, or None."""
    if stamp.get("python", "").split(".")[:2] != [str(v) for v in sys.version_info[:2]]:
        return f"it was installed for Python {stamp.get('python')}"
    if stamp.get("qgis_numpy") != qgis_numpy:
        return (
            f"QGIS's numpy changed since it was installed ({stamp.get('qgis_numpy')} -> "
            f"{qgis_numpy}): QGIS was upgraded"
        )
    if stamp.get("lock_sha256") != lock_sha256:
        return "the plugin was updated and pins other versions"
    return None


def activate(profile: str | Path, lock_sha256: str | None = None) -> Activation:
    """Put the profile's active set first on sys.path (once), and say what stands in its way.

    A set is still put on the path when it is stale but was built for this Python and numpy
    major (it most likely works; the notice asks for a reinstall); not when its numpy major or
    Python differ, where its compiled wheels cannot load.
    """
    folder = active_set(profile)
    if folder is None:
        return Activation(None)
    stamp = read_stamp(folder)
    qgis_numpy = qgis_numpy_version(profile)
    activation = Activation(folder, problems=[])
    if lock_sha256 is not None:
        activation.reinstall = stale_reason(stamp, lock_sha256, qgis_numpy)
    stamped_major = version_tuple(stamp.get("qgis_numpy") or "0")[:1]
    if qgis_numpy and version_tuple(qgis_numpy)[:1] != stamped_major:
        activation.problems.append(
            f"The installed dependencies were built for numpy {stamp.get('qgis_numpy')}, "
            f"QGIS now has numpy {qgis_numpy}: install the dependencies again."
        )
        return activation
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
        importlib.invalidate_caches()
    activation.active = True
    loaded = sys.modules.get("numpy")
    if (folder / "numpy").is_dir() and loaded is not None:
        origin = str(Path(getattr(loaded, "__file__", "") or "").resolve())
        if not origin.startswith(str(folder.resolve())):
            activation.problems.append(
                f"QGIS loaded its numpy {getattr(loaded, '__version__', '?')} before the plugin "
                f"could load numpy {stamp.get('numpy', '')} from its dependencies. Restart QGIS: "
                "a block in QGIS's start-up script (startup.py) loads it first from then on. "
                "If this stays, another start-up script or plugin imports numpy first: see the "
                "README's manual route."
            )
    return activation


# The block QGIS's start-up script runs before any plugin (QGIS runs startup.py from its
# application data folder, e.g. ~/.local/share/QGIS/QGIS3, %APPDATA%\QGIS\QGIS3, before
# loading plugins, for every profile and for qgis_process too). It only puts the current
# profile's set first when that set carries its own numpy and the plugin is installed there.
HOOK_BEGIN = "# >>> embedding_change: load its numpy first (written by its installer)"
HOOK_END = "# <<< embedding_change"
HOOK_BODY = """\
def _embedding_change_numpy_first():
    import os
    import sys

    try:
        from qgis.core import QgsApplication

        profile = QgsApplication.qgisSettingsDirPath()
        root = os.path.join(
            profile, "python", "dependencies", "embedding_change", "py%d.%d" % sys.version_info[:2]
        )
        with open(os.path.join(root, "current")) as pointer:
            folder = os.path.join(root, pointer.read().strip())
        plugin = os.path.join(profile, "python", "plugins", "embedding_change")
        if os.path.isdir(os.path.join(folder, "numpy")) and os.path.isdir(plugin):
            if folder not in sys.path:
                sys.path.insert(0, folder)
    except Exception:
        pass


_embedding_change_numpy_first()
del _embedding_change_numpy_first
"""


def startup_script(app_data: str | Path) -> Path:
    return Path(app_data) / "startup.py"


def install_startup_hook(app_data: str | Path) -> Path:
    """Add (or refresh) the block in QGIS's start-up script, keeping whatever else is there."""
    path = startup_script(app_data)
    text = remove_hook_text(path.read_text() if path.is_file() else "")
    if text and not text.endswith("\n"):
        text += "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{text}{HOOK_BEGIN}\n{HOOK_BODY}{HOOK_END}\n")
    return path


def remove_startup_hook(app_data: str | Path) -> None:
    path = startup_script(app_data)
    if path.is_file():
        text = remove_hook_text(path.read_text())
        if text.strip():
            path.write_text(text)
        else:
            path.unlink()


def remove_hook_text(text: str) -> str:
    begin = text.find(HOOK_BEGIN)
    end = text.find(HOOK_END, begin)
    if begin < 0 or end < 0:
        return text
    return text[:begin] + text[end + len(HOOK_END) :].lstrip("\n")
