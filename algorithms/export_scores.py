"""Processing algorithm "Export change scores": a scores Zarr in, Cloud-Optimized GeoTIFFs out."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingException,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
)

from .embedding_change_algorithm import EmbeddingChangeAlgorithm


class ExportScoresAlgorithm(EmbeddingChangeAlgorithm):
    """Writes every score of a scores output as a GeoTIFF other software reads."""

    INPUT = "INPUT"
    OUTPUT = "OUTPUT"
    FILES = "FILES"

    def name(self):
        return "exportscores"

    def displayName(self):
        return "Export change scores"

    def tags(self):
        return ["embedding", "change", "export", "geotiff", "cog", "cloud optimized", "gdal"]

    def shortHelpString(self):
        return (
            "Writes a change scores output as Cloud-Optimized GeoTIFFs, which any GIS, GDAL, "
            "rasterio or a web map reads (older GDAL and QGIS versions cannot read the Zarr "
            "output).\n\n"
            "One file per score, named after it, with one band per year (the band's "
            "description is the year), float32 values, no data as NaN, DEFLATE compression "
            "and overviews that keep each block's highest score, so hotspots stay visible "
            "when zoomed out.\n\n"
            "When the output holds the run's summary, each score also gets two single-band "
            "files: <score>_largest_score.tif (the largest score over the years) and "
            "<score>_year_of_largest.tif (its year; overviews take a year of the block, not "
            "the latest one). Files of the same names in the folder are replaced."
        )

    def initAlgorithm(self, config=None):
        self.addParameter(
            QgsProcessingParameterFile(
                self.INPUT,
                "Change scores (Zarr folder)",
                behavior=QgsProcessingParameterFile.Folder,
            )
        )
        self.addParameter(
            QgsProcessingParameterFolderDestination(self.OUTPUT, "Folder for the GeoTIFFs")
        )
        self.addOutput(QgsProcessingOutputMultipleLayers(self.FILES, "GeoTIFFs"))

    def processAlgorithm(self, parameters, context, feedback):
        self.require_dependencies()
        from ..core.errors import EmbeddingChangeError
        from ..core.export import export_scores

        source = self.parameterAsFile(parameters, self.INPUT, context).strip()
        folder = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        if not source:
            raise QgsProcessingException("Give the change scores folder (INPUT).")
        self.make_output_parent(folder)
        try:
            files = export_scores(
                source,
                folder,
                progress=lambda fraction: feedback.setProgress(100 * fraction),
                cancel=feedback.isCanceled,
            )
        except EmbeddingChangeError as exc:
            raise QgsProcessingException(str(exc)) from exc
        for path in files:
            feedback.pushInfo(f"Wrote {path}")
        return {self.OUTPUT: folder, self.FILES: files}
