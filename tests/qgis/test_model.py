"""models/change_scores.model3: the Graphical Modeler model runs the algorithm."""

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from qgis.core import QgsProcessingFeedback, QgsProcessingModelAlgorithm

from embedding_change.core import compute_change_scores
from embedding_change.core.store import open_embedding_store

from .conftest import store_extent

pytestmark = pytest.mark.qgis

MODEL = Path(__file__).resolve().parents[2] / "models" / "change_scores.model3"


def test_model_scores_the_area_with_loo_medoid_zscores(provider, aef_store, tmp_path):
    import processing

    path, _ = aef_store
    model = QgsProcessingModelAlgorithm()
    assert model.fromFile(str(MODEL))
    assert {"store", "area", "years"} <= {p.name() for p in model.parameterDefinitions()}
    (output,) = [p.name() for p in model.destinationParameterDefinitions()]
    bbox = open_embedding_store(path).grid.bbox
    xmin, ymin, xmax, ymax = bbox
    box = (xmin + 0.2 * (xmax - xmin), ymin + 0.3 * (ymax - ymin), xmax, ymax)

    results = processing.run(
        model,
        {
            "store": str(path),
            "area": store_extent(bbox, (0.2, 1.0, 0.3, 1.0)),
            "years": "2019-2024",
            output: str(tmp_path / "model.zarr"),
        },
        feedback=QgsProcessingFeedback(),
    )

    assert results[output] == str(tmp_path / "model.zarr")
    expected = compute_change_scores(
        path, tmp_path / "engine.zarr", bbox=box, methods=("loo_medoid",), years=range(2019, 2025)
    )
    with xr.open_zarr(results[output], consolidated=None) as got:
        assert list(got["band"].values) == list(expected["band"].values)
        np.testing.assert_array_equal(got["scores"].values, expected["scores"].values)
