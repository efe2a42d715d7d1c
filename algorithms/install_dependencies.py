"""Processing algorithm "Install dependencies": the engine's pinned packages into the profile.

The plugin's notice and menu entry run it as a background task; qgis_process and scripts run it
like any algorithm. pip installs the lock for this Python and numpy into a new folder of the
active QGIS profile and the plugin switches to it only when it is complete and imports.
"""

from __future__ import annotations

import sys

from qgis.core import (
    QgsApplication,
    QgsProcessingException,
    QgsProcessingOutputFolder,
    QgsProcessingOutputString,
    QgsProcessingParameterFile,
)
from qgis.PyQt.QtCore import QStandardPaths

from .embedding_change_algorithm import EmbeddingChangeAlgorithm


class InstallDependenciesAlgorithm(EmbeddingChangeAlgorithm):
    """pip-installs numba, zarr, xarray, dask and s3fs (pinned) where only this plugin sees them."""

    WHEELS = "WHEELS"
    FOLDER = "FOLDER"
    STATUS = "STATUS"

    def name(self):
        return "installdependencies"

    def displayName(self):
        return "Install dependencies"

    def tags(self):
        return ["pip", "install", "dependencies", "numba", "zarr", "xarray", "dask", "setup"]

    def flags(self):
        # Not in batch mode: one install per profile; cancel stops pip and changes nothing.
        return EmbeddingChangeAlgorithm.FlagCanCancel

    def shortHelpString(self):
        return (
            "Installs the Python packages Embedding Change needs (numba, zarr, xarray, dask, "
            "s3fs and what they use) into a folder of the active QGIS profile, "
            "python/dependencies/embedding_change/py&lt;version&gt;, pinned to tested versions "
            "and checked against their published hashes. QGIS's own Python, numpy, GDAL and Qt "
            "are left as they are.\n\n"
            "It downloads about 150 MB from the Python package registry (PyPI). On a computer "
            "without internet, give a folder of the same wheel files instead (Folder of wheels): "
            "the README says how to fetch them elsewhere.\n\n"
            "The previous installation stays in use until the new one is complete. Run it again "
            "after upgrading QGIS when the plugin asks for it."
        )

    def initAlgorithm(self, config=None):
        self.addParameter(
            QgsProcessingParameterFile(
                self.WHEELS,
                "Folder of wheels (optional; empty: download from the package registry)",
                behavior=QgsProcessingParameterFile.Folder,
                optional=True,
            )
        )
        self.addOutput(QgsProcessingOutputFolder(self.FOLDER, "Dependencies folder"))
        self.addOutput(QgsProcessingOutputString(self.STATUS, "Status"))

    def processAlgorithm(self, parameters, context, feedback):
        from ..dependencies import folder, pip_install
        from ..dependencies.check import dependency_report
        from ..dependencies.locks import LockError

        wheels = self.parameterAsFile(parameters, self.WHEELS, context).strip() or None
        profile = QgsApplication.qgisSettingsDirPath()
        try:
            result = pip_install.install(
                profile,
                wheels,
                log=feedback.pushConsoleInfo,
                progress=lambda fraction: feedback.setProgress(100 * fraction),
                cancelled=feedback.isCanceled,
            )
        except (pip_install.InstallError, LockError) as exc:
            raise QgsProcessingException(str(exc)) from exc
        feedback.pushInfo(f"Installed {result.packages} packages into {result.folder}.")
        app_data = QStandardPaths.writableLocation(QStandardPaths.AppDataLocation)
        if result.needs_numpy_first:
            script = folder.install_startup_hook(app_data)
            feedback.pushInfo(
                f"QGIS's numpy is older than the dependencies need: {script} now loads numpy "
                f"{result.versions.split('numpy=')[-1].split()[0]} from that folder before any "
                "plugin (delete the block marked embedding_change there to undo)."
            )
        else:
            folder.remove_startup_hook(app_data)
        report = dependency_report(profile)
        if report.ok:
            status = "Ready: the dependencies load in this QGIS session."
        elif result.needs_numpy_first and "numpy" in sys.modules:
            status = (
                f"Restart QGIS to finish: this session already runs QGIS's numpy "
                f"{sys.modules['numpy'].__version__}; from the next start the new one loads first."
            )
        else:
            status = f"Restart QGIS to finish: {report.summary()}"
        (feedback.pushInfo if report.ok else feedback.pushWarning)(status)
        return {self.FOLDER: str(result.folder), self.STATUS: status}
