"""Processing algorithm "Change scores": an embedding mosaic and an extent in, a scores Zarr out."""

from __future__ import annotations

import re
import time
import traceback

from qgis.core import (
    QgsApplication,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsSettings,
)

from ..layers.layer_tree import is_temporary_output, temporary_run_name
from ..layers.post_processor import register_score_layers
from ..layers.sources import zarr_format_for_layers
from .embedding_change_algorithm import (
    EmbeddingChangeAlgorithm,
    remember,
    remembered,
    remembered_store,
)

# The engine's names (embedding_change.core.kernels.METHODS / METRICS); a test keeps them equal.
METHODS = ("difference", "loo_medoid")
METRICS = ("alpha_earth_cosine", "cosine", "euclidean")


class ChangeScoresAlgorithm(EmbeddingChangeAlgorithm):
    """Scores how unlike the rest of its time series each year of each pixel is."""

    METHODS = "METHODS"
    METRIC = "METRIC"
    ROBUST_ZSCORE = "ROBUST_ZSCORE"
    YEARS = "YEARS"
    SCHEDULER = "SCHEDULER"
    CACHE_SIZE = "CACHE_SIZE"
    LOAD = "LOAD"
    LIVE = "LIVE"
    OUTPUT = "OUTPUT"

    def name(self):
        return "changescores"

    def displayName(self):
        return "Change scores"

    def tags(self):
        return ["embedding", "alphaearth", "change", "anomaly", "time series", "zarr", "medoid"]

    def shortHelpString(self):
        return (
            "Reads an annual embedding mosaic (Zarr, e.g. the AlphaEarth Foundations mosaic) "
            "for the extent and scores every pixel and year by how unlike the rest of its own "
            "time series that year is.\n\n"
            "<b>difference</b>: distance to the previous year (none for the first year).\n"
            "<b>loo_medoid</b>: distance to the medoid of the other years; high for a one-year "
            "event or the minority side of a lasting change.\n"
            "<b>alpha_earth_cosine</b> is the cosine distance of the dequantised embeddings; "
            "<b>cosine</b> works on raw values; <b>euclidean</b> on dequantised values.\n"
            "<b>Robust z-score</b> turns each pixel's scores into (score - median) / (1.4826 "
            "MAD) over its years, so 3 or more stands out whatever the land cover.\n\n"
            "Years: empty for all, or a list such as 2018,2020-2023. Storage options: JSON "
            'for the store, e.g. {"endpoint_url": "http://127.0.0.1:9000"} for an '
            "S3-compatible server; public s3:// buckets are read anonymously. Credentials for "
            "a private bucket: the AWS variables or profile, or an authentication "
            "configuration (Basic: access key id and secret key), never the storage "
            "options. Largest extent: a bigger one stops before reading. Scheduler: a "
            "dask.distributed address (tcp://host:8786), empty to use this computer.\n\n"
            "The output is a Zarr folder of scores(time, band, y, x); it loads as a group per "
            "score (LOO medoid z-score shown first), animated by the temporal controller from "
            "the year with the most change. A one-year event shows in one year with "
            "loo_medoid, in two with difference (the event year and the year after).\n\n"
            "The dialog opened from the toolbar button starts from the last run's settings and "
            "shows the scores while they are computed: the layers appear with the first tiles "
            "(the middle of the view first) and fill in; pan and play the years meanwhile "
            "(advanced: Show the scores while they are computed)."
        )

    def initAlgorithm(self, config=None):
        self.add_store_parameters()
        self.addParameter(
            QgsProcessingParameterEnum(
                self.METHODS,
                "Score methods",
                options=list(METHODS),
                allowMultiple=True,
                defaultValue=list(range(len(METHODS))),
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(self.METRIC, "Distance", list(METRICS), defaultValue=0)
        )
        self.addParameter(
            QgsProcessingParameterBoolean(self.ROBUST_ZSCORE, "Robust z-score over time", True)
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.YEARS, "Years (empty: all; e.g. 2018,2020-2023)", optional=True
            )
        )
        self.add_advanced_parameters(
            [
                *self.store_access_parameters(),
                QgsProcessingParameterString(
                    self.SCHEDULER, "Dask scheduler address (empty: this computer)", optional=True
                ),
                self.max_pixels_parameter(),
                QgsProcessingParameterNumber(
                    self.CACHE_SIZE,
                    "Keep fetched chunks of remote stores for the next run, up to (GB; 0: off)",
                    QgsProcessingParameterNumber.Double,
                    20,
                    optional=True,
                    minValue=0,
                ),
            ]
        )
        self.addParameter(
            # Optional: models and scripts written before it keep validating.
            QgsProcessingParameterBoolean(
                self.LOAD, "Load layers on completion", True, optional=True
            )
        )
        # The toolbar button turns it on; elsewhere (the toolbox, batch, models, qgis_process)
        # the layers load when the run is complete, as Processing does.
        self.add_advanced_parameters(
            [
                QgsProcessingParameterBoolean(
                    self.LIVE,
                    "Show the scores on the map while they are computed (desktop)",
                    False,
                    optional=True,
                )
            ]
        )
        self.addParameter(
            QgsProcessingParameterFolderDestination(self.OUTPUT, "Change scores (Zarr folder)")
        )

    def processAlgorithm(self, parameters, context, feedback):
        self.require_dependencies()
        from ..core import compute_change_scores, kernels
        from ..core.credentials import mask
        from ..core.errors import EmbeddingChangeError
        from ..core.failures import one_line_message
        from ..core.run_size import check_run_size, estimate_run
        from ..core.scheduling import run_cancellable, runs_locally
        from ..core.store import open_embedding_store
        from ..core.window import pixel_window

        choice = self.read_store_choice(parameters, context)
        store, variable, options = choice.url, choice.variable, choice.storage_options
        methods = [METHODS[i] for i in self.parameterAsEnums(parameters, self.METHODS, context)]
        metric = METRICS[self.parameterAsEnum(parameters, self.METRIC, context)]
        robust_zscore = self.parameterAsBoolean(parameters, self.ROBUST_ZSCORE, context)
        years = parse_years(self.parameterAsString(parameters, self.YEARS, context))
        scheduler = self.parameterAsString(parameters, self.SCHEDULER, context).strip() or None
        max_pixels = self.read_max_pixels(parameters, context)
        output = self.parameterAsFileOutput(parameters, self.OUTPUT, context)
        load = self.parameterAsBoolean(parameters, self.LOAD, context)
        show_live = load and self.parameterAsBoolean(parameters, self.LIVE, context)
        live = None  # the live layers, once the store is open
        remember_parameters(parameters, output)

        self.make_output_parent(output)
        started = time.perf_counter()
        try:
            feedback.pushInfo(f"Opening the store {mask(store)} …")
            source = run_cancellable(
                lambda: open_embedding_store(store, variable, options),
                feedback.isCanceled,
            )
            bbox = self.store_bbox(parameters, context, source.grid.crs)
            feedback.pushInfo(
                f"Store {mask(source.url)}: {len(source.times)} years, {len(source.bands)} bands, "
                f"{source.grid.shape[1]} x {source.grid.shape[0]} pixels in "
                f"{source.grid.crs or 'its own grid'}; extent there: {fmt_bbox(bbox)}"
            )
            warn_if_clipped(feedback, bbox, source.grid.bbox)
            # Before compiling the kernel; the engine checks again and logs the estimate.
            size = estimate_run(source, pixel_window(source.grid, bbox), len(years or source.times))
            check_run_size(size, max_pixels, local=runs_locally(scheduler))
            live = live_layers(show_live, context, output, bbox, feedback)
            feedback.pushInfo("Preparing the scoring kernel (compiled once per machine) …")
            compiled = kernels.warm_up(source.dtype, len(set(years or source.times)))
            if compiled > 2:
                feedback.pushInfo(
                    f"Compiled the scoring kernel for this machine in {compiled:.0f} s; "
                    "later runs load it from numba's cache."
                )
            scores = compute_change_scores(
                source,  # opened once: the engine does not open it again
                output,
                bbox=bbox,
                variable=variable,
                methods=methods,
                metric=metric,
                robust_zscore=robust_zscore,
                years=years,
                storage_options=options,
                zarr_format=zarr_format_for_layers(),
                progress=StageProgress(feedback),
                cancel=feedback.isCanceled,
                scheduler=scheduler,
                log=feedback.pushInfo,
                max_pixels=max_pixels,
                on_tile=live.on_tile if live is not None else None,
                centre_first=live is not None,
                cache=chunk_cache(self.parameterAsDouble(parameters, self.CACHE_SIZE, context)),
            )
        except BaseException as exc:
            if live is not None:
                live.discard()
            if isinstance(exc, QgsProcessingException) or not isinstance(exc, Exception):
                raise
            # the engine's errors, and anything it did not foresee
            if not isinstance(exc, EmbeddingChangeError):
                feedback.pushDebugInfo(mask(traceback.format_exc()))
            raise QgsProcessingException(one_line_message(exc)) from exc
        seconds = time.perf_counter() - started
        years_done = [int(y) for y in scores["time"].values]
        bands_done = [str(b) for b in scores["band"].values]
        report_run(feedback, scores.attrs, output, bands_done, seconds)
        scores.close()
        temporary = is_temporary_output(output)
        if temporary:
            feedback.pushWarning(
                f"The output {output} is a temporary folder: QGIS removes it when it exits. "
                "Give a Zarr folder as output to keep the scores."
            )
        if not load:
            feedback.pushInfo("Layers not loaded (Load layers on completion is off).")
            return {self.OUTPUT: output}
        if live is not None:
            live.finish()
            feedback.pushInfo(f"The score layers on the map now read {output}.")
            return {self.OUTPUT: output}
        feedback.pushInfo("Loading layers …")
        run_name = temporary_run_name(bbox) if temporary else None
        loaded = register_score_layers(
            output, years_done, bands_done, context, run_name=run_name, load_check=self.id()
        )
        if loaded:
            feedback.pushInfo(f"{loaded} score layers will load into the project.")
        return {self.OUTPUT: output}


def chunk_cache(gigabytes: float):
    """The chunk cache in the profile's folder (EMBEDDING_CHANGE_CACHE_DIR overrides); False
    (none) at 0 GB."""
    from ..core.chunk_cache import ChunkCache
    from ..dependencies.caches import chunk_cache_folder

    if not gigabytes or gigabytes <= 0:
        return False
    folder = chunk_cache_folder(QgsApplication.qgisSettingsDirPath())
    return ChunkCache(str(folder), max_bytes=int(gigabytes * 1e9))


SETTINGS = "embedding_change/change_scores"
REMEMBERED = ("METHODS", "METRIC", "ROBUST_ZSCORE", "YEARS")  # and the store (remember_store)


def remember_parameters(parameters: dict, output: str) -> None:
    """Keep this run's choices (and the output's folder) for the next dialog from the button."""
    remember(SETTINGS, REMEMBERED, parameters)
    settings = QgsSettings()
    if "://" not in output and not is_temporary_output(output):
        from pathlib import Path

        settings.setValue(f"{SETTINGS}/output_folder", str(Path(output).absolute().parent))


def remembered_parameters() -> dict:
    """The last run's choices as dialog parameters, with a new output in the last folder."""
    parameters = {**remembered_store(), **remembered(SETTINGS, REMEMBERED)}
    folder = QgsSettings().value(f"{SETTINGS}/output_folder", "")
    if folder:
        stamp = time.strftime("%Y%m%d_%H%M%S")
        parameters["OUTPUT"] = f"{folder}/change_scores_{stamp}.zarr"
    return parameters


def live_layers(wanted: bool, context, output: str, bbox, feedback):
    """The run's live layers (layers/live.py) when asked for and the desktop can show them."""
    if not wanted:
        return None
    from ..layers.live import LiveScoreLayers, can_show_live

    if not can_show_live(context):
        feedback.pushInfo("The layers load when the run is complete (no desktop map to fill).")
        return None
    feedback.pushInfo("The score layers appear as the tiles are written, the middle first.")
    run_name = temporary_run_name(bbox) if is_temporary_output(output) else None
    return LiveScoreLayers(output, run_name)


def warn_if_clipped(feedback, bbox, store_bbox) -> None:
    """A warning naming the part kept when the extent reaches outside the store."""
    kept = (
        max(bbox[0], store_bbox[0]),
        max(bbox[1], store_bbox[1]),
        min(bbox[2], store_bbox[2]),
        min(bbox[3], store_bbox[3]),
    )
    if kept == tuple(bbox) or kept[0] >= kept[2] or kept[1] >= kept[3]:
        return  # inside, or all outside (the engine says so)
    share = (kept[2] - kept[0]) * (kept[3] - kept[1]) / ((bbox[2] - bbox[0]) * (bbox[3] - bbox[1]))
    feedback.pushWarning(
        f"The extent reaches outside the store: kept {fmt_bbox(kept)} "
        f"({share:.0%} of the extent asked for)."
    )


class StageProgress:
    """The engine's progress on the bar, and in the log each quarter of the tiles scored."""

    def __init__(self, feedback):
        self.feedback = feedback
        self.reported = 0

    def __call__(self, fraction: float) -> None:
        self.feedback.setProgress(100 * fraction)
        quarter = int(4 * fraction + 1e-9)
        if quarter > self.reported:
            self.reported = quarter
            self.feedback.pushInfo(
                f"Reading and scoring: {25 * quarter}% of the tiles done"
                + (", written." if quarter == 4 else " …")
            )


def parse_years(text: str | None) -> list[int] | None:
    """ "2018,2020-2023" -> [2018, 2020, 2021, 2022, 2023]; empty -> None (all years)."""
    text = (text or "").strip()
    if not text:
        return None
    years = set()
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d{4})\s*(?:-\s*(\d{4}))?", part)
        if not match:
            raise QgsProcessingException(
                f"Cannot read the years {text!r}: write years and ranges like 2018,2020-2023."
            )
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first:
            raise QgsProcessingException(f"The years {part} run backwards; write {last}-{first}.")
        years.update(range(first, last + 1))
    return sorted(years)


def fmt_bbox(bbox) -> str:
    return "({:.6f}, {:.6f}, {:.6f}, {:.6f})".format(*bbox)


def report_run(feedback, attrs: dict, output: str, bands: list[str], seconds: float) -> None:
    """What was read and how long it took, for the Processing log."""
    window = attrs.get("embedding_change:window", {})
    pixels = int(attrs.get("embedding_change:pixels", 0))
    years = attrs.get("embedding_change:years", [])
    nbytes = int(attrs.get("embedding_change:bytes_read", 0))
    if window:
        feedback.pushInfo(
            f"Read window rows {window['row0']}..{window['row1']}, "
            f"cols {window['col0']}..{window['col1']}: "
            f"{window['col1'] - window['col0']} x {window['row1'] - window['row0']} = "
            f"{pixels:,} pixels, years {', '.join(str(y) for y in years)}, "
            f"{nbytes / 2**20:,.1f} MiB of embeddings."
        )
    rate = f", {nbytes / 2**20 / seconds:,.1f} MiB/s" if seconds > 0 and nbytes else ""
    feedback.pushInfo(
        f"Wrote {len(bands)} scores ({', '.join(bands)}) to {output} in {seconds:.1f} s{rate}."
    )
