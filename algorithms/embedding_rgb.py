"""Processing algorithm "Embedding false colour": an extent's embedding as a picture per year."""

from __future__ import annotations

import traceback
from pathlib import Path

from qgis.core import (
    QgsLayerTreeGroup,
    QgsMultiBandColorRenderer,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterString,
    QgsProject,
    QgsRasterLayer,
    QgsRasterLayerTemporalProperties,
)

from ..layers.score_slice import PROPERTY
from ..layers.temporal import animate_years, year_range
from .change_scores import parse_years
from .embedding_change_algorithm import EmbeddingChangeAlgorithm

GROUP_PROPERTY = f"{PROPERTY}/false_colour"


class EmbeddingRgbAlgorithm(EmbeddingChangeAlgorithm):
    """Shows what the land looks like to the embedding, and how that changed, year by year."""

    YEARS = "YEARS"
    BANDS = "BANDS"
    OUTPUT = "OUTPUT"

    def name(self):
        return "embeddingrgb"

    def displayName(self):
        return "Embedding false colour"

    def tags(self):
        return ["embedding", "alphaearth", "rgb", "false colour", "pca", "principal components"]

    def shortHelpString(self):
        return (
            "Turns the embedding of the extent into a colour picture per year, to see what the "
            "land looks like to the model and how it changed.\n\n"
            "<b>Bands</b> empty: red, green and blue are the first three principal components "
            "of the embeddings, fitted once on the extent over all the chosen years, so the "
            "same colour means the same embedding in every year. Or give three band names, "
            "e.g. A01,A16,A09, to show those bands.\n\n"
            "Colours are stretched from the 2nd to the 98th percentile; pixels of a year with "
            "no data are transparent. The pictures (one GeoTIFF per year in the output folder) "
            "load under the score layers, one per year on the temporal controller."
        )

    def initAlgorithm(self, config=None):
        self.add_store_parameters()
        self.addParameter(
            QgsProcessingParameterString(
                self.YEARS, "Years (empty: all; e.g. 2018,2020-2023)", optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.BANDS,
                "Bands for red, green, blue (empty: principal components)",
                optional=True,
            )
        )
        self.add_advanced_parameters([*self.store_access_parameters(), self.max_pixels_parameter()])
        self.addParameter(
            QgsProcessingParameterFolderDestination(self.OUTPUT, "False colour pictures (folder)")
        )

    def processAlgorithm(self, parameters, context, feedback):
        self.require_dependencies()
        from ..core.errors import EmbeddingChangeError
        from ..core.false_colour import embedding_false_colour
        from ..core.store import open_embedding_store

        choice = self.read_store_choice(parameters, context)
        years = parse_years(self.parameterAsString(parameters, self.YEARS, context))
        text = self.parameterAsString(parameters, self.BANDS, context).strip()
        bands = [b.strip() for b in text.replace(";", ",").split(",")] if text else None
        output = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        self.make_output_parent(output)
        try:
            source = open_embedding_store(choice.url, choice.variable, choice.storage_options)
            bbox = self.store_bbox(parameters, context, source.grid.crs)
            result = embedding_false_colour(
                choice.url,
                output,
                bbox=bbox,
                variable=choice.variable,
                years=years,
                bands=bands,
                storage_options=choice.storage_options,
                progress=lambda fraction: feedback.setProgress(100 * fraction),
                cancel=feedback.isCanceled,
                max_pixels=self.read_max_pixels(parameters, context),
                log=feedback.pushInfo,
            )
        except QgsProcessingException:
            raise
        except Exception as exc:  # the engine's errors, and anything it did not foresee
            from ..core.credentials import mask
            from ..core.failures import one_line_message

            if not isinstance(exc, EmbeddingChangeError):
                feedback.pushDebugInfo(mask(traceback.format_exc()))
            raise QgsProcessingException(one_line_message(exc)) from exc
        feedback.pushInfo(
            f"Wrote {len(result.files)} pictures ({', '.join(result.mapping.names)}) to "
            f"{result.folder}."
        )
        register_false_colour_layers(result.folder, result.files, result.years, context)
        return {self.OUTPUT: output}


def register_false_colour_layers(folder: str, files, years, context: QgsProcessingContext) -> int:
    """Ask Processing to load a layer per year when the run ends; returns how many."""
    if context.project() is None:
        return 0
    for path, year in zip(files, years, strict=True):
        layer = QgsRasterLayer(path, str(year), "gdal")
        context.temporaryLayerStore().addMapLayer(layer)
        details = QgsProcessingContext.LayerDetails(str(year), context.project(), "OUTPUT")
        details.forceName = True
        details.setPostProcessor(FalseColourPostProcessor.create(folder, year, years))
        context.addLayerToLoadOnCompletion(layer.id(), details)
    return len(files)


def style_false_colour_layer(layer: QgsRasterLayer, year: int) -> None:
    """Bands 1-3 as red, green, blue as they are (already stretched), shown in its year only."""
    layer.setRenderer(QgsMultiBandColorRenderer(layer.dataProvider(), 1, 2, 3))
    temporal = layer.temporalProperties()
    temporal.setMode(QgsRasterLayerTemporalProperties.ModeFixedTemporalRange)
    temporal.setFixedTemporalRange(year_range(year))
    temporal.setIsActive(True)
    layer.setCustomProperty(f"{PROPERTY}/year", year)
    layer.triggerRepaint()


def place_under_everything(project: QgsProject, layer: QgsRasterLayer, folder: str) -> None:
    """In the group of its run, the last group of the tree, so score layers draw above it."""
    root = project.layerTreeRoot()
    group = next((g for g in root.findGroups() if g.customProperty(GROUP_PROPERTY) == folder), None)
    if group is None:
        group = root.addGroup(f"False colour: {Path(folder).name}")
        group.setCustomProperty(GROUP_PROPERTY, folder)
    elif root.children()[-1] is not group:
        root.addChildNode(group.clone())
        root.removeChildNode(group)
        group = root.children()[-1]
    year = int(layer.customProperty(f"{PROPERTY}/year", 0))
    position = sum(
        int(node.layer().customProperty(f"{PROPERTY}/year", 0)) < year
        for node in group.findLayers()
        if node.layer() is not None
    )
    node = root.findLayer(layer.id())
    if node is not None and node.parent() is not group:
        old = node.parent()
        group.insertChildNode(position, node.clone())
        old.removeChildNode(node)
    elif node is None:
        group.insertLayer(position, layer)
    node = root.findLayer(layer.id())
    node.setExpanded(False)
    node.setItemVisibilityChecked(True)
    if isinstance(group, QgsLayerTreeGroup):
        group.setExpanded(False)


class FalseColourPostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Runs on the main thread once Processing has added a picture to the project."""

    _alive: list[FalseColourPostProcessor] = []  # sip does not keep them alive

    def __init__(self, folder: str, year: int, years):
        super().__init__()
        self.folder, self.year, self.years = folder, year, tuple(years)

    @classmethod
    def create(cls, folder: str, year: int, years) -> FalseColourPostProcessor:
        processor = cls(folder, year, years)
        cls._alive.append(processor)
        return processor

    def postProcessLayer(self, layer, context, feedback):  # noqa: ARG002 (QGIS's signature)
        from qgis.utils import iface

        project = context.project() or QgsProject.instance()
        style_false_colour_layer(layer, self.year)
        place_under_everything(project, layer, self.folder)
        animate_years(project, self.years, iface)
