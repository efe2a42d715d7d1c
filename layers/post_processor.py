"""Score layers after a Processing run: registered in processAlgorithm (maybe a worker thread),
styled, placed and animated on the main thread by a QgsProcessingLayerPostProcessorInterface."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingContext, QgsProcessingLayerPostProcessorInterface, QgsProject

from .score_layers import SliceSource, score_layer_pairs, show_score_layer, summary_pairs
from .score_slice import PROPERTY, ScoreSlice


def _iface():
    from qgis.utils import iface

    return iface


class ScoreLayerPostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Runs on the main thread once Processing has added a score layer to the project."""

    # sip does not keep Python subclasses alive once they are handed to C++: the instances
    # live here (a few small objects per run) until the process ends.
    _alive: list[ScoreLayerPostProcessor] = []

    def __init__(self, score: ScoreSlice, load_check: str | None = None, summary=False):
        super().__init__()
        self.score = score
        self.load_check = load_check
        self.summary = summary

    @classmethod
    def create(cls, score: ScoreSlice, load_check=None, summary=False) -> ScoreLayerPostProcessor:
        processor = cls(score, load_check, summary)
        cls._alive.append(processor)
        return processor

    def postProcessLayer(self, layer, context, feedback):  # noqa: ARG002 (QGIS's signature)
        project = context.project() or QgsProject.instance()
        if self.load_check and batch_loading_is_off(self.load_check):
            # The batch dialog gives every row the project whatever its "Load layers on
            # completion" says (for folder outputs): the layer leaves as soon as it came in.
            project.removeMapLayer(layer.id())
            return
        if self.summary:
            from .summary import place_summary_layer

            place_summary_layer(project, layer, self.score)
            return
        show_score_layer(layer, self.score, project, _iface())


def batch_loading_is_off(algorithm_id: str) -> bool:
    """True while a batch dialog of the algorithm is open with "Load layers on completion" off."""
    from qgis.PyQt.QtWidgets import QApplication

    try:
        from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog
    except ImportError:  # no Processing plugin: no batch dialog either
        return False
    for widget in QApplication.topLevelWidgets():
        if isinstance(widget, BatchAlgorithmDialog) and widget.isVisible():
            if widget.algorithm().id() != algorithm_id:
                continue
            check = getattr(widget.mainWidget(), "checkLoadLayersOnCompletion", None)
            if check is not None and not check.isChecked():
                return True
    return False


def register_score_layers(
    store: str | Path,
    years,
    bands,
    context: QgsProcessingContext,
    slice_source: SliceSource | None = None,
    load_check: str | None = None,
    **details,
) -> int:
    """Ask Processing to load the score layers when the run ends; returns how many.

    Called from processAlgorithm (possibly a worker thread): the layers go to the context's
    temporary store, which Processing hands to the main thread with the results. `details`:
    see `score_layer_pairs`. load_check: the algorithm's id, so that the layers stay out when
    the batch dialog running it has "Load layers on completion" off.
    """
    if context.project() is None:
        return 0
    pairs = score_layer_pairs(store, years, bands, slice_source, **details)
    summary = summary_pairs(pairs)
    for layer, score in pairs + summary:
        context.temporaryLayerStore().addMapLayer(layer)
        details = QgsProcessingContext.LayerDetails(layer.name(), context.project(), "OUTPUT")
        details.forceName = True
        is_summary = bool(layer.customProperty(f"{PROPERTY}/summary", False))
        details.setPostProcessor(ScoreLayerPostProcessor.create(score, load_check, is_summary))
        context.addLayerToLoadOnCompletion(layer.id(), details)
    return len(pairs) + len(summary)
