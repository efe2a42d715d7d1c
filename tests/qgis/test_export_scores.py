"""Export change scores through processing.run: GeoTIFFs QGIS reads in the right place."""

from __future__ import annotations

import math

import numpy as np
import pytest
from qgis.core import QgsProcessingException, QgsRasterLayer

from .conftest import band_values

pytestmark = pytest.mark.qgis
ALGORITHM = "embeddingchange:exportscores"


def test_processing_run_writes_geotiffs_qgis_places_and_reads(provider, scores_store, tmp_path):
    import processing

    result = processing.run(
        ALGORITHM, {"INPUT": str(scores_store.path), "OUTPUT": str(tmp_path / "cogs")}
    )

    assert result["OUTPUT"] == str(tmp_path / "cogs")
    assert len(result["FILES"]) == len(scores_store.bands)
    for b, path in enumerate(result["FILES"]):
        layer = QgsRasterLayer(path, "score", "gdal")
        assert layer.isValid() and layer.crs().authid() == "EPSG:4326"
        extent = layer.extent()
        corners = (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
        assert corners == pytest.approx(scores_store.bbox, abs=1e-9)
        assert layer.bandCount() == len(scores_store.years)
        for t, year in enumerate(scores_store.years):
            assert layer.bandName(t + 1).endswith(str(year))
            np.testing.assert_array_equal(band_values(layer, t + 1), scores_store.scores[t, b])
        assert math.isnan(layer.dataProvider().sourceNoDataValue(1))


def test_a_non_scores_input_is_refused(provider, tmp_path):
    import processing

    with pytest.raises(QgsProcessingException, match="not a change scores output"):
        processing.run(ALGORITHM, {"INPUT": str(tmp_path), "OUTPUT": str(tmp_path / "cogs")})
