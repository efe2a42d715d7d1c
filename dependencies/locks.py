"""The pinned dependency sets: one lock per (Python minor, numpy major) of the QGIS builds
analysts run, and what of a lock this Python needs installed.

Locks live in locks/ as `py<major>.<minor>-numpy<N>.txt`, pip requirements with hashes for every
wheel (scripts/relock.sh writes them). QGIS owns its numpy, GDAL and PyQt: the installer never
replaces them, except that a numpy older than the lock's within the same major (Debian 12 ships
1.24; zarr 3 and xarray need 1.26) is served by the lock's numpy, loaded first (folder.py).
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .requirements import version_tuple

LOCKS = Path(__file__).resolve().parent / "locks"
# Never installed by the plugin: QGIS's own bindings and what they are built against.
QGIS_OWNED = frozenset({"gdal", "pyqt5", "pyqt6", "pyqt5-sip", "pyqt6-sip", "sip", "qgis"})
LOCK_NAME = re.compile(r"py(\d+)\.(\d+)-numpy(\d+)\.txt")


class LockError(Exception):
    """No lock serves this Python; the message says what to do instead."""


@dataclass(frozen=True)
class Pin:
    name: str  # normalised: lower case, '-' for '_' and '.'
    version: str
    text: str  # the whole requirement, hashes and marker included, on one line


@dataclass(frozen=True)
class Lock:
    path: Path
    python: tuple[int, int]
    numpy_major: int

    @property
    def name(self) -> str:
        return self.path.stem

    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def pins(self) -> list[Pin]:
        return parse_pins(self.path.read_text())

    def numpy_pin(self) -> str:
        return next(pin.version for pin in self.pins() if pin.name == "numpy")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_pins(text: str) -> list[Pin]:
    """The `name==version ... --hash=...` entries of a requirements file, continuations joined."""
    pins = []
    joined = re.sub(r"\\\s*\n", " ", text)
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;]+)", line)
        if match is None:
            raise LockError(f"Cannot read the lock line {line[:80]!r}: expected name==version.")
        pins.append(Pin(normalise(match[1]), match[2], " ".join(line.split())))
    return pins


def available_locks(folder: Path = LOCKS) -> list[Lock]:
    locks = []
    for path in sorted(folder.glob("py*-numpy*.txt")):
        match = LOCK_NAME.fullmatch(path.name)
        if match:
            locks.append(Lock(path, (int(match[1]), int(match[2])), int(match[3])))
    return locks


def lock_for(python=None, numpy_version: str | None = None, folder: Path = LOCKS) -> Lock:
    """The lock for this Python minor and QGIS's numpy major (any, when QGIS has no numpy)."""
    python = tuple(python or sys.version_info[:2])
    locks = [lock for lock in available_locks(folder) if lock.python == python]
    if not locks:
        served = ", ".join(
            f"{a}.{b}" for a, b in sorted({lock.python for lock in available_locks(folder)})
        )
        oldest = min(available_locks(folder), key=lambda lock: lock.python).python
        hint = (
            f" The dependencies (zarr 3, xarray) need Python {oldest[0]}.{oldest[1]} or newer: "
            "QGIS 3.44 or newer ships one on macOS, or see the README's manual route."
            if python < oldest
            else " See the README's manual route."
        )
        raise LockError(
            f"No pinned set for Python {python[0]}.{python[1]} (sets exist for {served})." + hint
        )
    if numpy_version:
        major = version_tuple(numpy_version)[0]
        same = [lock for lock in locks if lock.numpy_major == major]
        if not same:
            served = ", ".join(f"Python {a}.{b} with numpy {n}" for (a, b), n in _families(folder))
            raise LockError(
                f"No pinned set for Python {python[0]}.{python[1]} with numpy {numpy_version}: "
                f"the plugin's sets serve {served}, and QGIS's own numpy must not be replaced "
                "by another major version. See the README's manual route."
            )
        return same[0]
    return max(locks, key=lambda lock: lock.numpy_major)


def _families(folder: Path):
    return sorted({(lock.python, lock.numpy_major) for lock in available_locks(folder)})


def pins_to_install(lock: Lock, qgis_numpy: str | None) -> list[Pin]:
    """The lock's pins minus what QGIS provides: its bindings always, its numpy when it is of
    the lock's major and not older than the lock's pin."""
    pins = []
    for pin in lock.pins():
        if pin.name in QGIS_OWNED:
            continue
        if pin.name == "numpy" and qgis_numpy and numpy_serves(qgis_numpy, pin.version):
            continue
        pins.append(pin)
    return pins


def numpy_serves(qgis_numpy: str, pinned: str) -> bool:
    have, want = version_tuple(qgis_numpy), version_tuple(pinned)
    return have[:1] == want[:1] and have[:2] >= want[:2]


def requirements_text(pins: list[Pin]) -> str:
    return "".join(pin.text + "\n" for pin in pins)


def main(argv=None) -> int:
    """`python -m embedding_change.dependencies.locks [--numpy VERSION]`: print this Python's
    requirements (for the project's own venv, scripts/setup.sh)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--numpy", help="the numpy the environment already has (none: install)")
    parser.add_argument("--which", action="store_true", help="print the lock's path only")
    args = parser.parse_args(argv)
    try:
        lock = lock_for(numpy_version=args.numpy)
    except LockError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.which:
        print(lock.path)
    else:
        sys.stdout.write(requirements_text(pins_to_install(lock, args.numpy)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
