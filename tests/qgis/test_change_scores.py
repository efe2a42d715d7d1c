"""algorithms/change_scores.py: the Processing algorithm, from disk and S3, in the background."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import xarray as xr
from qgis.core import (
    QgsApplication,
    QgsProcessingAlgorithm,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProject,
)
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QApplication

from embedding_change.algorithms.change_scores import METHODS, METRICS, parse_years
from embedding_change.algorithms.embedding_change_algorithm import AEF_STORE
from embedding_change.core import compute_change_scores, kernels
from embedding_change.core.store import open_embedding_store

from .conftest import (
    ALGORITHM,
    assert_consolidated_in_a_format_gdal_reads,
    assert_layers_show_the_store,
    read_scores_store,
    score_layer_names,
    store_extent,
    wait_for_background_tasks,
)

pytestmark = pytest.mark.qgis

EARTH_RADIUS = 6378137.0
# A box inside the session store whose edges fall between pixel edges.
INSIDE = (0.1037, 0.5513, 0.2071, 0.6129)


def run(parameters, feedback=None):
    import processing

    return processing.run(ALGORITHM, parameters, feedback=feedback or QgsProcessingFeedback())


def store_bbox(aef_store):
    path, _ = aef_store
    return open_embedding_store(path).grid.bbox


def part_of(bbox, fraction):
    xmin, ymin, xmax, ymax = bbox
    fx0, fx1, fy0, fy1 = fraction
    w, h = xmax - xmin, ymax - ymin
    return (xmin + fx0 * w, ymin + fy0 * h, xmin + fx1 * w, ymin + fy1 * h)


def web_mercator(lon, lat):
    """EPSG:3857 from degrees, the spherical formula (independent of QGIS and PROJ)."""
    x = EARTH_RADIUS * math.radians(lon)
    y = EARTH_RADIUS * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))
    return x, y


def scores_of(path):
    with xr.open_zarr(path, consolidated=None) as scores:
        return scores.load()


def is_summary(layer) -> bool:
    return bool(layer.customProperty("embedding_change/summary", False))


def score_layers_of(project):
    """The project's score layers (not the summary layers "when it changed")."""
    return [layer for layer in project.mapLayers().values() if not is_summary(layer)]


def test_parameters_keep_the_names_and_defaults_models_rely_on(provider):
    algorithm = QgsApplication.processingRegistry().algorithmById(ALGORITHM)

    names = [p.name() for p in algorithm.parameterDefinitions()]
    assert names == [
        "STORE",
        "VARIABLE",
        "EXTENT",
        "METHODS",
        "METRIC",
        "ROBUST_ZSCORE",
        "YEARS",
        "STORAGE_OPTIONS",
        "AUTHCFG",
        "SCHEDULER",
        "MAX_PIXELS",
        "CACHE_SIZE",
        "LOAD",
        "LIVE",
        "OUTPUT",
    ]
    parameter = algorithm.parameterDefinition
    assert parameter("LOAD").defaultValue() is True
    # Results while they arrive only when asked for (the toolbar button's dialog does).
    assert parameter("LIVE").defaultValue() is False
    assert parameter("STORE").defaultValue() == AEF_STORE
    assert parameter("VARIABLE").defaultValue() == "embeddings"
    assert parameter("METHODS").options() == list(kernels.METHODS) == list(METHODS)
    assert parameter("METRIC").options() == list(kernels.METRICS) == list(METRICS)
    assert parameter("METHODS").defaultValue() == [0, 1]
    assert parameter("ROBUST_ZSCORE").defaultValue() is True
    assert parameter("CACHE_SIZE").defaultValue() == 20
    for name in ("STORAGE_OPTIONS", "SCHEDULER", "MAX_PIXELS", "CACHE_SIZE", "LIVE"):
        assert parameter(name).flags() & QgsProcessingParameterDefinition.FlagAdvanced
    assert not algorithm.flags() & QgsProcessingAlgorithm.FlagNoThreading
    assert algorithm.flags() & QgsProcessingAlgorithm.FlagCanCancel
    assert algorithm.flags() & QgsProcessingAlgorithm.FlagSupportsBatch


def test_scores_equal_the_engine_on_the_same_box_given_in_another_crs(
    provider, aef_store, tmp_path
):
    path, _ = aef_store
    xmin, ymin, xmax, ymax = part_of(store_bbox(aef_store), INSIDE)
    x0, y0 = web_mercator(xmin, ymin)
    x1, y1 = web_mercator(xmax, ymax)

    result = run(
        {
            "STORE": str(path),
            "EXTENT": f"{x0!r},{x1!r},{y0!r},{y1!r} [EPSG:3857]",
            "OUTPUT": str(tmp_path / "qgis.zarr"),
        }
    )

    assert result["OUTPUT"] == str(tmp_path / "qgis.zarr")
    expected = compute_change_scores(path, tmp_path / "engine.zarr", bbox=(xmin, ymin, xmax, ymax))
    got = scores_of(result["OUTPUT"])
    assert got["scores"].shape == expected["scores"].shape
    np.testing.assert_array_equal(got["x"], expected["x"])
    np.testing.assert_array_equal(got["y"], expected["y"])
    np.testing.assert_array_equal(got["band"], expected["band"])
    np.testing.assert_array_equal(got["scores"].values, expected["scores"].values)


@pytest.fixture
def aws_variables(s3_storage_options, monkeypatch):
    """The local S3 server's credentials in the standard AWS variables (where they belong:
    STORAGE_OPTIONS refuses secrets); yields the storage options left: the endpoint."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_storage_options["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_storage_options["secret"])
    return {"endpoint_url": s3_storage_options["endpoint_url"]}


def test_reads_a_store_from_the_local_s3_server(
    provider, s3_bucket, s3_storage_options, aws_variables, tmp_path
):
    from embedding_change.core.synthetic import write_aef_like_store

    url = f"{s3_bucket}/aef.zarr"
    write_aef_like_store(url, shape=(200, 260), seed=3, storage_options=s3_storage_options)
    write_aef_like_store(tmp_path / "same.zarr", shape=(200, 260), seed=3)
    bbox = part_of(open_embedding_store(tmp_path / "same.zarr").grid.bbox, INSIDE)

    result = run(
        {
            "STORE": url,
            "STORAGE_OPTIONS": json.dumps(aws_variables),
            "EXTENT": store_extent(bbox),
            "METHODS": [1],
            "METRIC": 2,
            "ROBUST_ZSCORE": False,
            "OUTPUT": str(tmp_path / "from_s3.zarr"),
        }
    )

    expected = compute_change_scores(
        tmp_path / "same.zarr",
        tmp_path / "engine.zarr",
        bbox=bbox,
        methods=("loo_medoid",),
        metric="euclidean",
        robust_zscore=False,
    )
    got = scores_of(result["OUTPUT"])
    assert list(got["band"].values) == ["loo_medoid_euclidean_distance"]
    np.testing.assert_array_equal(got["scores"].values, expected["scores"].values)


def test_a_second_run_on_s3_reads_its_chunks_from_the_cache_unless_it_is_off(
    provider, s3_bucket, s3_storage_options, aws_variables, tmp_path, monkeypatch
):
    from embedding_change.core.synthetic import write_aef_like_store

    monkeypatch.setenv("EMBEDDING_CHANGE_CACHE_DIR", str(tmp_path / "chunks"))
    url = f"{s3_bucket}/aef.zarr"
    write_aef_like_store(url, shape=(256, 256), bands=8, seed=3, storage_options=s3_storage_options)
    logs = []
    for i, size in enumerate((20, 20, 0)):
        feedback = QgsProcessingFeedback()
        parameters = {
            "STORE": url,
            "STORAGE_OPTIONS": json.dumps(aws_variables),
            "EXTENT": "-180,180,-90,90 [EPSG:4326]",
            "CACHE_SIZE": size,
            "OUTPUT": str(tmp_path / f"run{i}.zarr"),
        }
        run(parameters, feedback)
        logs.append(feedback.textLog())

    assert f"Chunk cache {tmp_path / 'chunks'}: 0 of " in logs[0]
    assert "chunk reads from the cache" in logs[1] and ", 0 fetched (0.0 MB)" in logs[1]
    assert "Chunk cache" not in logs[2]
    assert list((tmp_path / "chunks").rglob("*.chunk"))


def test_the_chunk_cache_is_in_the_profile_folder_unless_the_variable_says_otherwise(
    tmp_path, monkeypatch
):
    from pathlib import Path

    from embedding_change.algorithms.change_scores import chunk_cache

    monkeypatch.delenv("EMBEDDING_CHANGE_CACHE_DIR", raising=False)
    profile = Path(QgsApplication.qgisSettingsDirPath())
    assert chunk_cache(20).folder == str(profile / "embedding_change" / "chunks")
    assert chunk_cache(20).max_bytes == 20 * 10**9
    assert chunk_cache(0) is False
    monkeypatch.setenv("EMBEDDING_CHANGE_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert chunk_cache(1.5).folder == str(tmp_path / "elsewhere")
    assert chunk_cache(1.5).max_bytes == 1_500_000_000


def test_years_parameter_scores_only_those_years(provider, aef_store, tmp_path):
    path, _ = aef_store
    result = run(
        {
            "STORE": str(path),
            "EXTENT": store_extent(store_bbox(aef_store), INSIDE),
            "YEARS": "2018, 2020-2022,2025",
            "OUTPUT": str(tmp_path / "years.zarr"),
        }
    )
    assert list(scores_of(result["OUTPUT"])["time"].values) == [2018, 2020, 2021, 2022, 2025]


def test_log_says_what_was_read_and_how_long_it_took(provider, aef_store, tmp_path):
    path, _ = aef_store
    feedback = QgsProcessingFeedback()
    run(
        {
            "STORE": str(path),
            "EXTENT": store_extent(store_bbox(aef_store), INSIDE),
            "OUTPUT": str(tmp_path / "log.zarr"),
        },
        feedback,
    )
    scores = scores_of(tmp_path / "log.zarr")
    ny, nx = scores["scores"].shape[2:]
    log = feedback.textLog()
    assert f"{nx} x {ny} = {nx * ny:,} pixels" in log
    assert "years 2017, 2018, 2019, 2020, 2021, 2022, 2023, 2024, 2025" in log
    assert f"{nx * ny * 9 * 64 / 2**20:,.1f} MiB of embeddings" in log
    assert " s, " in log and "Wrote 2 scores" in log


def test_a_run_loads_the_score_layers_into_the_project(provider, project, aef_store, tmp_path):
    import processing

    path, _ = aef_store
    processing.runAndLoadResults(
        ALGORITHM,
        {
            "STORE": str(path),
            "EXTENT": store_extent(store_bbox(aef_store), INSIDE),
            "OUTPUT": str(tmp_path / "loaded.zarr"),
        },
    )

    (run_group,) = project.layerTreeRoot().findGroups()
    assert run_group.name() == "loaded.zarr"
    *groups, summary = run_group.findGroups()
    assert summary.name() == "When it changed: LOO medoid z-score"
    assert [n.name() for n in summary.findLayers()] == ["Year of largest change", "Largest change"]
    assert [g.name() for g in groups] == ["LOO medoid z-score", "Year-to-year difference z-score"]
    bands = [g.findLayers()[0].layer().customProperty("embedding_change/band") for g in groups]
    assert sorted(bands) == list(kernels.score_labels(METHODS, METRICS[0], True))
    for group in groups:
        assert [n.name() for n in group.findLayers()] == score_layer_names(range(2017, 2026))
    layers = score_layers_of(project)
    assert len(layers) == 2 * len(score_layer_names(range(2017, 2026)))
    assert_layers_show_the_store(layers, read_scores_store(tmp_path / "loaded.zarr"))


def test_runs_as_a_background_task_reporting_progress(provider, project, aef_store, tmp_path):
    from processing.gui.Postprocessing import handleAlgorithmResults

    path, _ = aef_store
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(ALGORITHM)
    context = QgsProcessingContext()
    context.setProject(project)
    feedback = QgsProcessingFeedback()
    progress = []
    feedback.progressChanged.connect(progress.append)
    outcome = {}
    task = QgsProcessingAlgRunnerTask(
        algorithm,
        {
            "STORE": str(path),
            "EXTENT": store_extent(store_bbox(aef_store)),
            "OUTPUT": str(tmp_path / "task.zarr"),
        },
        context,
        feedback,
    )
    task.executed.connect(lambda ok, results: outcome.update(ok=ok, results=results))
    QgsApplication.taskManager().addTask(task)
    while "ok" not in outcome:  # the main thread keeps handling events meanwhile
        QApplication.processEvents()

    assert outcome["ok"], feedback.textLog()
    assert outcome["results"]["OUTPUT"] == str(tmp_path / "task.zarr")
    assert progress and max(progress) == pytest.approx(100)
    assert progress == sorted(progress)
    assert handleAlgorithmResults(algorithm, context, feedback)
    layers = score_layers_of(project)
    assert len(layers) == 2 * len(score_layer_names(range(2017, 2026)))
    assert_layers_show_the_store(layers, read_scores_store(tmp_path / "task.zarr"))


def test_cancel_stops_the_run_and_leaves_no_output(provider, aef_store, tmp_path):
    path, _ = aef_store
    feedback = QgsProcessingFeedback()
    progress = []

    def cancel_after_first_tile(value):
        progress.append(value)
        feedback.cancel()

    # Direct: the engine reports progress from its own thread, and the blocking run leaves the
    # main thread no event loop to deliver a queued signal in.
    feedback.progressChanged.connect(cancel_after_first_tile, Qt.DirectConnection)
    with pytest.raises(QgsProcessingException, match="[Cc]ancel"):
        run(
            {
                "STORE": str(path),
                "EXTENT": store_extent(store_bbox(aef_store)),
                "SCHEDULER": "synchronous",
                "OUTPUT": str(tmp_path / "cancelled.zarr"),
            },
            feedback,
        )
    assert max(progress) < 100
    assert not (tmp_path / "cancelled.zarr").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"STORE": "/no/such/store.zarr"}, "No Zarr store at /no/such/store.zarr"),
        ({"VARIABLE": "embedding"}, "no variable 'embedding'"),
        ({"EXTENT": "10,11,50,51 [EPSG:4326]"}, "lies outside the store"),
        ({"OUTPUT": "{store}/zarr.json/out.zarr"}, "zarr.json does not exist; create it"),
        ({"OUTPUT": "{store}"}, "already exists; choose a new name"),
        ({"YEARS": "2018-19"}, "write years and ranges like 2018,2020-2023"),
        ({"YEARS": "2019"}, "at least two years"),
        ({"YEARS": "2010-2018"}, "not in the store"),
        ({"STORAGE_OPTIONS": "{anon: true}"}, "Storage options must be JSON"),
        ({"STORAGE_OPTIONS": "[1, 2]"}, "must be a JSON object"),
    ],
)
def test_bad_input_says_what_to_fix(provider, aef_store, tmp_path, change, message):
    path, _ = aef_store
    parameters = {
        "STORE": str(path),
        "EXTENT": store_extent(store_bbox(aef_store), INSIDE),
        "OUTPUT": str(tmp_path / "out.zarr"),
    }
    parameters.update(
        {
            k: v.replace("{tmp}", str(tmp_path)).replace("{store}", str(path))
            for k, v in change.items()
        }
    )
    with pytest.raises(QgsProcessingException, match=message):
        run(parameters)
    assert not (tmp_path / "out.zarr").exists()


def test_output_in_a_new_folder_creates_the_folder(provider, aef_store, tmp_path):
    path, _ = aef_store
    output = tmp_path / "new" / "folder" / "out.zarr"

    result = run(
        {
            "STORE": str(path),
            "EXTENT": store_extent(store_bbox(aef_store), INSIDE),
            "YEARS": "2019-2021",
            "OUTPUT": str(output),
        }
    )

    assert result["OUTPUT"] == str(output)
    assert_consolidated_in_a_format_gdal_reads(output)


def test_unreachable_s3_store_says_what_to_check(provider, aws_variables, tmp_path):
    with pytest.raises(QgsProcessingException, match="s3://no-such-bucket/aef.zarr") as error:
        run(
            {
                "STORE": "s3://no-such-bucket/aef.zarr",
                "STORAGE_OPTIONS": json.dumps(aws_variables),
                "EXTENT": "-105.3,-105.2,40.0,40.1 [EPSG:4326]",
                "OUTPUT": str(tmp_path / "out.zarr"),
            }
        )
    assert "Check" in str(error.value)


def test_years_text_reads_lists_and_ranges():
    assert parse_years("") is None
    assert parse_years(" 2018,2020-2023 ") == [2018, 2020, 2021, 2022, 2023]
    assert parse_years("2021;2019 - 2020") == [2019, 2020, 2021]
    with pytest.raises(QgsProcessingException, match="backwards"):
        parse_years("2023-2020")


def test_batch_dialog_runs_each_row_and_loads_its_layers(
    provider, project, aef_store, tmp_path, qgis_iface
):
    from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog
    from processing.tools import dataobjects

    path, _ = aef_store
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(ALGORITHM)
    dialog = BatchAlgorithmDialog(algorithm, parent=qgis_iface.mainWindow())
    panel = dialog.mainWidget()
    panel.checkLoadLayersOnCompletion.setChecked(True)  # off by default in the batch dialog
    context = dataobjects.createContext()
    rows = [(0.05, 0.35, 0.1, 0.4), (0.55, 0.95, 0.5, 0.9)]
    panel.addRow(len(rows) - panel.batchRowCount())
    for row, fraction in enumerate(rows):
        values = {
            "STORE": str(path),
            "EXTENT": store_extent(store_bbox(aef_store), fraction),
        }
        for name, value in values.items():
            panel.wrappers[row][panel.parameter_to_column[name]].setParameterValue(value, context)
        output = panel.tblParameters.cellWidget(row + 1, panel.parameter_to_column["OUTPUT"])
        output.setValue(str(tmp_path / f"row{row}.zarr"))

    # Shown, as the analyst's dialog is: QGIS 3.40 runs the rows as tasks, and a dialog that is
    # hidden when its last row finishes deletes itself (deleteLater), which pytest-qgis carries
    # out while that row's layers still load (it delivers deferred deletes on legendLayersAdded).
    dialog.show()
    dialog.runAlgorithm()
    wait_for_background_tasks()
    dialog.close()
    dialog.deleteLater()

    run_groups = QgsProject.instance().layerTreeRoot().findGroups()
    assert sorted(g.name() for g in run_groups) == [f"row{row}.zarr" for row in range(len(rows))]
    for group in run_groups:
        store = read_scores_store(tmp_path / group.name())
        assert (len(store.years), len(store.bands)) == (9, 2)
        layers = [n.layer() for n in group.findLayers() if not is_summary(n.layer())]
        assert len(layers) == 2 * len(score_layer_names(store.years))
        assert_layers_show_the_store(layers, store)


@pytest.fixture
def clean_settings():
    """No remembered choices before or after the test."""
    from qgis.core import QgsSettings

    from embedding_change.algorithms.change_scores import SETTINGS
    from embedding_change.algorithms.embedding_change_algorithm import STORE_SETTINGS

    for group in (SETTINGS, STORE_SETTINGS):
        QgsSettings().remove(group)
    yield
    for group in (SETTINGS, STORE_SETTINGS):
        QgsSettings().remove(group)


def test_with_loading_off_nothing_loads(provider, project, aef_store, tmp_path):
    import processing

    path, _ = aef_store
    feedback = QgsProcessingFeedback()
    processing.runAndLoadResults(
        ALGORITHM,
        {
            "STORE": str(path),
            "EXTENT": store_extent(store_bbox(aef_store), INSIDE),
            "LOAD": False,
            "OUTPUT": str(tmp_path / "unloaded.zarr"),
        },
        feedback=feedback,
    )

    assert project.mapLayers() == {}
    assert project.layerTreeRoot().children() == []
    assert "Layers not loaded" in feedback.textLog()
    assert read_scores_store(tmp_path / "unloaded.zarr").scores.shape[:2] == (9, 2)


def test_batch_dialog_with_loading_off_loads_nothing(
    provider, project, aef_store, tmp_path, qgis_iface
):
    from processing.gui.BatchAlgorithmDialog import BatchAlgorithmDialog
    from processing.tools import dataobjects

    path, _ = aef_store
    algorithm = QgsApplication.processingRegistry().createAlgorithmById(ALGORITHM)
    dialog = BatchAlgorithmDialog(algorithm, parent=qgis_iface.mainWindow())
    panel = dialog.mainWidget()
    panel.checkLoadLayersOnCompletion.setChecked(False)
    context = dataobjects.createContext()
    rows = [(0.05, 0.35, 0.1, 0.4), (0.55, 0.95, 0.5, 0.9)]
    panel.addRow(len(rows) - panel.batchRowCount())
    for row, fraction in enumerate(rows):
        values = {"STORE": str(path), "EXTENT": store_extent(store_bbox(aef_store), fraction)}
        for name, value in values.items():
            panel.wrappers[row][panel.parameter_to_column[name]].setParameterValue(value, context)
        output = panel.tblParameters.cellWidget(row + 1, panel.parameter_to_column["OUTPUT"])
        output.setValue(str(tmp_path / f"row{row}.zarr"))

    dialog.show()
    dialog.runAlgorithm()
    wait_for_background_tasks()
    dialog.close()
    dialog.deleteLater()

    assert QgsProject.instance().mapLayers() == {}
    assert QgsProject.instance().layerTreeRoot().findGroups() == []
    for row in range(len(rows)):  # the rows did run
        assert read_scores_store(tmp_path / f"row{row}.zarr").scores.shape[:2] == (9, 2)


def test_the_next_dialog_starts_from_the_last_runs_choices(
    provider, aef_store, tmp_path, clean_settings
):
    from embedding_change.algorithms.change_scores import remembered_parameters

    path, _ = aef_store
    assert remembered_parameters() == {}
    run(
        {
            "STORE": str(path),
            "VARIABLE": "embeddings",
            "EXTENT": store_extent(store_bbox(aef_store), INSIDE),
            "METHODS": [1],
            "METRIC": 2,
            "YEARS": "2018-2021",
            "OUTPUT": str(tmp_path / "runs" / "first.zarr"),
        }
    )

    remembered = remembered_parameters()
    output = remembered.pop("OUTPUT")
    assert remembered == {
        "STORE": str(path),
        "VARIABLE": "embeddings",
        "METHODS": [1],
        "METRIC": 2,
        "YEARS": "2018-2021",
    }
    assert output.startswith(str(tmp_path / "runs") + "/change_scores_") and output.endswith(
        ".zarr"
    )


def test_the_toolbar_dialog_gets_the_remembered_choices_and_the_canvas_extent(
    provider, aef_store, tmp_path, clean_settings, qgis_iface
):
    from embedding_change.provider.plugin import EmbeddingChangePlugin

    path, _ = aef_store
    run(
        {
            "STORE": str(path),
            "EXTENT": store_extent(store_bbox(aef_store), INSIDE),
            "METRIC": 1,
            "OUTPUT": str(tmp_path / "a.zarr"),
        }
    )
    parameters = EmbeddingChangePlugin(qgis_iface).dialog_parameters()
    assert parameters["STORE"] == str(path)
    assert parameters["METRIC"] == 1
    assert parameters["EXTENT"].endswith("]")


def test_log_reports_the_stages_a_clipped_extent_and_a_temporary_output(provider, aef_store):
    path, _ = aef_store
    xmin, ymin, xmax, ymax = store_bbox(aef_store)
    width = xmax - xmin
    # The right half of the extent lies east of the store: half of it is kept.
    extent = f"{xmin + 0.5 * width!r},{xmax + 0.5 * width!r},{ymin!r},{ymax!r} [EPSG:4326]"
    feedback = QgsProcessingFeedback()
    result = run(
        {"STORE": str(path), "EXTENT": extent, "YEARS": "2018-2020", "OUTPUT": "TEMPORARY_OUTPUT"},
        feedback,
    )

    log = feedback.textLog()
    stages = [
        "Opening the store",
        "Preparing the scoring kernel",
        "Reading and scoring: 25% of the tiles done",
        "Reading and scoring: 100% of the tiles done, written.",
        "Wrote 2 scores",
    ]
    positions = [log.index(stage) for stage in stages]
    assert positions == sorted(positions)
    kept = f"kept ({xmin + 0.5 * width:.6f}, {ymin:.6f}, {xmax:.6f}, {ymax:.6f}) (50% of the extent"
    assert kept in log
    assert f"The output {result['OUTPUT']} is a temporary folder: QGIS removes it" in log


def test_an_empty_extent_says_how_to_give_one(provider, aef_store, tmp_path):
    path, _ = aef_store
    with pytest.raises(QgsProcessingException, match="is empty .*an empty project gives 0,0,0,0"):
        run(
            {
                "STORE": str(path),
                "EXTENT": "0,0,0,0 [EPSG:4326]",
                "OUTPUT": str(tmp_path / "none.zarr"),
            }
        )
    assert not (tmp_path / "none.zarr").exists()
