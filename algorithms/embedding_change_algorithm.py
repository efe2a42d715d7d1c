"""What every algorithm of the provider shares, as QGIS's own QgisAlgorithm does for its tools."""

from __future__ import annotations

import contextlib
from pathlib import Path

from qgis.core import QgsApplication, QgsProcessingAlgorithm, QgsProcessingException
from qgis.PyQt.QtGui import QIcon

from ..resources import ICON


class EmbeddingChangeAlgorithm(QgsProcessingAlgorithm):
    """The provider's icon, a fresh instance per run, and background, cancel and batch support."""

    def createInstance(self):
        return type(self)()

    def icon(self):
        return QIcon(str(ICON))

    def flags(self):
        # Thread-safe: runs as the dialog's background task, can be cancelled, works in batch.
        return QgsProcessingAlgorithm.FlagSupportsBatch | QgsProcessingAlgorithm.FlagCanCancel

    @staticmethod
    def require_dependencies() -> None:
        """Stop with one clear message when the engine's packages are missing or too old."""
        from ..dependencies.check import dependency_report

        report = dependency_report(QgsApplication.qgisSettingsDirPath())
        if not report.ok:
            raise QgsProcessingException(report.message())

    @staticmethod
    def make_output_parent(output: str) -> None:
        """Create the folder a local output goes into, as QGIS's own tools do for a typed path.

        A folder that cannot be made is left to the engine, whose error says what to fix.
        """
        if "://" in output:
            return
        with contextlib.suppress(OSError):
            Path(output).absolute().parent.mkdir(parents=True, exist_ok=True)
