"""What every algorithm of the provider shares, as QGIS's own QgisAlgorithm does for its tools."""

from __future__ import annotations

from qgis.core import QgsProcessingAlgorithm


class EmbeddingChangeAlgorithm(QgsProcessingAlgorithm):
    """The provider's icon, a fresh instance per run, and background, cancel and batch support."""

    def createInstance(self):
        return type(self)()

    def icon(self):
        from ..provider.provider import EmbeddingChangeProvider

        return EmbeddingChangeProvider().icon()

    def flags(self):
        # Thread-safe: runs as the dialog's background task, can be cancelled, works in batch.
        return QgsProcessingAlgorithm.FlagSupportsBatch | QgsProcessingAlgorithm.FlagCanCancel
