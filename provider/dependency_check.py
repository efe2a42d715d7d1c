"""The dependency check at plugin start: the profile's installed set onto sys.path before
anything imports the engine's packages, and what is still missing (for the notice)."""

from __future__ import annotations

from qgis.core import QgsApplication

from ..dependencies.check import dependency_report
from ..dependencies.requirements import DependencyReport


def load_dependencies() -> DependencyReport:
    """Called first by classFactory, and by the desktop's notice; quiet (qgis_process prints
    the log, and says the same when an algorithm runs)."""
    return dependency_report(QgsApplication.qgisSettingsDirPath())
