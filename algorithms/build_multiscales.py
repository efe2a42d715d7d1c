"""Processing algorithm "Build multiscale pyramid": a scores Zarr in, a multiscale Zarr out."""

from __future__ import annotations

import time
import traceback

from qgis.core import (
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterString,
)

from ..layers.layer_tree import scores_store_of
from ..layers.pyramid import register_pyramid_layers
from ..layers.sources import zarr_format_for_layers
from .embedding_change_algorithm import EmbeddingChangeAlgorithm

# The engine's names (embedding_change.core.pyramid_levels.RESAMPLING_METHODS); a test keeps
# them equal. Indices are what models store: new methods go at the end. The default is the
# engine's (second_max: see core/pyramid_levels.py).
RESAMPLINGS = ("max", "mean", "min", "nearest", "second_max")
DEFAULT_RESAMPLING = RESAMPLINGS.index("second_max")


class BuildMultiscalesAlgorithm(EmbeddingChangeAlgorithm):
    """Builds levels of halving resolution so that zoomed-out maps read little data."""

    INPUT = "INPUT"
    VARIABLE = "VARIABLE"
    RESAMPLING = "RESAMPLING"
    OUTPUT = "OUTPUT"

    def name(self):
        return "buildmultiscales"

    def displayName(self):
        return "Build multiscale pyramid"

    def tags(self):
        return ["pyramid", "overviews", "multiscales", "zarr", "zoom", "resampling", "publish"]

    def shortHelpString(self):
        return (
            "Turns a scores Zarr (the output of Change scores, or any Zarr whose variable has "
            "dims time, band, y, x) into a multiscale pyramid: level 0 holds the scores at full "
            "resolution, each next level halves the resolution, down to a level of at most "
            "256 x 256 pixels.\n\n"
            "<b>second_max</b> (default) keeps the second-highest score of each 2 x 2 block: a "
            "coarse pixel is high only where at least two of its four pixels are, so events "
            "keep their score zoomed out while single-pixel speckle does not spread. "
            "<b>max</b> keeps the highest score: every block with one noisy pixel turns high, "
            "and zoomed out the map floods; <b>mean</b> averages (events fade into their "
            "surroundings); <b>min</b> keeps the lowest; <b>nearest</b> keeps one pixel. "
            "No-data pixels are ignored; a block with no data stays no data.\n\n"
            "Input: a scores Zarr folder, or a loaded score layer or group (its store is "
            "used).\n\n"
            "Level 0 shares the scores' own files where it can (hard links: no copy, no extra "
            "disk space, and the pyramid still opens if the scores are moved or deleted); on "
            "another disk or a remote store it is a copy.\n\n"
            "The pyramid follows the Zarr conventions multiscales, spatial and proj, so other "
            "tools (xarray.open_datatree, web viewers) read it too. It loads here like the "
            "scores, a group per score with a layer per year on the temporal controller, and "
            "stays fast when zoomed out because QGIS draws from the coarser levels."
        )

    def initAlgorithm(self, config=None):
        self.addParameter(
            QgsProcessingParameterFile(
                self.INPUT,
                "Scores (Zarr folder, or a loaded score layer or group)",
                behavior=QgsProcessingParameterFile.Folder,
            )
        )
        self.addParameter(QgsProcessingParameterString(self.VARIABLE, "Variable", "scores"))
        self.addParameter(
            QgsProcessingParameterEnum(
                self.RESAMPLING, "Resampling", list(RESAMPLINGS), defaultValue=DEFAULT_RESAMPLING
            )
        )
        self.addParameter(
            QgsProcessingParameterFolderDestination(self.OUTPUT, "Pyramid (Zarr folder)")
        )

    def checkParameterValues(self, parameters, context):
        # A loaded score layer or group stands for its store (a folder parameter alone
        # would refuse it).
        store = scores_store_of(parameters.get(self.INPUT), context.project())
        if store:
            parameters = {**parameters, self.INPUT: store}
        return super().checkParameterValues(parameters, context)

    def processAlgorithm(self, parameters, context, feedback):
        self.require_dependencies()
        from ..core import build_multiscales
        from ..core.errors import EmbeddingChangeError
        from ..core.failures import one_line_message

        source = scores_store_of(parameters.get(self.INPUT), context.project())
        source = source or self.parameterAsFile(parameters, self.INPUT, context).strip()
        variable = self.parameterAsString(parameters, self.VARIABLE, context).strip() or "scores"
        resampling = RESAMPLINGS[self.parameterAsEnum(parameters, self.RESAMPLING, context)]
        output = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        if not source:
            raise QgsProcessingException("Give the scores Zarr folder (INPUT).")

        self.make_output_parent(output)
        started = time.perf_counter()
        try:
            tree = build_multiscales(
                source,
                output,
                variable=variable,
                resampling=resampling,
                zarr_format=zarr_format_for_layers(),
                progress=lambda fraction: feedback.setProgress(100 * fraction),
                cancel=feedback.isCanceled,
                log=feedback.pushInfo,
            )
        except QgsProcessingException:
            raise
        except Exception as exc:  # the engine's errors, and anything it did not foresee
            if not isinstance(exc, EmbeddingChangeError):
                feedback.pushDebugInfo(traceback.format_exc())
            raise QgsProcessingException(one_line_message(exc)) from exc
        shapes = [tree[level][variable].shape[2:] for level in sorted(tree.children, key=int)]
        tree.close()
        feedback.pushInfo(
            f"Wrote {len(shapes)} levels ({resampling}) to {output} in "
            f"{time.perf_counter() - started:.1f} s: "
            + ", ".join(f"/{k} {nx} x {ny}" for k, (ny, nx) in enumerate(shapes))
        )
        loaded = register_pyramid_layers(output, variable, context)
        if loaded:
            feedback.pushInfo(f"{loaded} score layers will load into the project.")
        return {self.OUTPUT: output}
