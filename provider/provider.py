"""The Processing provider "Embedding change": registers the plugin's algorithms."""

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

ICON = Path(__file__).resolve().parents[1] / "resources" / "icon.svg"


class EmbeddingChangeProvider(QgsProcessingProvider):
    """Provider `embeddingchange`; its algorithms are `embeddingchange:<name>`."""

    def id(self):
        return "embeddingchange"

    def name(self):
        return "Embedding change"

    def longName(self):
        return "Embedding change: change scores from annual embedding mosaics"

    def icon(self):
        return QIcon(str(ICON))

    def svgIconPath(self):
        return str(ICON)

    def loadAlgorithms(self):
        from ..algorithms.build_multiscales import BuildMultiscalesAlgorithm
        from ..algorithms.change_scores import ChangeScoresAlgorithm

        self.addAlgorithm(ChangeScoresAlgorithm())
        self.addAlgorithm(BuildMultiscalesAlgorithm())
