"""Claims on remote (S3) outputs: one run per output, stale claims taken over, on the real
local S3 server (moto honours If-None-Match and If-Match, as AWS S3 does)."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import s3fs
import zarr

from embedding_change.core import compute_change_scores, kernels
from embedding_change.core.errors import OutputError
from embedding_change.core.output_claim import RemoteClaim
from embedding_change.core.store import storage_options_for
from embedding_change.core.synthetic import write_aef_like_store


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("claims") / "aef.zarr"
    write_aef_like_store(path, shape=(64, 64), bands=8, seed=2)
    values = zarr.open_group(path, mode="r")["embeddings"][...]
    return path, kernels.change_scores(values, signed_square=True, nodata=-128)


def bucket_listing(s3_bucket, s3_storage_options) -> list[str]:
    fs = s3fs.S3FileSystem(**s3_storage_options)
    fs.invalidate_cache()
    return sorted(p.rsplit("/", 1)[1] for p in fs.ls(s3_bucket))


def write_claim(s3_bucket, s3_storage_options, name, **owner):
    fs = s3fs.S3FileSystem(**s3_storage_options)
    fs.pipe_file(f"{s3_bucket}/.{name}.claim", json.dumps(owner).encode())
    fs.invalidate_cache()


def test_second_run_to_the_same_remote_output_fails_at_once_and_the_first_completes(
    small_store, s3_bucket, s3_storage_options
):
    path, expected = small_store
    output = f"{s3_bucket}/scores.zarr"
    release, started = threading.Event(), threading.Event()
    results = {}

    def first():
        def hold(fraction):
            started.set()
            release.wait(30)

        results["first"] = compute_change_scores(
            path, output, output_storage_options=s3_storage_options, progress=hold
        )

    thread = threading.Thread(target=first)
    thread.start()
    assert started.wait(60)
    began = time.monotonic()
    with pytest.raises(OutputError) as error:
        compute_change_scores(path, output, output_storage_options=s3_storage_options)
    assert time.monotonic() - began < 5  # at once, not after doing all the work
    message = str(error.value)
    assert f"Another run (process {os.getpid()} on {socket.gethostname()}" in message
    assert f"is writing {output}" in message
    release.set()
    thread.join(60)

    np.testing.assert_array_equal(results["first"].scores.values, expected)
    assert bucket_listing(s3_bucket, s3_storage_options) == ["scores.zarr"]  # claim released


def test_a_stale_remote_claim_is_taken_over_and_the_unfinished_output_removed(
    small_store, s3_bucket, s3_storage_options
):
    path, expected = small_store
    old = time.time() - 3600
    write_claim(
        s3_bucket, s3_storage_options, "scores.zarr",
        pid=4242, host="a-machine-that-crashed", started=old, renewed=old, lease=1, run="dead",
    )  # fmt: skip
    fs = s3fs.S3FileSystem(**s3_storage_options)
    fs.pipe_file(f"{s3_bucket}/scores.zarr/scores/c/0/0/0/0", b"half-written")  # its leftover
    time.sleep(1.5)  # longer than its lease since the server last saw it renewed
    lines = []

    ds = compute_change_scores(
        path, f"{s3_bucket}/scores.zarr", output_storage_options=s3_storage_options,
        log=lines.append,
    )  # fmt: skip

    assert any(
        "process 4242 on a-machine-that-crashed" in line and "claim was taken over" in line
        for line in lines
    ), lines
    assert any("Removed the unfinished output" in line for line in lines), lines
    np.testing.assert_array_equal(ds.scores.values, expected)
    assert bucket_listing(s3_bucket, s3_storage_options) == ["scores.zarr"]


def test_a_live_claim_from_another_machine_holds_until_its_lease_ends(
    small_store, s3_bucket, s3_storage_options
):
    path, _ = small_store
    now = time.time()
    write_claim(
        s3_bucket, s3_storage_options, "scores.zarr",
        pid=7, host="another-machine", started=now, renewed=now, lease=600, run="alive",
    )  # fmt: skip
    with pytest.raises(OutputError, match=r"Another run \(process 7 on another-machine"):
        compute_change_scores(
            path, f"{s3_bucket}/scores.zarr", output_storage_options=s3_storage_options
        )
    assert bucket_listing(s3_bucket, s3_storage_options) == [".scores.zarr.claim"]  # theirs


def test_a_remote_claim_of_a_killed_process_on_this_machine_is_stale_at_once(
    small_store, s3_bucket, s3_storage_options
):
    path, expected = small_store
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_claim(
        s3_bucket, s3_storage_options, "scores.zarr",
        pid=gone.pid, host=socket.gethostname(), started=time.time(), lease=600, run="killed",
    )  # fmt: skip
    lines = []
    ds = compute_change_scores(
        path, f"{s3_bucket}/scores.zarr", output_storage_options=s3_storage_options,
        log=lines.append,
    )  # fmt: skip
    assert any(f"process {gone.pid}" in line and "taken over" in line for line in lines)
    np.testing.assert_array_equal(ds.scores.values, expected)


def test_a_finished_output_with_a_stale_claim_is_left_alone(
    small_store, s3_bucket, s3_storage_options
):
    path, _ = small_store
    output = f"{s3_bucket}/scores.zarr"
    compute_change_scores(path, output, output_storage_options=s3_storage_options)
    old = time.time() - 3600  # a run killed after finishing, before removing its claim
    write_claim(
        s3_bucket, s3_storage_options, "scores.zarr",
        pid=1, host="elsewhere", started=old, renewed=old, lease=1, run="done",
    )  # fmt: skip
    time.sleep(1.5)
    with pytest.raises(OutputError, match="already exists"):
        compute_change_scores(path, output, output_storage_options=s3_storage_options)
    fs = s3fs.S3FileSystem(**s3_storage_options)
    fs.invalidate_cache()
    assert fs.exists(f"{output}/zarr.json") and fs.exists(f"{output}/scores/zarr.json")
    assert bucket_listing(s3_bucket, s3_storage_options) == ["scores.zarr"]


def test_claims_taken_at_the_same_moment_go_to_exactly_one_run(s3_bucket, s3_storage_options):
    options = storage_options_for(s3_bucket, s3_storage_options)
    for round_ in range(4):
        output = f"{s3_bucket}/race{round_}.zarr"
        outcomes, gate = [], threading.Barrier(3)

        def take(output=output, outcomes=outcomes, gate=gate):
            gate.wait()
            try:
                outcomes.append(RemoteClaim.take(output, options, lambda line: None))
            except OutputError as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=take) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        claims = [o for o in outcomes if isinstance(o, RemoteClaim)]
        assert len(claims) == 1, outcomes
        assert all("Another run" in str(o) for o in outcomes if isinstance(o, OutputError))
        claims[0].release()
    assert bucket_listing(s3_bucket, s3_storage_options) == []


def test_a_held_claim_is_renewed_so_it_never_turns_stale(s3_bucket, s3_storage_options):
    options = storage_options_for(s3_bucket, s3_storage_options)
    output = f"{s3_bucket}/long.zarr"
    claim = RemoteClaim.take(output, options, lambda line: None, lease=1.0)
    fs = s3fs.S3FileSystem(**s3_storage_options)
    first = json.loads(fs.cat_file(f"{s3_bucket}/.long.zarr.claim"))
    time.sleep(2.5)  # more than two leases: a claim left alone would be stale by now
    fs.invalidate_cache()
    renewed = json.loads(fs.cat_file(f"{s3_bucket}/.long.zarr.claim"))
    assert renewed["run"] == first["run"] and renewed["renewed"] > first["renewed"] + 1
    with pytest.raises(OutputError, match="Another run"):
        RemoteClaim.take(output, options, lambda line: None)
    claim.release()
    assert bucket_listing(s3_bucket, s3_storage_options) == []
