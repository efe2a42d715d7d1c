"""The Processing provider "Embedding change": registers the plugin's algorithms.

Every algorithm is registered whether or not the engine's Python packages are there: the
algorithm modules import only the standard library, qgis, numpy and GDAL, and each run checks
the dependencies first (a missing one is one clear error, never a traceback at load).
"""

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..resources import ICON


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
        from ..algorithms.change_hotspots import ChangeHotspotsAlgorithm
        from ..algorithms.change_profile import ChangeProfileAlgorithm
        from ..algorithms.change_scores import ChangeScoresAlgorithm
        from ..algorithms.embedding_rgb import EmbeddingRgbAlgorithm
        from ..algorithms.export_scores import ExportScoresAlgorithm
        from ..algorithms.install_dependencies import InstallDependenciesAlgorithm
        from ..algorithms.load_scores import LoadScoresAlgorithm

        self.addAlgorithm(ChangeScoresAlgorithm())
        self.addAlgorithm(BuildMultiscalesAlgorithm())
        self.addAlgorithm(ChangeHotspotsAlgorithm())
        self.addAlgorithm(ChangeProfileAlgorithm())
        self.addAlgorithm(ExportScoresAlgorithm())
        self.addAlgorithm(EmbeddingRgbAlgorithm())
        self.addAlgorithm(LoadScoresAlgorithm())
        self.addAlgorithm(InstallDependenciesAlgorithm())
