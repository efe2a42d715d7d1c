"""The benchmarks' loopback S3 server answers like S3: values, ranges, listings, counts.

Its speed (latency, bandwidth caps) is measured in benchmarks/bench_remote.py, not here.
"""

import http.client
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import object_server  # noqa: E402

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


@pytest.fixture
def served(tmp_path):
    """A folder of small objects served in this process; yields (server, folder)."""
    payload = np.random.default_rng(1).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    for key in ("a/b/c.bin", "a/d.bin", "a/e/f.bin", "a.bin", "ab.bin", "z/deep/er/x.bin"):
        path = tmp_path.joinpath(*key.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
    server = object_server.start(tmp_path, in_process=True)
    yield server, tmp_path
    server.stop()


def raw_request(server, method, path, headers=None):
    """(status, headers, body) of one plain HTTP request."""
    connection = http.client.HTTPConnection(server.endpoint_url.split("//")[1], timeout=10)
    connection.request(method, path, headers=headers or {})
    answer = connection.getresponse()
    body = answer.read()
    connection.close()
    return answer.status, dict(answer.getheaders()), body


def all_keys(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def expected_listing(keys, prefix, delimiter):
    """S3's answer, straightforwardly: keys under the prefix, grouped at the delimiter."""
    contents, prefixes = [], set()
    for key in keys:
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        if delimiter and delimiter in rest:
            prefixes.add(prefix + rest[: rest.index(delimiter) + len(delimiter)])
        else:
            contents.append(key)
    return contents, sorted(prefixes)


def list_pages(server, prefix="", delimiter="", max_keys=1000):
    """Every page of ListObjectsV2, following continuation tokens: (contents, prefixes, pages)."""
    contents, prefixes, pages, token = [], [], 0, None
    while True:
        query = {"list-type": "2", "prefix": prefix, "max-keys": max_keys}
        if delimiter:
            query["delimiter"] = delimiter
        if token:
            query["continuation-token"] = token
        status, _, body = raw_request(server, "GET", f"/bench?{urlencode(query)}")
        assert status == 200
        root = ET.fromstring(body)
        pages += 1
        contents += [e.findtext(f"{NS}Key") for e in root.iter(f"{NS}Contents")]
        prefixes += [e.findtext(f"{NS}Prefix") for e in root.iter(f"{NS}CommonPrefixes")]
        assert int(root.findtext(f"{NS}KeyCount")) <= max_keys
        if root.findtext(f"{NS}IsTruncated") != "true":
            return contents, prefixes, pages
        token = root.findtext(f"{NS}NextContinuationToken")


def test_zarr_reads_through_the_server_equal_local_reads(aef_store):
    from embedding_change.core.store import open_embedding_store

    path, _ = aef_store
    with object_server.start(path.parent, in_process=True) as server:
        remote = open_embedding_store(server.url(path.name), storage_options=server.storage_options)
        local = open_embedding_store(path)
        assert remote.grid == local.grid
        assert list(remote.times) == list(local.times)
        # A window across chunk edges and the store's ragged last chunks.
        window = (slice(None), slice(None), slice(200, 600), slice(250, 560))
        np.testing.assert_array_equal(remote.array[window], local.array[window])
        assert server.counts()["operations"]["GetObject"] > 0


def test_zarr_reads_over_plain_http_equal_local_reads(aef_store):
    from embedding_change.core.store import open_embedding_store

    path, _ = aef_store
    with object_server.start(path.parent, in_process=True) as server:
        remote = open_embedding_store(f"{server.endpoint_url}/{server.bucket}/{path.name}")
        window = (slice(None), slice(None), slice(500, 600), slice(0, 300))
        np.testing.assert_array_equal(
            remote.array[window], open_embedding_store(path).array[window]
        )


def test_ranges_answer_the_requested_bytes(served):
    server, folder = served
    data = (folder / "a.bin").read_bytes()
    cases = {
        "bytes=0-99": (0, 100),
        "bytes=990-": (990, 1000),
        "bytes=-10": (990, 1000),
        "bytes=995-5000": (995, 1000),
        "bytes=500-500": (500, 501),
        "bytes=-5000": (0, 1000),
    }
    for header, (start, stop) in cases.items():
        status, headers, body = raw_request(server, "GET", "/bench/a.bin", {"Range": header})
        assert status == 206, header
        assert body == data[start:stop], header
        assert headers["Content-Range"] == f"bytes {start}-{stop - 1}/1000", header
    status, headers, body = raw_request(server, "GET", "/bench/a.bin")
    assert (status, body) == (200, data)
    assert raw_request(server, "GET", "/bench/a.bin", {"Range": "bytes=1000-"})[0] == 416
    for ignored in ("bytes=5-1", "bytes=0-1,5-6", "items=0-5", "bytes=x-"):
        status, headers, body = raw_request(server, "GET", "/bench/a.bin", {"Range": ignored})
        assert (status, body) == (200, data), ignored
    (folder / "empty.bin").write_bytes(b"")
    status, _, body = raw_request(server, "GET", "/bench/empty.bin", {"Range": "bytes=0-"})
    assert (status, body) == (200, b"")
    status, headers, body = raw_request(server, "HEAD", "/bench/a.bin")
    assert (status, headers["Content-Length"], body) == (200, "1000", b"")


def test_s3fs_reads_ranges_and_sizes(served):
    import s3fs

    server, folder = served
    fs = s3fs.S3FileSystem(**server.storage_options, skip_instance_cache=True)
    data = (folder / "a" / "d.bin").read_bytes()
    assert fs.cat_file("bench/a/d.bin", start=123, end=456) == data[123:456]
    assert fs.cat_file("bench/a/d.bin", start=-7) == data[-7:]
    with fs.open("bench/a/d.bin", "rb", block_size=64) as f:
        f.seek(900)
        assert f.read(50) == data[900:950]
    assert fs.info("bench/a/d.bin")["size"] == 1000
    assert fs.info("bench/a")["type"] == "directory"
    with pytest.raises(FileNotFoundError):
        fs.cat_file("bench/a/missing.bin")


@pytest.mark.parametrize(
    ("prefix", "delimiter"),
    [
        ("", ""),
        ("", "/"),
        ("a", "/"),
        ("a/", "/"),
        ("a/", ""),
        ("a/b", "/"),
        ("z/", "/"),
        ("nothing", "/"),
        ("z/deep/", "e"),
    ],
)
def test_listing_matches_the_folder(served, prefix, delimiter):
    server, folder = served
    contents, prefixes = expected_listing(all_keys(folder), prefix, delimiter)
    assert list_pages(server, prefix, delimiter)[:2] == (contents, prefixes)


def test_listing_pages_cover_every_key_once(served):
    server, folder = served
    contents, prefixes, pages = list_pages(server, max_keys=2)
    assert contents == all_keys(folder)
    assert pages == 3
    contents, prefixes, pages = list_pages(server, delimiter="/", max_keys=1)
    assert sorted(contents + prefixes) == ["a.bin", "a/", "ab.bin", "z/"]
    assert pages == 4


def test_counts_count_requests_by_operation_and_key(served):
    server, _ = served
    server.reset_counts()
    before = time.monotonic()
    for _ in range(3):
        raw_request(server, "GET", "/bench/a.bin", {"Range": "bytes=0-9"})
    raw_request(server, "HEAD", "/bench/ab.bin")
    raw_request(server, "GET", "/bench/missing.bin")
    list_pages(server, prefix="a/")
    counts = server.counts()  # waits for the requests' threads to count them
    after = time.monotonic()
    timeline = sorted(counts["timeline"])
    assert [(op, key) for _, _, op, key, _ in timeline[:5]] == [
        *[("GetObject", "a.bin")] * 3,
        ("HeadObject", "ab.bin"),
        ("GetObject", "missing.bin"),
    ]
    assert all(before <= began <= ended <= after for began, ended, *_ in timeline)
    assert [sent for *_, sent in timeline[:3]] == [10, 10, 10]
    assert counts["operations"] == {"GetObject": 4, "HeadObject": 1, "ListObjectsV2": 1}
    assert counts["keys"]["a.bin"] == {"GetObject": 3}
    assert counts["keys"]["missing.bin"] == {"GetObject": 1}
    assert counts["statuses"] == {"206": 3, "200": 2, "404": 1}
    assert counts["requests"] == 6
    assert counts["connections"] == 6  # one connection per raw_request
    listing_bytes = counts["bytes_sent"] - 30
    assert 0 < listing_bytes < 2000  # the 3 ranges' 30 bytes plus one small XML page
    server.reset_counts()
    assert server.counts()["requests"] == 0


def test_writes_and_deletes_through_s3fs(served):
    import s3fs

    server, folder = served
    fs = s3fs.S3FileSystem(**server.storage_options, skip_instance_cache=True)
    fs.pipe("bench/out/new/obj.bin", b"x" * 5000)
    assert (folder / "out" / "new" / "obj.bin").read_bytes() == b"x" * 5000
    assert fs.cat_file("bench/out/new/obj.bin") == b"x" * 5000
    assert not [p for p in folder.rglob("*") if p.name.startswith(object_server.TEMPORARY)]
    fs.rm("bench/out", recursive=True)
    assert not (folder / "out").exists()  # S3 keeps no empty folders
    assert (folder / "a.bin").exists()


def test_keys_outside_the_folder_and_other_buckets_are_refused(served):
    server, _ = served
    assert raw_request(server, "GET", "/bench/a/../../etc/passwd")[0] == 400
    status, _, body = raw_request(server, "GET", "/other/a.bin")
    assert status == 404
    assert b"NoSuchBucket" in body


def test_a_child_process_server_serves_and_stops(served):
    _, folder = served
    server = object_server.start(folder, latency_s=0.001, link_bps=1e9)
    try:
        status, _, body = raw_request(server, "GET", "/bench/ab.bin", {"Range": "bytes=10-19"})
        assert (status, body) == (206, (folder / "ab.bin").read_bytes()[10:20])
        assert server.counts()["keys"] == {"ab.bin": {"GetObject": 1}}
        settings = server.configure(latency_s=0.0, link_bps=None, conn_bps=1e8)
        assert (settings["latency_s"], settings["link_bps"], settings["conn_bps"]) == (0, None, 1e8)
    finally:
        server.stop()
    with pytest.raises(OSError):
        raw_request(server, "GET", "/bench/ab.bin")
