"""models/change_scores.model3: the Graphical Modeler model scores an area and builds a pyramid."""

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from qgis.core import QgsProcessingFeedback, QgsProcessingModelAlgorithm, QgsVectorLayer

from embedding_change.core import compute_change_scores
from embedding_change.core.store import open_embedding_store

from .conftest import block_second_max, level_values, store_extent

pytestmark = pytest.mark.qgis

MODEL = Path(__file__).resolve().parents[2] / "models" / "change_scores.model3"


def test_model_file_chains_change_scores_into_the_pyramid(provider, aef_store, tmp_path):
    import processing

    path, _ = aef_store
    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(MODEL))
    assert model.validate() == (True, [])
    assert {"store", "area", "years"} <= {p.name() for p in model.parameterDefinitions()}
    outputs = {
        p.name().rsplit(":", 1)[-1]: p.name() for p in model.destinationParameterDefinitions()
    }
    assert set(outputs) == {"scores", "pyramid", "hotspots"}
    bbox = open_embedding_store(path).grid.bbox
    xmin, ymin, xmax, ymax = bbox
    box = (xmin + 0.2 * (xmax - xmin), ymin + 0.3 * (ymax - ymin), xmax, ymax)
    scores_path, pyramid_path = tmp_path / "model.zarr", tmp_path / "pyramid.zarr"
    hotspots_path = tmp_path / "hotspots.gpkg"

    results = processing.run(
        model,
        {
            "store": str(path),
            "area": store_extent(bbox, (0.2, 1.0, 0.3, 1.0)),
            "years": "2019-2024",
            outputs["scores"]: str(scores_path),
            outputs["pyramid"]: str(pyramid_path),
            outputs["hotspots"]: str(hotspots_path),
        },
        feedback=QgsProcessingFeedback(),
    )

    assert results[outputs["scores"]] == str(scores_path)
    assert results[outputs["pyramid"]] == str(pyramid_path)
    expected = compute_change_scores(
        path, tmp_path / "engine.zarr", bbox=box, methods=("loo_medoid",), years=range(2019, 2025)
    )
    with xr.open_zarr(scores_path, consolidated=None) as got:
        assert list(got["band"].values) == list(expected["band"].values)
        np.testing.assert_array_equal(got["scores"].values, expected["scores"].values)
    # 448 x 420 pixels: level /0 is the scores, /1 (224 x 210) fits one 256-pixel tile.
    np.testing.assert_array_equal(level_values(pyramid_path, 0), expected["scores"].values)
    np.testing.assert_array_equal(
        level_values(pyramid_path, 1), block_second_max(expected["scores"].values)
    )
    assert not (pyramid_path / "2").exists()
    # The hotspots step reads the model's scores: polygons only in the years it scored.
    hotspots = QgsVectorLayer(str(hotspots_path), "hotspots", "ogr")
    assert hotspots.isValid() and hotspots.featureCount() > 0
    years = {feature["year"] for feature in hotspots.getFeatures()}
    assert years <= set(range(2019, 2025))
