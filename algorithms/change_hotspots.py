"""Processing algorithm "Change hotspots": a scores output in, polygons of its high scores out."""

from __future__ import annotations

import math

from qgis.core import (
    QgsFillSymbol,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProject,
    QgsSingleSymbolRenderer,
    QgsVectorLayer,
    QgsVectorLayerTemporalProperties,
)

from ..layers.temporal import animate_years
from .change_scores import parse_years
from .embedding_change_algorithm import EmbeddingChangeAlgorithm

HOTSPOTS_LAYER = "hotspots"  # embedding_change.core.hotspots.HOTSPOTS_LAYER / REGIONS_LAYER
REGIONS_LAYER = "hotspot_regions"
CONNECTIVITIES = ("4", "8")
# Dark blue outlines, which stand out on the scores' yellow-to-red ramp and on false colour;
# the regions across years dashed black.
HOTSPOT_STYLE = {"color": "0,0,0,0", "outline_color": "37,52,148", "outline_width": "0.6"}
REGION_STYLE = {
    "color": "0,0,0,0",
    "outline_color": "0,0,0",
    "outline_width": "0.5",
    "outline_style": "dash",
}


class ChangeHotspotsAlgorithm(EmbeddingChangeAlgorithm):
    """Turns the pixels whose score passes a threshold into polygons, one per region and year."""

    INPUT = "INPUT"
    SCORE = "SCORE"
    THRESHOLD = "THRESHOLD"
    MIN_PIXELS = "MIN_PIXELS"
    CONNECTIVITY = "CONNECTIVITY"
    YEARS = "YEARS"
    MERGE_YEARS = "MERGE_YEARS"
    OUTPUT = "OUTPUT"
    SUMMARY = "SUMMARY"

    def name(self):
        return "changehotspots"

    def displayName(self):
        return "Change hotspots"

    def tags(self):
        return ["embedding", "change", "hotspots", "polygons", "regions", "vectorize", "sieve"]

    def shortHelpString(self):
        return (
            "Outlines where something unusual happened: the pixels of a score (by default the "
            "loo_medoid robust z-score) at or above the threshold, joined into connected "
            "regions, one polygon per region and year.\n\n"
            "<b>Threshold</b>: 3 means three robust standard deviations above the pixel's own "
            "usual years. <b>Minimum region size</b> drops regions of fewer pixels (speckle). "
            "<b>Connectivity</b>: 4 joins pixels that share an edge, 8 also those that touch at "
            "a corner. <b>Years</b>: empty for all, or e.g. 2018,2020-2023.\n\n"
            "Each polygon has its year, the score's name, its pixel count, area in m², and the "
            "highest and mean score inside it; its date range is the year, so the temporal "
            "controller shows the polygons with the score layers. <b>Merge consecutive "
            "years</b> also writes a second layer, hotspot_regions: regions of consecutive "
            "years that share pixels joined into one, with their first and last year.\n\n"
            "The scores are read one row of tiles at a time, so a state-sized output works "
            "in bounded memory; regions crossing tiles come out whole."
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
            QgsProcessingParameterString(
                self.SCORE, "Score (empty: the loo_medoid z-score)", optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.THRESHOLD, "Threshold", QgsProcessingParameterNumber.Double, 3.0
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.MIN_PIXELS,
                "Minimum region size (pixels)",
                QgsProcessingParameterNumber.Integer,
                4,
                minValue=1,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.CONNECTIVITY,
                "Connectivity (neighbours)",
                options=list(CONNECTIVITIES),
                defaultValue=CONNECTIVITIES[0],
                usesStaticStrings=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.YEARS, "Years (empty: all; e.g. 2018,2020-2023)", optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean(
                self.MERGE_YEARS, "Merge a region's consecutive years (second layer)", False
            )
        )
        self.addParameter(
            QgsProcessingParameterVectorDestination(
                self.OUTPUT, "Change hotspots (GeoPackage)", QgsProcessing.TypeVectorPolygon
            )
        )
        self.addOutput(
            QgsProcessingOutputVectorLayer(
                self.SUMMARY, "Hotspot regions across years", QgsProcessing.TypeVectorPolygon
            )
        )

    def processAlgorithm(self, parameters, context, feedback):
        self.require_dependencies()
        from ..core.errors import EmbeddingChangeError
        from ..core.hotspots import change_hotspots

        source = self.parameterAsFile(parameters, self.INPUT, context).strip()
        score = self.parameterAsString(parameters, self.SCORE, context).strip() or None
        threshold = self.parameterAsDouble(parameters, self.THRESHOLD, context)
        min_pixels = self.parameterAsInt(parameters, self.MIN_PIXELS, context)
        connectivity = int(self.parameterAsEnumString(parameters, self.CONNECTIVITY, context))
        years = parse_years(self.parameterAsString(parameters, self.YEARS, context))
        merge = self.parameterAsBoolean(parameters, self.MERGE_YEARS, context)
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        if not source:
            raise QgsProcessingException("Give the change scores folder (INPUT).")
        if not math.isfinite(threshold):
            raise QgsProcessingException(f"The threshold must be a number, not {threshold}.")

        self.make_output_parent(output)
        try:
            result = change_hotspots(
                source,
                output,
                score=score,
                threshold=threshold,
                min_pixels=min_pixels,
                connectivity=connectivity,
                years=years,
                merge_years=merge,
                progress=lambda fraction: feedback.setProgress(100 * fraction),
                cancel=feedback.isCanceled,
            )
        except EmbeddingChangeError as exc:
            raise QgsProcessingException(str(exc)) from exc
        feedback.pushInfo(
            f"{result.features} hotspot polygons of {result.score} >= {threshold:g} "
            f"(regions of {min_pixels}+ pixels, {connectivity} neighbours) in "
            f"{', '.join(str(y) for y in result.years)}"
            + (f"; {result.regions} regions across years" if merge else "")
            + f", written to {result.path}."
        )
        summary = f"{result.path}|layername={REGIONS_LAYER}" if merge else None
        register_hotspot_layers(context, output, summary, result.years)
        return {self.OUTPUT: output, self.SUMMARY: summary}


def register_hotspot_layers(context: QgsProcessingContext, output, summary, years) -> None:
    """Style and animate the hotspots when Processing loads them; load the summary layer too."""
    if not context.willLoadLayerOnCompletion(output):
        return
    details = context.layerToLoadOnCompletionDetails(output)
    details.setPostProcessor(HotspotLayerPostProcessor.create(HOTSPOT_STYLE, years))
    if summary is None:
        return
    layer = QgsVectorLayer(summary, "Hotspot regions across years", "ogr")
    context.temporaryLayerStore().addMapLayer(layer)
    regions = QgsProcessingContext.LayerDetails(layer.name(), context.project(), "SUMMARY")
    regions.forceName = True
    regions.setPostProcessor(HotspotLayerPostProcessor.create(REGION_STYLE, years))
    context.addLayerToLoadOnCompletion(layer.id(), regions)


def style_hotspot_layer(layer: QgsVectorLayer, style: dict) -> None:
    """Outline style, and a date range per feature (start_date..end_date) for the controller."""
    layer.setRenderer(QgsSingleSymbolRenderer(QgsFillSymbol.createSimple(style)))
    temporal = layer.temporalProperties()
    temporal.setMode(QgsVectorLayerTemporalProperties.ModeFeatureDateTimeStartAndEndFromFields)
    temporal.setStartField("start_date")
    temporal.setEndField("end_date")
    temporal.setIsActive(True)
    layer.triggerRepaint()


class HotspotLayerPostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Runs on the main thread once Processing has added a hotspot layer to the project."""

    _alive: list[HotspotLayerPostProcessor] = []  # sip does not keep them alive

    def __init__(self, style: dict, years):
        super().__init__()
        self.style, self.years = style, tuple(years)

    @classmethod
    def create(cls, style: dict, years) -> HotspotLayerPostProcessor:
        processor = cls(style, years)
        cls._alive.append(processor)
        return processor

    def postProcessLayer(self, layer, context, feedback):  # noqa: ARG002 (QGIS's signature)
        from qgis.utils import iface

        style_hotspot_layer(layer, self.style)
        if self.years:
            project = context.project() or QgsProject.instance()
            animate_years(project, self.years, iface)
