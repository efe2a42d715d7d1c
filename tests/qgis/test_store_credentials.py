"""The store parameters' credentials (algorithms/embedding_change_algorithm.py): an authentication
configuration of a real QgsAuthManager reaches a server that requires credentials; typed
secrets are refused; no secret reaches the log or qgis_process's output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from qgis.core import (
    QgsApplication,
    QgsAuthMethodConfig,
    QgsProcessingException,
    QgsProcessingFeedback,
)

from embedding_change.core import compute_change_scores
from embedding_change.core.credentials import AUTHCFG_NOTE
from embedding_change.core.store import open_embedding_store

from .conftest import store_extent
from .test_qgis_process import QGIS_PROCESS, qgis_process_environment

pytestmark = pytest.mark.qgis
ALGORITHM = "embeddingchange:changescores"
MASTER_PASSWORD = "embedding-change-tests"  # of the test profile's authentication database


@pytest.fixture
def no_aws_variables(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def auth_config(qgis_app, private_s3):
    """A Basic configuration holding the private server's access key and secret, stored in the
    test profile's authentication database (encrypted with its master password)."""
    manager = QgsApplication.authManager()
    if not manager.setMasterPassword(MASTER_PASSWORD, True):
        pytest.skip("the test profile's authentication database has another master password")
    config = QgsAuthMethodConfig("Basic")
    config.setName("private bucket")
    config.setConfig("username", private_s3.key)
    config.setConfig("password", private_s3.secret)
    stored = manager.storeAuthenticationConfig(config)
    if isinstance(stored, tuple):
        stored, config = stored
    assert stored and config.id()
    yield config.id()
    manager.removeAuthenticationConfig(config.id())


@pytest.fixture
def same_store_on_disk(private_s3, tmp_path):
    from embedding_change.core.synthetic import write_aef_like_store

    path = tmp_path / "same.zarr"
    write_aef_like_store(path, shape=private_s3.shape, seed=private_s3.seed)
    return path


def run(parameters, feedback=None):
    import processing

    return processing.run(ALGORITHM, parameters, feedback=feedback or QgsProcessingFeedback())


def private_run(private_s3, same_store_on_disk, output, **more):
    return {
        "STORE": private_s3.url,
        "STORAGE_OPTIONS": json.dumps({"endpoint_url": private_s3.endpoint}),
        "EXTENT": store_extent(open_embedding_store(same_store_on_disk).grid.bbox),
        "YEARS": "2017-2021",
        "LOAD": False,
        "OUTPUT": str(output),
        **more,
    }


def test_an_auth_configuration_reaches_a_bucket_that_requires_credentials(
    provider, private_s3, auth_config, same_store_on_disk, no_aws_variables, tmp_path
):
    feedback = QgsProcessingFeedback()
    parameters = private_run(private_s3, same_store_on_disk, tmp_path / "private.zarr")

    run({**parameters, "AUTHCFG": auth_config}, feedback)

    expected = compute_change_scores(
        same_store_on_disk, tmp_path / "engine.zarr", years=range(2017, 2022)
    )
    with xr.open_zarr(tmp_path / "private.zarr", consolidated=None) as got:
        np.testing.assert_array_equal(got["scores"].values, expected["scores"].values)
        recorded = got.attrs["embedding_change:storage_options"]
    assert recorded == {"endpoint_url": private_s3.endpoint, AUTHCFG_NOTE: auth_config}
    log = feedback.textLog() + feedback.htmlLog()
    assert private_s3.secret not in log and private_s3.key not in log


def test_without_credentials_the_bucket_refuses_and_the_message_says_so(
    provider, private_s3, same_store_on_disk, no_aws_variables, tmp_path
):
    parameters = private_run(private_s3, same_store_on_disk, tmp_path / "denied.zarr")
    with pytest.raises(QgsProcessingException, match="permission denied"):
        run(parameters)
    assert not (tmp_path / "denied.zarr").exists()


def test_an_unknown_auth_configuration_says_where_to_make_one(
    provider, private_s3, same_store_on_disk, tmp_path
):
    parameters = private_run(private_s3, same_store_on_disk, tmp_path / "x.zarr", AUTHCFG="nope123")
    with pytest.raises(QgsProcessingException, match="No authentication configuration 'nope123'"):
        run(parameters)


def test_secrets_typed_into_the_storage_options_are_refused_before_the_run(
    provider, private_s3, same_store_on_disk, tmp_path
):
    options = {"endpoint_url": private_s3.endpoint, "key": "AKIATYPED", "secret": "typed-secret"}
    parameters = private_run(
        private_s3, same_store_on_disk, tmp_path / "x.zarr", STORAGE_OPTIONS=json.dumps(options)
    )
    algorithm = QgsApplication.processingRegistry().algorithmById(ALGORITHM)
    from processing.tools import dataobjects

    ok, message = algorithm.checkParameterValues(parameters, dataobjects.createContext())

    assert not ok
    assert "The storage options hold secrets (key, secret)" in message and "AUTHCFG" in message
    assert "typed-secret" not in message
    with pytest.raises(QgsProcessingException, match="hold secrets"):
        run(parameters)


@pytest.mark.slow
def test_qgis_process_runs_with_an_auth_configuration_and_shows_no_secret(
    provider, private_s3, auth_config, same_store_on_disk, tmp_path
):
    import subprocess

    password_file = tmp_path / "master"
    password_file.write_text(MASTER_PASSWORD)
    env = qgis_process_environment(tmp_path / "profile")
    env["QGIS_AUTH_DB_DIR_PATH"] = str(Path(QgsApplication.qgisAuthDatabaseFilePath()).parent)
    env["QGIS_AUTH_PASSWORD_FILE"] = str(password_file)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        env.pop(name, None)

    def qgis_process(*args):
        return subprocess.run(
            [QGIS_PROCESS, *args], env=env, capture_output=True, text=True, timeout=300
        )

    assert qgis_process("plugins", "enable", "embedding_change").returncode == 0
    parameters = private_run(
        private_s3, same_store_on_disk, tmp_path / "cli.zarr", AUTHCFG=auth_config
    )
    arguments = [f"{name}={value}" for name, value in parameters.items()]
    done = qgis_process("--json", "run", ALGORITHM, "--", *arguments)
    parameters["OUTPUT"] = str(tmp_path / "plain.zarr")
    arguments = [f"{name}={value}" for name, value in parameters.items()]
    plain = qgis_process("run", ALGORITHM, "--", *arguments)

    assert done.returncode == 0, done.stdout + done.stderr
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert json.loads(done.stdout)["inputs"]["AUTHCFG"] == auth_config
    for text in (done.stdout, done.stderr, plain.stdout, plain.stderr):
        assert private_s3.secret not in text and private_s3.key not in text
    expected = compute_change_scores(
        same_store_on_disk, tmp_path / "engine.zarr", years=range(2017, 2022)
    )
    with xr.open_zarr(tmp_path / "cli.zarr", consolidated=None) as got:
        np.testing.assert_array_equal(got["scores"].values, expected["scores"].values)


def test_the_pixels_story_of_a_private_run_is_read_with_the_runs_configuration(
    provider, private_s3, auth_config, same_store_on_disk, no_aws_variables, tmp_path
):
    import csv

    import processing

    from embedding_change.core.profile import read_pixel_profile
    from embedding_change.gui.change_profile_dock import read_and_draw

    parameters = private_run(private_s3, same_store_on_disk, tmp_path / "private.zarr")
    run({**parameters, "AUTHCFG": auth_config})
    compute_change_scores(
        same_store_on_disk, tmp_path / "local.zarr", years=range(2017, 2022)
    ).close()
    grid = open_embedding_store(same_store_on_disk).grid
    x, y = float(grid.x_coords(40, 41)[0]), float(grid.y_coords(30, 31)[0])
    expected = read_pixel_profile(tmp_path / "local.zarr", x, y)

    feedback = QgsProcessingFeedback()
    processing.run(
        "embeddingchange:changeprofile",
        {
            "INPUT": str(tmp_path / "private.zarr"),
            "POINT": f"{x!r},{y!r} [EPSG:4326]",
            "OUTPUT_HTML": str(tmp_path / "p.html"),
            "OUTPUT_CSV": str(tmp_path / "p.csv"),
        },
        feedback=feedback,
    )
    dock_profile, _, _, _ = read_and_draw(None, str(tmp_path / "private.zarr"), x, y, None, 2019)

    with open(tmp_path / "p.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    got = np.array([[float(r[f"distance_to_{year}"]) for year in expected.years] for r in rows])
    np.testing.assert_allclose(got, expected.distances, atol=1e-6)  # the table has 6 decimals
    np.testing.assert_allclose(dock_profile.distances, expected.distances, atol=1e-9)
    assert dock_profile.note is None
    assert private_s3.secret not in feedback.textLog() + (tmp_path / "p.html").read_text()


def test_false_colour_reaches_the_private_bucket_with_the_same_configuration(
    provider, private_s3, auth_config, same_store_on_disk, no_aws_variables, tmp_path
):
    import processing
    from osgeo import gdal

    from embedding_change.core.false_colour import embedding_false_colour

    feedback = QgsProcessingFeedback()
    processing.run(
        "embeddingchange:embeddingrgb",
        {
            "STORE": private_s3.url,
            "STORAGE_OPTIONS": json.dumps({"endpoint_url": private_s3.endpoint}),
            "AUTHCFG": auth_config,
            "EXTENT": store_extent(open_embedding_store(same_store_on_disk).grid.bbox),
            "YEARS": "2019-2020",
            "OUTPUT": str(tmp_path / "rgb"),
        },
        feedback=feedback,
    )

    expected = embedding_false_colour(same_store_on_disk, tmp_path / "local", years=[2019, 2020])
    for year, file in zip((2019, 2020), expected.files, strict=True):
        got = gdal.Open(str(tmp_path / "rgb" / f"{year}.tif")).ReadAsArray()
        np.testing.assert_array_equal(got, gdal.Open(file).ReadAsArray())
    assert private_s3.secret not in feedback.textLog()
