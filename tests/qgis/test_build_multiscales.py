"""Build multiscale pyramid through processing.run, and its layers (the model: test_model.py)."""

from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import (
    QgsProcessingException,
    QgsProcessingFeedback,
)

from embedding_change.algorithms import build_multiscales
from embedding_change.core import build_multiscales as build_pyramid
from embedding_change.core.pyramid_levels import RESAMPLING_METHODS
from embedding_change.layers import pyramid as pyramid_layers
from embedding_change.layers.sources import zarr_format_for_layers

from .conftest import (
    YEARS_AS_BANDS,
    assert_consolidated_in_a_format_gdal_reads,
    block_max,
    block_second_max,
    level_values,
    placed_slices,
    score_layer_names,
    write_scores_store,
)

pytestmark = pytest.mark.qgis
ALGORITHM = "embeddingchange:buildmultiscales"
SHAPE = (300, 520)  # three levels with 256-pixel tiles: 300 x 520, 150 x 260, 75 x 130


@pytest.fixture
def large_scores(tmp_path):
    return write_scores_store(tmp_path / "scores.zarr", years=range(2019, 2023), shape=SHAPE)


def test_resampling_choices_are_the_engine_names():
    assert set(build_multiscales.RESAMPLINGS) == set(RESAMPLING_METHODS)


def test_the_default_resampling_is_the_engines_and_max_stays_a_choice(provider):
    import inspect

    from qgis.core import QgsApplication

    from embedding_change.core import multiscales

    algorithm = QgsApplication.processingRegistry().algorithmById(ALGORITHM)
    parameter = algorithm.parameterDefinition("RESAMPLING")
    engine = inspect.signature(multiscales.build_multiscales).parameters["resampling"].default
    assert parameter.options()[parameter.defaultValue()] == engine == "second_max"
    assert parameter.options()[0] == "max"  # what models saved before second_max still mean


@pytest.mark.parametrize("given_as", ["layer", "group", "layer id", "group name"])
def test_input_can_be_a_loaded_score_layer_or_group(
    provider, project, large_scores, tmp_path, given_as
):
    import processing

    from embedding_change.layers import score_layers

    layers = score_layers.load_score_layers(large_scores.path, project)
    (run_group,) = project.layerTreeRoot().findGroups()
    value = {
        "layer": layers[-1],
        "group": run_group.findGroups()[0],
        "layer id": layers[0].id(),
        "group name": run_group.name(),
    }[given_as]
    output = tmp_path / "from_layer.zarr"
    processing.run(ALGORITHM, {"INPUT": value, "OUTPUT": str(output)})

    np.testing.assert_array_equal(level_values(output, 0), large_scores.scores)
    np.testing.assert_array_equal(level_values(output, 1), block_second_max(large_scores.scores))


def test_processing_run_builds_levels_that_keep_the_highest_score(provider, large_scores, tmp_path):
    import processing

    output = tmp_path / "pyramid.zarr"
    parameters = {"INPUT": str(large_scores.path), "VARIABLE": "scores", "RESAMPLING": 0}
    result = processing.run(ALGORITHM, {**parameters, "OUTPUT": str(output)})

    assert result["OUTPUT"] == str(output)
    np.testing.assert_array_equal(level_values(output, 0), large_scores.scores)
    assert level_values(output, 1).shape[2:] == (150, 260)
    np.testing.assert_array_equal(level_values(output, 1), block_max(level_values(output, 0)))
    np.testing.assert_array_equal(level_values(output, 2), block_max(level_values(output, 1)))
    assert not (output / "3").exists()
    assert_consolidated_in_a_format_gdal_reads(output)


def test_a_cancelled_run_raises_and_leaves_no_output(provider, large_scores, tmp_path):
    import processing

    feedback = QgsProcessingFeedback()
    feedback.cancel()
    output = tmp_path / "pyramid.zarr"
    with pytest.raises(QgsProcessingException, match="[Cc]ancel"):
        processing.run(
            ALGORITHM, {"INPUT": str(large_scores.path), "OUTPUT": str(output)}, feedback=feedback
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.zarr"]


def test_engine_errors_are_processing_exceptions_saying_what_to_fix(provider, tmp_path):
    import processing

    with pytest.raises(QgsProcessingException, match="No Zarr store"):
        processing.run(
            ALGORITHM,
            {"INPUT": str(tmp_path / "missing.zarr"), "OUTPUT": str(tmp_path / "pyramid.zarr")},
        )


def band_and_overviews(path: str, number: int) -> list[np.ndarray]:
    """A band of a GDAL dataset, then each of its overviews, read and closed again (a dataset
    left open in a failed test's traceback outlives QGIS and crashes the interpreter at exit)."""
    dataset = gdal.Open(path)
    band = dataset.GetRasterBand(number)
    overviews = [band.GetOverview(k) for k in range(band.GetOverviewCount())]
    return [band.ReadAsArray(), *(overview.ReadAsArray() for overview in overviews)]


def uncompressed_copy(scores, path):
    """The scores store rewritten uncompressed, as Change scores writes it (level 0 links it)."""
    import xarray as xr

    ds = xr.open_zarr(scores.path)
    encoding = {"scores": {"chunks": (1, 1, 256, 256), "compressors": None}}
    ds.to_zarr(path, zarr_format=zarr_format_for_layers(), encoding=encoding, consolidated=True)
    return path


@pytest.mark.parametrize("level_0", ["copied", "linked"])
def test_pyramid_layers_read_level_zero_with_the_coarser_levels_as_overviews(
    project, large_scores, tmp_path, level_0
):
    output = tmp_path / "pyramid.zarr"
    source = large_scores.path
    if level_0 == "linked":
        source = uncompressed_copy(large_scores, tmp_path / "uncompressed.zarr")
    tree = build_pyramid(source, output, resampling="max", zarr_format=zarr_format_for_layers())
    assert tree.attrs["embedding_change:level_0_linked"] == (level_0 == "linked")
    tree.close()
    coarser = [level_values(output, k) for k in (1, 2)]  # 150 x 260, 75 x 130

    layers = pyramid_layers.load_pyramid_layers(output, project=project)

    assert len(layers) == len(score_layer_names(large_scores.years)) * len(large_scores.bands)
    # Before QGIS 3.38 a layer is a level-0 slice VRT that lists every coarser level. From 3.38
    # a layer stacks those VRTs as bands and gets GDAL's virtual overviews of the stack: GDAL
    # 3.10 stops before the first level with a side under 128 pixels (/2 here), 3.13 does not.
    expected_overviews = {1, 2} if YEARS_AS_BANDS else {2}
    shown = []
    for layer in layers:
        for number, t, b in placed_slices(layer, large_scores):
            full, *overviews = band_and_overviews(layer.source(), number)
            np.testing.assert_array_equal(full, large_scores.scores[t, b])
            assert len(overviews) in expected_overviews
            for overview, level in zip(overviews, coarser, strict=False):
                np.testing.assert_array_equal(overview, level[t, b])
            shown.append((t, b))
    assert sorted(shown) == [
        (t, b) for t in range(len(large_scores.years)) for b in range(len(large_scores.bands))
    ]


def test_pyramid_layers_are_grouped_styled_and_animated_like_score_layers(
    project, large_scores, tmp_path
):
    output = tmp_path / "pyramid.zarr"
    build_pyramid(large_scores.path, output, zarr_format=zarr_format_for_layers())

    pyramid_layers.load_pyramid_layers(output, project=project)

    (run_group,) = project.layerTreeRoot().findGroups()
    assert run_group.name() == "pyramid.zarr"
    assert [g.name() for g in run_group.findGroups()] == [
        "LOO medoid z-score",
        "Year-to-year difference z-score",
    ]
    for group in run_group.findGroups():
        assert [n.name() for n in group.findLayers()] == score_layer_names(large_scores.years)
        for node in group.findLayers():
            assert node.layer().renderer().type() == "singlebandpseudocolor"
            assert node.layer().temporalProperties().isActive()
    assert project.timeSettings().temporalRange().begin().date().year() == 2019
