"""Check that every pin of every dependency lock has a wheel for every platform the lock serves.

For each lock and each of its platforms, the pins whose environment marker applies there
(evaluated with packaging.markers for that platform, not for this machine) go to one
`pip download --no-deps --only-binary :all: --require-hashes --platform ... --python-version X.Y
--implementation cp` into a temporary folder: pip finds a wheel for each pin, downloads it and
checks it against the lock's hashes. A pin without a wheel is noted and the rest retried, so
the table names every missing package at once. Exits 1 if anything is missing.

    python3 scripts/check_lock_wheels.py                      # every lock x platform
    python3 scripts/check_lock_wheels.py --lock py3.12-numpy1 --platform macos-arm64

Downloads ~100 MB per lock and platform into a temporary folder, deleted after each. pip talks to
PyPI only: this machine's pip configuration (extra indexes, find-links, a global constraint
file) is left out, so the answer is what an analyst's machine gets.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

try:
    from packaging.markers import Marker
    from packaging.requirements import Requirement
except ImportError:  # pip always carries a copy
    from pip._vendor.packaging.markers import Marker
    from pip._vendor.packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent

MANYLINUX_X86_64 = [
    *(f"manylinux_2_{minor}_x86_64" for minor in (5, 12, *range(17, 37))),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
]
MACOS_ARM64 = [
    f"macosx_{major}_0_{arch}" for major in range(11, 16) for arch in ("arm64", "universal2")
]


@dataclass(frozen=True)
class Platform:
    name: str
    tags: list[str]
    markers: dict[str, str]  # the marker variables that differ between platforms


PLATFORMS = {
    platform.name: platform
    for platform in (
        Platform(
            "manylinux-x86_64",
            MANYLINUX_X86_64,
            {
                "os_name": "posix",
                "sys_platform": "linux",
                "platform_system": "Linux",
                "platform_machine": "x86_64",
            },
        ),
        Platform(
            "win-amd64",
            ["win_amd64"],
            {
                "os_name": "nt",
                "sys_platform": "win32",
                "platform_system": "Windows",
                "platform_machine": "AMD64",
            },
        ),
        Platform(
            "macos-arm64",
            MACOS_ARM64,
            {
                "os_name": "posix",
                "sys_platform": "darwin",
                "platform_system": "Darwin",
                "platform_machine": "arm64",
            },
        ),
    )
}

# Every lock and the platforms it serves (see the first lines of each lock).
LOCKS = {
    "dependencies/locks/py3.11-numpy1.txt": ["manylinux-x86_64", "win-amd64", "macos-arm64"],
    "dependencies/locks/py3.12-numpy1.txt": ["win-amd64", "macos-arm64", "manylinux-x86_64"],
    "dependencies/locks/py3.13-numpy2.txt": ["manylinux-x86_64", "win-amd64", "macos-arm64"],
    "dependencies/locks/py3.14-numpy2.txt": ["manylinux-x86_64"],
    "requirements/dev-py3.11.txt": ["manylinux-x86_64"],
    "requirements/dev-py3.13.txt": ["manylinux-x86_64"],
    "requirements/dev-py3.14.txt": ["manylinux-x86_64"],
}


@dataclass(frozen=True)
class Pin:
    requirement: Requirement
    hashes: list[str]

    @property
    def line(self) -> str:
        """The pin for pip, without its marker (already evaluated here)."""
        hashes = " ".join(f"--hash={digest}" for digest in self.hashes)
        return f"{self.requirement.name}{self.requirement.specifier} {hashes}"


def python_version(lock: str) -> str:
    match = re.search(r"py(3\.\d+)", Path(lock).name)
    if not match:
        raise SystemExit(f"{lock}: no py3.X in the name, so no Python version to check for")
    return match.group(1)


def read_pins(path: Path) -> list[Pin]:
    text = re.sub(r"\\\n", " ", path.read_text())
    pins = []
    for line in text.splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        requirement, *hashes = (part.strip() for part in line.split("--hash="))
        if not hashes:
            raise SystemExit(f"{path}: {requirement!r} has no hash")
        pins.append(Pin(Requirement(requirement), hashes))
    return pins


def marker_environment(platform: Platform, python: str) -> dict[str, str]:
    return {
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_version": f"{python}.0",
        "platform_release": "",
        "platform_version": "",
        "extra": "",
        **platform.markers,
    }


def applies(pin: Pin, environment: dict[str, str]) -> bool:
    marker: Marker | None = pin.requirement.marker
    return marker is None or marker.evaluate(environment)


def pip_environment() -> dict[str, str]:
    """This process's environment without pip settings that change where packages come from."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PIP_") or key in ("PIP_CERT", "PIP_DEFAULT_TIMEOUT")
    }
    environment["PIP_CONFIG_FILE"] = os.devnull  # no pip.conf: no extra index, find-links, ...
    environment["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return environment


def pip_download(pins: list[Pin], platform: Platform, python: str, folder: Path):
    """Runs pip download on the pins; returns (names without a wheel, other errors)."""
    requirements = folder / "requirements.txt"
    requirements.write_text("".join(f"{pin.line}\n" for pin in pins))
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--require-hashes",
        "--python-version",
        python,
        "--implementation",
        "cp",
        *(argument for tag in platform.tags for argument in ("--platform", tag)),
        "--dest",
        str(folder / "wheels"),
        "--progress-bar",
        "off",
        "-r",
        str(requirements),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=pip_environment())
    if done.returncode == 0:
        return [], []
    output = done.stdout + done.stderr
    missing = re.findall(r"No matching distribution found for (\S+)", output)
    if missing:
        return [Requirement(spec).name for spec in missing], []
    mismatched = re.findall(r"^\s+(\S+)==\S+ from ", output, re.MULTILINE)
    if "DO NOT MATCH THE HASHES" in output and mismatched:
        return [], [f"hash mismatch: {', '.join(mismatched)}"]
    errors = [line for line in output.splitlines() if line.startswith("ERROR")]
    return [], errors or output.strip().splitlines()[-3:]


def check(lock: str, platform: Platform) -> tuple[int, list[str], list[str]]:
    """(pins checked, pins without a wheel, other errors) for one lock on one platform."""
    python = python_version(lock)
    environment = marker_environment(platform, python)
    pins = [pin for pin in read_pins(ROOT / lock) if applies(pin, environment)]
    left, missing = list(pins), []
    with tempfile.TemporaryDirectory(prefix="lock-wheels-") as folder:
        while left:
            absent, errors = pip_download(left, platform, python, Path(folder))
            if errors:
                return len(pins), missing, errors
            if not absent:
                break
            missing += absent
            left = [pin for pin in left if pin.requirement.name not in absent]
    return len(pins), missing, []


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", help="one lock: its path or name, e.g. py3.12-numpy1")
    parser.add_argument("--platform", choices=sorted(PLATFORMS), help="one platform")
    args = parser.parse_args(argv)

    found = {
        str(path.relative_to(ROOT))
        for pattern in ("dependencies/locks/py3.*.txt", "requirements/dev-py3.*.txt")
        for path in ROOT.glob(pattern)
    }
    unknown = found - set(LOCKS)
    if unknown:
        print(f"Locks with no platforms listed in {Path(__file__).name}: {sorted(unknown)}")
        return 2
    locks = sorted(LOCKS)
    if args.lock:
        locks = [lock for lock in locks if args.lock in (lock, Path(lock).stem, Path(lock).name)]
        if not locks:
            parser.error(f"no lock {args.lock!r}; locks: {', '.join(sorted(LOCKS))}")

    columns = sorted({name for lock in locks for name in LOCKS[lock]})
    if args.platform:
        columns = [args.platform]
    rows, failed = [["lock", *columns]], False
    for lock in locks:
        row = [lock]
        for name in columns:
            if name not in LOCKS[lock]:
                row.append("-")
                continue
            count, missing, errors = check(lock, PLATFORMS[name])
            if errors:
                cell = "error: " + "; ".join(errors)
            elif missing:
                cell = "missing: " + ", ".join(missing)
            else:
                cell = f"ok ({count} wheels)"
            failed |= bool(errors or missing)
            print(f"{lock} on {name}: {cell}", flush=True)
            row.append(cell)
        rows.append(row)
    print()
    print(table(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
