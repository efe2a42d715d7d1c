"""Change profile at a point: processing.run and qgis_process, the report, table and errors."""

from __future__ import annotations

import csv
import json
import subprocess

import numpy as np
import pytest
from qgis.core import QgsProcessingException

from embedding_change.core import compute_change_scores
from embedding_change.core.store import open_embedding_store

from .conftest import ZSCORE_BANDS
from .test_qgis_process import QGIS_PROCESS, qgis_process_environment

pytestmark = [pytest.mark.qgis, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
ALGORITHM = "embeddingchange:changeprofile"


def read_table(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def engine_scores(aef_store, tmp_path_factory):
    path, truth = aef_store
    output = tmp_path_factory.mktemp("profile") / "scores.zarr"
    grid = open_embedding_store(path).grid
    xmin, ymin, xmax, ymax = grid.bbox
    box = (xmin, ymin + 0.5 * (ymax - ymin), xmin + 0.5 * (xmax - xmin), ymax)
    compute_change_scores(path, output, bbox=box).close()
    return output, truth


def test_the_report_and_table_of_a_pixel_of_a_scores_output(provider, scores_store, tmp_path):
    import processing

    # Row 12, column 7 of the conftest store: 9.0 in 2020 (year index 3).
    x, y = float(scores_store.x[7]), float(scores_store.y[12])  # numpy 2 reprs np.float64(...)
    html, table = tmp_path / "p.html", tmp_path / "p.csv"
    result = processing.run(
        ALGORITHM,
        {
            "INPUT": str(scores_store.path),
            "POINT": f"{x!r},{y!r} [EPSG:4326]",
            "OUTPUT_HTML": str(html),
            "OUTPUT_CSV": str(table),
        },
    )

    assert result == {"OUTPUT_HTML": str(html), "OUTPUT_CSV": str(table)}
    rows = read_table(table)
    assert [int(r["year"]) for r in rows] == scores_store.years
    for b, band in enumerate(scores_store.bands):
        got = [float(r[band]) if r[band] else np.nan for r in rows]
        np.testing.assert_allclose(got, scores_store.scores[:, b, 12, 7], atol=1e-6)
    page = html.read_text()
    assert "<svg" in page and "row 12, column 7" in page
    # The conftest store records no embedding store: the report says so.
    assert "does not record its embedding store" in page


def test_a_point_in_web_mercator_finds_the_pixel_and_its_embeddings(
    provider, engine_scores, tmp_path
):
    import processing
    from osgeo import osr

    output, truth = engine_scores
    wgs84, mercator = osr.SpatialReference(), osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    mercator.ImportFromEPSG(3857)
    for srs in (wgs84, mercator):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    a, _, c, _, e, f = truth.grid.transform
    x, y = c + a * 40.5, f + e * 30.5
    mx, my, _ = osr.CoordinateTransformation(wgs84, mercator).TransformPoint(x, y)

    processing.run(
        ALGORITHM,
        {
            "INPUT": str(output),
            "POINT": f"{mx!r},{my!r} [EPSG:3857]",
            "OUTPUT_HTML": str(tmp_path / "p.html"),
            "OUTPUT_CSV": str(tmp_path / "p.csv"),
        },
    )

    rows = read_table(tmp_path / "p.csv")
    assert all(r["has_data"] in ("True", "False") for r in rows)
    medoids = [int(r["loo_medoid_year"]) for r in rows if r["loo_medoid_year"]]
    assert len(medoids) >= 8
    page = (tmp_path / "p.html").read_text()
    assert page.count("<svg") == 2 and "row 30, column 40" in page


def test_bad_input_says_what_to_fix(provider, scores_store, tmp_path):
    import processing

    parameters = {"OUTPUT_HTML": str(tmp_path / "p.html")}
    with pytest.raises(QgsProcessingException, match="outside the scores output"):
        processing.run(
            ALGORITHM,
            {**parameters, "INPUT": str(scores_store.path), "POINT": "0,0 [EPSG:4326]"},
        )
    with pytest.raises(QgsProcessingException, match="not a change scores output"):
        processing.run(
            ALGORITHM, {**parameters, "INPUT": str(tmp_path), "POINT": "0,0 [EPSG:4326]"}
        )
    assert not (tmp_path / "p.html").exists()


@pytest.mark.slow
def test_qgis_process_writes_the_report(scores_store, tmp_path):
    env = qgis_process_environment(tmp_path / "profile")
    run = [QGIS_PROCESS]
    enabled = subprocess.run(
        [*run, "plugins", "enable", "embedding_change"], env=env, capture_output=True, text=True
    )
    assert enabled.returncode == 0, enabled.stderr
    x, y = float(scores_store.x[7]), float(scores_store.y[12])  # numpy 2 reprs np.float64(...)
    done = subprocess.run(
        [*run, "--json", "run", ALGORITHM, "--", f"INPUT={scores_store.path}",
         f"POINT={x!r},{y!r} [EPSG:4326]", f"OUTPUT_HTML={tmp_path / 'p.html'}",
         f"OUTPUT_CSV={tmp_path / 'p.csv'}"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["results"]["OUTPUT_CSV"] == str(tmp_path / "p.csv")
    rows = read_table(tmp_path / "p.csv")
    assert float(rows[3][ZSCORE_BANDS[1]]) == 9.0
