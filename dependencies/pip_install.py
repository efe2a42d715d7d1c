"""Install a lock's wheels with pip into a new folder of the profile, then switch to it.

pip runs in a separate process of the Python QGIS embeds (never inside QGIS: inside QGIS on
Windows and macOS sys.executable is QGIS itself). Wheels only, hashes required, no
dependency resolution (the lock is the whole set), nothing written outside the plugin's folder:
QGIS's own site-packages are never touched. A failed or cancelled install removes its new
folder and leaves the previous set active.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import caches
from . import folder as folders
from .locks import Lock, lock_for, pins_to_install, requirements_text
from .requirements import REQUIRED

# The plugin's own folder: the kernels are compiled from its files (numba's cache is per file).
PLUGIN_FOLDER = Path(__file__).absolute().parents[1]
# Compiles the scoring kernels in a new process: the plugin's package is taken from its folder
# whatever that folder is called, without running its __init__ (which is QGIS's entry point).
COMPILE = (
    "import sys, types; "
    "package = types.ModuleType('embedding_change'); package.__path__ = [sys.argv[1]]; "
    "sys.modules['embedding_change'] = package; "
    "from embedding_change.core.compile_kernels import main; sys.exit(main(sys.argv[2:]))"
)

# The verification imports every module the engine needs, from the new folder, in a new process.
VERIFY = (
    "import sys, importlib; "
    "mods = [importlib.import_module(m) for m in sys.argv[1:]]; "
    "print(' '.join(f'{m.__name__}={getattr(m, \"__version__\", \"?\")}' for m in mods))"
)


class InstallError(Exception):
    """The install could not run or failed; the message says why and what to do."""


class InstallCancelledError(InstallError):
    """The analyst cancelled; nothing changed."""


@dataclass
class InstallResult:
    folder: Path
    lock: Lock
    packages: int
    versions: str  # "numba=0.68.1 zarr=3.1.5 ..." as the new process imported them
    needs_numpy_first: bool  # the set carries its own numpy (QGIS's is older in the same major)


def python_candidates() -> list[Path]:
    """Where the Python that QGIS embeds keeps its interpreter, by OS."""
    version = "{}.{}".format(*sys.version_info[:2])
    prefixes = [Path(p) for p in dict.fromkeys([sys.base_exec_prefix, sys.exec_prefix, sys.prefix])]
    names = []
    executable = Path(sys.executable)
    if executable.name.lower().startswith("python"):
        names.append(executable)
    for prefix in prefixes:
        if os.name == "nt":
            # OSGeo4W: apps\Python312\python.exe; the standalone installer the same.
            names += [prefix / "python.exe", prefix / "python3.exe"]
        else:
            # Linux: /usr/bin/python3.11; macOS bundle: Contents/MacOS/bin/python3 (prefix is
            # inside the bundle, its framework's bin holds python3.12).
            names += [prefix / "bin" / f"python{version}", prefix / "bin" / "python3"]
    found = shutil.which(f"python{version}")
    if found:
        names.append(Path(found))
    return list(dict.fromkeys(names))


def find_python() -> Path:
    """An interpreter of this very Python version that can run pip."""
    wanted = "{}.{}".format(*sys.version_info[:2])
    tried = []
    for candidate in python_candidates():
        if not candidate.is_file():
            continue
        try:
            out = subprocess.run(
                [str(candidate), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=60,
                env=_child_environment(),
                **_no_window(),
            )
        except (OSError, subprocess.SubprocessError):
            continue
        version = out.stdout.strip()
        tried.append(f"{candidate} ({version or 'did not run'})")
        if out.returncode == 0 and version == wanted:
            return candidate
    raise InstallError(
        f"Cannot find the Python {wanted} interpreter QGIS runs on (tried "
        f"{', '.join(tried) or ', '.join(map(str, python_candidates()))}). See the README's "
        "manual route."
    )


def pip_version(python: Path) -> str:
    out = subprocess.run(
        [str(python), "-m", "pip", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_child_environment(),
        **_no_window(),
    )
    if out.returncode != 0:
        raise InstallError(
            f"pip is not available for {python}: on Debian or Ubuntu install it with "
            "`sudo apt install python3-pip`, elsewhere see the README's manual route. "
            f"({(out.stderr or out.stdout).strip().splitlines()[-1:]})"
        )
    return out.stdout.split()[1]


def _child_environment() -> dict:
    env = dict(os.environ)
    env["PYTHONNOUSERSITE"] = "1"  # never pick up (or write to) the user's site-packages
    env.pop("PIP_USER", None)
    env.pop("PIP_TARGET", None)
    env.pop("PIP_REQUIRE_VIRTUALENV", None)
    return env


def _no_window() -> dict:
    # No console window flashing up on Windows for each child process.
    return {"creationflags": 0x08000000} if os.name == "nt" else {}


def pip_command(python: Path, target: Path, requirements: Path, wheels: Path | None) -> list[str]:
    command = [
        str(python), "-m", "pip", "install",
        "--target", str(target),
        "--no-deps", "--require-hashes", "--only-binary", ":all:",
        "--no-input", "--disable-pip-version-check", "--progress-bar", "off",
        "--no-warn-script-location",
        "-r", str(requirements),
    ]  # fmt: skip
    if wheels is not None:
        command += ["--no-index", "--find-links", str(wheels)]
    return command


def install(
    profile: str | Path,
    wheels: str | Path | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[float], None] = lambda fraction: None,
    cancelled: Callable[[], bool] = lambda: False,
    lock: Lock | None = None,
) -> InstallResult:
    """Install this Python's lock into a new folder of the profile and make it the active set."""
    root = folders.dependencies_root(profile)
    qgis_numpy = folders.qgis_numpy_version(profile)
    lock = lock or lock_for(numpy_version=qgis_numpy)
    pins = pins_to_install(lock, qgis_numpy)
    wheels = Path(wheels).expanduser().absolute() if wheels else None
    if wheels is not None and not wheels.is_dir():
        raise InstallError(f"The wheel folder {wheels} does not exist.")
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".installing-", dir=root))
    except OSError as exc:
        raise InstallError(
            f"Cannot write to the QGIS profile's folder {root} ({exc.strerror}): install from a "
            "profile you can write to, or see the README's manual route."
        ) from exc
    try:
        python = find_python()
        kept = f", QGIS's numpy {qgis_numpy} kept" if len(pins) < len(lock.pins()) else ""
        log(f"Python {python}, pip {pip_version(python)}; {lock.name}: {len(pins)} packages{kept}.")
        requirements = staging / "requirements.txt"
        requirements.write_text(requirements_text(pins))
        target = staging / "set"
        _run_pip(
            pip_command(python, target, requirements, wheels), len(pins), log, progress, cancelled
        )
        progress(0.95)
        versions = verify(python, target)
        log(f"Checked in a new Python process: {versions}")
        # The staging folder's random part keeps two installs in the same second apart.
        unique = staging.name.rsplit("-", 1)[-1]
        folder = root / f"{lock.name}-{time.strftime('%Y%m%dT%H%M%S')}-{unique}"
        stamp = {
            "lock": lock.name,
            "lock_sha256": lock.sha256(),
            "python": "{}.{}.{}".format(*sys.version_info[:3]),
            "qgis_numpy": qgis_numpy,
            "numpy": next((p.version for p in pins if p.name == "numpy"), qgis_numpy),
            "versions": versions,
            "wheels": str(wheels) if wheels else "the package registry",
            "installed": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (target / folders.STAMP).write_text(_json(stamp))
        os.replace(target, folder)
        folders.switch_to(root, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    remove_old_sets(root, keep=folder)
    compile_kernels(python, folder, caches.kernel_cache_folder(profile), log, cancelled)
    progress(1.0)
    return InstallResult(folder, lock, len(pins), versions, any(p.name == "numpy" for p in pins))


def _json(data: dict) -> str:
    import json

    return json.dumps(data, indent=2) + "\n"


def _child_process(command, env: dict) -> subprocess.Popen:
    """A child whose output (stdout and stderr together) is read as text; no stdin, no window."""
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        env=env,
        **_no_window(),
    )


def _run_pip(command, count, log, progress, cancelled) -> None:
    """Run pip, passing its output to `log` line by line, progress from what it reports."""
    log("Running: " + " ".join(command))
    process = _child_process(command, _child_environment())
    lines: list[str] = []
    reader = threading.Thread(target=_read_lines, args=(process, lines, log, progress, count))
    reader.start()
    try:
        while process.poll() is None:
            if cancelled():
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                raise InstallCancelledError(
                    "Installing the dependencies was cancelled; nothing changed."
                )
            time.sleep(0.1)
    finally:
        reader.join(timeout=10)
    if process.returncode != 0:
        reason = [line for line in lines if "ERROR" in line] or lines[-3:]
        raise InstallError(
            "pip could not install the dependencies: "
            + " ".join(line.strip() for line in reason[:3])
            + " The previous set (if any) stays in use; pip's full output is in the log."
        )


def _read_lines(process, lines, log, progress, count) -> None:
    seen = 0
    for line in process.stdout:
        line = line.rstrip()
        if not line:
            continue
        lines.append(line)
        log(line)
        if line.startswith(("Collecting ", "Processing ")):
            seen += 1
            progress(0.85 * min(seen, count) / max(count, 1))
        elif line.startswith("Installing collected packages"):
            progress(0.88)


def verify(python: Path, folder: Path) -> str:
    """Import every module the engine needs from `folder` first, in a new process."""
    env = _child_environment()
    env["PYTHONPATH"] = os.pathsep.join([str(folder), *filter(None, [env.get("PYTHONPATH")])])
    modules = [requirement.module for requirement in REQUIRED]
    out = subprocess.run(
        [str(python), "-c", VERIFY, *modules],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        **_no_window(),
    )
    if out.returncode != 0:
        last = (out.stderr or out.stdout).strip().splitlines()[-1:]
        raise InstallError(
            f"The installed packages do not import: {' '.join(last)}. The previous set (if any) "
            "stays in use."
        )
    return out.stdout.strip()


def compile_kernels(
    python: Path,
    packages: Path | None,
    cache_folder: Path,
    log: Callable[[str], None] = print,
    cancelled: Callable[[], bool] = lambda: False,
    plugin: Path = PLUGIN_FOLDER,
    year_counts=(),
) -> bool:
    """Compile the scoring kernels once into `cache_folder` (numba's cache), in a new process
    with the installed `packages` first on its path, so the first run loads them. Best effort:
    if it fails or is cancelled, the first run compiles instead (and says so)."""
    env = _child_environment()
    env["NUMBA_CACHE_DIR"] = str(cache_folder)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # nothing written into the plugin's folder
    if packages is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(packages), *filter(None, [env.get("PYTHONPATH")])])
    command = [str(python), "-c", COMPILE, str(plugin), *map(str, year_counts)]
    log(f"Compiling the scoring kernels into {cache_folder} (once; about a minute) …")
    process = _child_process(command, env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    while process.poll() is None:
        if cancelled():
            process.kill()
            log("Compiling the kernels was cancelled: the first run compiles them instead.")
            return False
        time.sleep(0.1)
    reader.join(timeout=10)
    for line in lines:
        log(line.rstrip())
    if process.returncode != 0:
        log("Could not compile the kernels now: the first run compiles them instead.")
        return False
    return True


STALE_STAGING = 24 * 3600  # seconds after which a staging folder is a killed install's


def remove_old_sets(root: Path, keep: Path) -> None:
    """Best effort: a set still loaded by a running QGIS (Windows locks its DLLs) stays, and so
    does another install's staging folder unless it was left by a killed one long ago."""
    for child in root.iterdir():
        if not child.is_dir() or child == keep or str(child) in sys.path:
            continue
        staging = child.name.startswith(".installing-")
        if staging and time.time() - child.stat().st_mtime < STALE_STAGING:
            continue
        shutil.rmtree(child, ignore_errors=True)
