"""Processing algorithm "Change profile at a point": one pixel's story as an HTML report and CSV."""

from __future__ import annotations

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterPoint,
)

from .embedding_change_algorithm import EmbeddingChangeAlgorithm


class ChangeProfileAlgorithm(EmbeddingChangeAlgorithm):
    """Explains the scores of the pixel under a point: its series, distances and medoids."""

    INPUT = "INPUT"
    POINT = "POINT"
    OUTPUT_HTML = "OUTPUT_HTML"
    OUTPUT_CSV = "OUTPUT_CSV"

    def name(self):
        return "changeprofile"

    def displayName(self):
        return "Change profile at a point"

    def tags(self):
        return ["embedding", "change", "profile", "time series", "pixel", "medoid", "report"]

    def shortHelpString(self):
        return (
            "Explains why a pixel scores high. For the pixel of the scores output under the "
            "point (in any CRS) the report shows:\n"
            "- every score over the years, raw distances and robust z-scores on their own "
            "axes, with a line at 3 (three robust standard deviations above the pixel's usual "
            "years);\n"
            "- the distances between the pixel's embeddings of every pair of years, as a heat "
            "map: a year unlike the others is a light row and column;\n"
            "- each year's leave-one-out medoid: the year most typical of the others, which the "
            "loo_medoid score measures the distance to;\n"
            "- the pixel's coordinates and a table of the values.\n\n"
            "The embeddings come from the store the scores were computed from (recorded in the "
            "output), one small read of that pixel. The CSV has one row per year: scores, "
            "whether the year has data, its medoid year and its distance to every year."
        )

    def initAlgorithm(self, config=None):
        self.addParameter(
            QgsProcessingParameterFile(
                self.INPUT,
                "Change scores (Zarr folder)",
                behavior=QgsProcessingParameterFile.Folder,
            )
        )
        self.addParameter(QgsProcessingParameterPoint(self.POINT, "Point"))
        self.addParameter(
            # An HTML file filter makes Processing show the report in its results viewer.
            QgsProcessingParameterFileDestination(
                self.OUTPUT_HTML, "Change profile report", "HTML files (*.html)"
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT_CSV, "Change profile table", "CSV files (*.csv)", optional=True
            )
        )

    def processAlgorithm(self, parameters, context, feedback):
        self.require_dependencies()
        from ..core.errors import EmbeddingChangeError
        from ..core.profile_report import change_profile
        from .embedding_change_algorithm import reach_recorded_store

        source = self.parameterAsFile(parameters, self.INPUT, context).strip()
        if not source:
            raise QgsProcessingException("Give the change scores folder (INPUT).")
        point = self.parameterAsPoint(parameters, self.POINT, context)
        crs = self.parameterAsPointCrs(parameters, self.POINT, context)
        html_path = self.parameterAsFileOutput(parameters, self.OUTPUT_HTML, context)
        csv_path = self.parameterAsFileOutput(parameters, self.OUTPUT_CSV, context) or None
        for path in (html_path, csv_path):
            if path:
                self.make_output_parent(path)
        try:
            profile = change_profile(
                source,
                point.x(),
                point.y(),
                point_crs=crs.toWkt() if crs.isValid() else None,
                html_path=html_path,
                csv_path=csv_path,
                credentials=reach_recorded_store,  # the run's authentication configuration
            )
        except EmbeddingChangeError as exc:
            raise QgsProcessingException(str(exc)) from exc
        feedback.pushInfo(
            f"Pixel row {profile.row}, column {profile.col} of {profile.scores_url} "
            f"(centre {profile.x:.6f}, {profile.y:.6f}); report {html_path}"
            + (f", table {csv_path}" if csv_path else "")
            + "."
        )
        if profile.note:
            feedback.pushWarning(profile.note)
        return {self.OUTPUT_HTML: html_path, self.OUTPUT_CSV: csv_path}
