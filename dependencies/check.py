"""The dependency check the plugin, its notice and its algorithms share: the profile's set on
sys.path, then what is still missing, too old or in the way."""

from __future__ import annotations

from pathlib import Path

from .folder import activate, qgis_numpy_version
from .locks import LockError, lock_for
from .requirements import DependencyReport, check_requirements


def dependency_report(profile: str | Path) -> DependencyReport:
    """Activate the profile's installed set (if any) and check the engine's requirements."""
    try:
        lock = lock_for(numpy_version=qgis_numpy_version(profile))
        lock_sha256, cannot_install = lock.sha256(), None
    except LockError as exc:
        lock_sha256, cannot_install = None, str(exc)
    activation = activate(profile, lock_sha256)
    report = check_requirements()
    report.problems += activation.problems or []
    report.reinstall = activation.reinstall if activation.folder else None
    report.cannot_install = cannot_install
    return report
