"""Shared test set-up: the checkout imports as `embedding_change` whatever its folder is called."""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _link_package():
    # scripts/setup.sh puts a link in the venv; this covers a bare `pytest` run too.
    if importlib.util.find_spec("embedding_change") is not None:
        return
    plugins = ROOT / ".venv" / "qgis-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "embedding_change"
    if not link.exists():
        os.symlink(ROOT, link)
    sys.path.insert(0, str(plugins))


_link_package()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def chunk_cache_folder(tmp_path_factory):
    """Remote runs keep their chunks in the session's own folder, never the user's cache."""
    folder = tmp_path_factory.mktemp("chunk-cache")
    previous = os.environ.get("EMBEDDING_CHANGE_CACHE_DIR")
    os.environ["EMBEDDING_CHANGE_CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("EMBEDDING_CHANGE_CACHE_DIR", None)
    else:
        os.environ["EMBEDDING_CHANGE_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 server (moto) on loopback for the session; yields its endpoint URL."""
    executable = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    port = _free_port()
    process = subprocess.Popen(
        [executable, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.1)
    yield endpoint
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_storage_options(s3_server):
    """fsspec/s3fs options for the local S3 server, with its dummy credentials."""
    return {"key": "testing", "secret": "testing", "endpoint_url": s3_server}


@pytest.fixture
def s3_bucket(s3_storage_options, request):
    """A fresh, empty bucket on the local S3 server; yields its s3:// URL."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_storage_options)
    name = "test-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    name = "".join(c for c in name if c.isalnum() or c == "-")
    if fs.exists(name):
        fs.rm(name, recursive=True)
    fs.mkdir(name)
    fs.invalidate_cache()
    return f"s3://{name}"


@pytest.fixture(scope="session")
def aef_store(tmp_path_factory):
    """A small AEF-like store on disk: 600 x 560 px, 9 years, 3 x 3 chunks, planted changes."""
    from embedding_change.core.synthetic import write_aef_like_store

    path = tmp_path_factory.mktemp("stores") / "aef.zarr"
    truth = write_aef_like_store(path, shape=(600, 560), seed=7)
    return path, truth


@pytest.fixture(scope="session")
def empty_mosaic():
    """Writes a mosaic's metadata over a big grid with no chunk at all (all no data): a store
    the size guard must stop before anything is read. Call it with (path, (rows, cols))."""
    import numpy as np
    import zarr

    from embedding_change.core.grid import Grid
    from embedding_change.core.synthetic import AEF_ATTRS, AEF_GSD, AEF_ORIGIN

    def write(path, shape, years=range(2017, 2026)):
        x0, y0 = AEF_ORIGIN
        grid = Grid((AEF_GSD, 0.0, x0, 0.0, -AEF_GSD, y0), shape, "EPSG:4326")
        attributes = {**AEF_ATTRS, **grid.spatial_attrs()}
        root = zarr.open_group(str(path), mode="w-", zarr_format=3, attributes=attributes)
        root.create_array(
            "embeddings",
            shape=(len(years), 64, *shape),
            chunks=(1, 64, 256, 256),
            dtype="int8",
            fill_value=-128,
            dimension_names=["time", "band", "y", "x"],
        )
        time = root.create_array(
            "time", shape=(len(years),), dtype="int32", dimension_names=["time"]
        )
        time[:] = np.asarray(years, dtype="int32")
        return path

    return write


@dataclass(frozen=True)
class PrivateBucket:
    """A store in a bucket of an S3 server that checks credentials (signatures and policy)."""

    endpoint: str
    url: str  # s3:// URL of a small AEF-like store in it
    key: str
    secret: str
    shape: tuple[int, int]
    seed: int


@pytest.fixture(scope="session")
def private_s3():
    """A second moto server on loopback that, once set up, requires credentials: requests must
    be signed with the access key of its IAM user (moto's authentication, switched on through
    its /moto-api/reset-auth); anonymous or wrongly signed ones get 403."""
    import boto3
    import s3fs

    from embedding_change.core.synthetic import write_aef_like_store

    executable = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    port = _free_port()
    process = subprocess.Popen(
        [executable, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        setup = {"aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", **setup)
        iam.create_user(UserName="analyst")
        allow_all = {"Effect": "Allow", "Action": "*", "Resource": "*"}
        policy = {"Version": "2012-10-17", "Statement": [allow_all]}
        iam.put_user_policy(UserName="analyst", PolicyName="all", PolicyDocument=json.dumps(policy))
        created = iam.create_access_key(UserName="analyst")["AccessKey"]
        key, secret = created["AccessKeyId"], created["SecretAccessKey"]
        options = {"key": key, "secret": secret, "endpoint_url": endpoint}
        s3fs.S3FileSystem(**options).mkdir("private")
        shape, seed = (96, 112), 11
        write_aef_like_store(
            "s3://private/aef.zarr", shape=shape, seed=seed, storage_options=options
        )
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth", data=b"0", headers={"Content-Type": "text/plain"}
        )
        urllib.request.urlopen(request, timeout=10)
        yield PrivateBucket(endpoint, "s3://private/aef.zarr", key, secret, shape, seed)
    finally:
        process.terminate()
        process.wait(timeout=10)
