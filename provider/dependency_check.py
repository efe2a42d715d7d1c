"""The dependency check at plugin start: the profile's installed set onto sys.path before
anything imports the engine's packages, and what is still missing (for the notice)."""

from __future__ import annotations

from qgis.core import QgsApplication

from ..dependencies.caches import use_kernel_cache
from ..dependencies.check import dependency_report
from ..dependencies.requirements import DependencyReport


def load_dependencies() -> DependencyReport:
    """Called first by classFactory, and by the desktop's notice; quiet (qgis_process prints
    the log, and says the same when an algorithm runs). numba's cache goes to the profile's
    folder first, before anything imports the engine."""
    profile = QgsApplication.qgisSettingsDirPath()
    use_kernel_cache(profile)
    return dependency_report(profile)
