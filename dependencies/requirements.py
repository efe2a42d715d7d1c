"""What the engine needs from Python, and whether the running Python has it.

Nothing here imports the packages it checks (numba alone takes a second, and an old numpy
imported too early cannot be replaced): it finds them on sys.path and reads their metadata.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Requirement:
    module: str  # what `import` takes
    distribution: str  # the name pip and importlib.metadata know
    minimum: str  # oldest version the engine is tested with


# The engine's imports (core/*.py). Minimums: numpy 1.26 for zarr 3 and xarray; the rest are the
# oldest releases with the APIs the engine calls (zarr 3.1's sharding and dtype system, xarray's
# datatree).
REQUIRED = (
    Requirement("numpy", "numpy", "1.26"),
    Requirement("numba", "numba", "0.60"),
    Requirement("zarr", "zarr", "3.1"),
    Requirement("numcodecs", "numcodecs", "0.15"),
    Requirement("xarray", "xarray", "2025.1"),
    Requirement("dask", "dask", "2025.1"),
    Requirement("distributed", "distributed", "2025.1"),
    Requirement("fsspec", "fsspec", "2025.1"),
    Requirement("s3fs", "s3fs", "2025.1"),
    Requirement("zarr_cm", "zarr-cm", "0.5"),
)


def version_tuple(version: str) -> tuple[int, ...]:
    """'2.2.4' -> (2, 2, 4); '1.26.4rc1' -> (1, 26, 4): enough to compare releases."""
    numbers = []
    for part in version.split("."):
        match = re.match(r"\d+", part)
        if not match:
            break
        numbers.append(int(match[0]))
    return tuple(numbers)


@dataclass
class DependencyReport:
    """What is missing or too old, in words an analyst can act on."""

    missing: list[str] = field(default_factory=list)
    too_old: list[tuple[str, str, str]] = field(default_factory=list)  # (name, have, need)
    problems: list[str] = field(default_factory=list)  # e.g. numpy loaded before the plugin
    reinstall: str | None = None  # why the installed set should be installed again
    cannot_install: str | None = None  # why the installer cannot serve this Python

    @property
    def ok(self) -> bool:
        return not (self.missing or self.too_old or self.problems)

    def names(self) -> list[str]:
        return self.missing + [name for name, _, _ in self.too_old]

    def summary(self) -> str:
        """One sentence: what is wrong (empty when nothing is)."""
        parts = []
        if self.missing:
            parts.append("missing: " + ", ".join(self.missing))
        if self.too_old:
            parts.append(
                "too old: "
                + ", ".join(f"{name} {have} (needs {need})" for name, have, need in self.too_old)
            )
        text = "Python packages " + "; ".join(parts) + "." if parts else ""
        return " ".join([text, *self.problems]).strip()

    def short(self) -> str:
        """The notice's line: a few names, not the whole list."""
        names = self.names()
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        if not names:
            return " ".join(self.problems)
        return f"{shown} {'is' if len(names) == 1 else 'are'} missing or too old."

    def message(self) -> str:
        """What is wrong and how to fix it, for an error or a notice."""
        if self.ok:
            return ""
        if self.cannot_install:
            return f"Embedding Change cannot run yet. {self.summary()} {self.cannot_install}"
        return (
            f"Embedding Change cannot run yet. {self.summary()} Install them with Plugins > "
            "Embedding change > Install dependencies… (or the Processing algorithm "
            "embeddingchange:installdependencies, also from qgis_process); without pip or "
            "network, see the README's manual route."
        )


def installed_version(requirement: Requirement) -> str | None:
    """The version the next `import` would load, or None when it cannot be imported."""
    module = sys.modules.get(requirement.module)
    if module is not None and isinstance(getattr(module, "__version__", None), str):
        return module.__version__
    try:
        if importlib.util.find_spec(requirement.module) is None:
            return None
    except (ImportError, ValueError):
        return None
    try:
        # distribution() walks sys.path in order, as import does.
        return importlib.metadata.distribution(requirement.distribution).version
    except importlib.metadata.PackageNotFoundError:
        return "0"  # importable but without metadata: treat as unknown, too old


def check_requirements(required=REQUIRED) -> DependencyReport:
    """Which of the engine's packages this Python lacks or has too old."""
    report = DependencyReport()
    for requirement in required:
        have = installed_version(requirement)
        if have is None:
            report.missing.append(requirement.distribution)
        elif version_tuple(have) < version_tuple(requirement.minimum):
            report.too_old.append((requirement.distribution, have, requirement.minimum))
    return report
