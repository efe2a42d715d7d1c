"""The fault matrix: the engine under a flaky or dead S3 server, damaged stores, full disks,
competing and killed runs, and cancels. Each case ends in one of three outcomes: a clear
engine error naming the problem, a retried success equal to the fault-free scores, or a
cancel; and none leaves anything complete-looking behind.

The S3 server is moto on loopback behind tests/core/fault_proxy.py.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from embedding_change.core import compute_change_scores, kernels
from embedding_change.core.errors import (
    CancelledError,
    OutputError,
    ParameterError,
    StoreError,
)
from embedding_change.core.retry import RetryPolicy
from embedding_change.core.store import open_embedding_store
from embedding_change.core.synthetic import write_aef_like_store

sys.path.insert(0, str(Path(__file__).parent))
from fault_proxy import Rule, through  # noqa: E402

# Short deadlines so that a dead server fails a test in seconds, not the default minute.
FAST = RetryPolicy(first_delay=0.05, max_delay=0.4, request_timeout=2.0, budget=6.0)
CHUNKS = r"/embeddings/c/"  # the data chunks' keys, not the metadata or coordinates


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def remote_store(s3_server, s3_storage_options):
    """A 512 x 256 px, 9-year store on the S3 server, and its scores from the kernel itself."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_storage_options)
    if not fs.exists("faults"):
        fs.mkdir("faults")
    url = "s3://faults/aef.zarr"
    if fs.exists(url):
        fs.rm(url, recursive=True)
    write_aef_like_store(
        url, shape=(512, 256), bands=16, seed=3, storage_options=s3_storage_options
    )
    values = open_embedding_store(url, storage_options=s3_storage_options).array[...]
    expected = kernels.change_scores(values, signed_square=True, nodata=-128)
    return url, expected


def run_remote(remote_store, proxy, s3_storage_options, output, **options):
    url, _ = remote_store
    lines = []
    ds = compute_change_scores(
        url,
        output,
        storage_options=through(proxy, s3_storage_options),
        output_storage_options=through(proxy, s3_storage_options),
        retry=FAST,
        log=lines.append,
        **options,
    )
    return ds, lines


def leftovers(folder: Path) -> list[str]:
    """Anything a run left in its output folder (outputs, hidden partials, claims)."""
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def local_store(tmp_path):
    """A one-chunk (256 x 256 px), 9-year local store in its own folder; outputs go elsewhere."""
    path = tmp_path / "store" / "aef.zarr"
    path.parent.mkdir()
    write_aef_like_store(path, shape=(256, 256), bands=16, seed=5)
    out = tmp_path / "out"
    out.mkdir()
    return path, out


def kernel_scores(path, **options):
    values = zarr.open_group(path, mode="r")["embeddings"][...]
    return kernels.change_scores(values, signed_square=True, nodata=-128, **options)


# --- S3: transient faults are retried and the values equal the fault-free run -------------

RETRIED = {
    "http_500_on_one_in_five_requests": Rule("status", method="GET", status=500, every=5),
    "slowdown_503_on_one_in_three_chunks": Rule("status", "GET", CHUNKS, status=503, every=3),
    "502_and_504_on_chunks": Rule("status", "GET", CHUNKS, status=502, every=4),
    "connection_reset_on_one_in_four": Rule("reset", method="GET", every=4),
    "short_body_length_mismatch": Rule("short", "GET", CHUNKS, times=3),
    "short_body_with_checksum_header": Rule("short_checksum", "GET", CHUNKS, times=3),
    "reply_slower_than_the_request_deadline": Rule("stall", "GET", CHUNKS, seconds=3, times=2),
    "server_restarts_mid_run": Rule("exit", "GET", CHUNKS, seconds=1.0, every=7),
}


@pytest.mark.parametrize("rule", RETRIED.values(), ids=RETRIED.keys())
def test_transient_s3_faults_are_retried_and_give_the_fault_free_values(
    remote_store, proxy, s3_storage_options, tmp_path, rule
):
    proxy.add(rule)
    ds, lines = run_remote(remote_store, proxy, s3_storage_options, tmp_path / "out.zarr")

    assert proxy.hits() > 0  # the fault did happen
    np.testing.assert_array_equal(ds.scores.values, remote_store[1])
    retries = ds.attrs["embedding_change:retries"]
    if rule.action != "reset":
        # (aiohttp itself retries an idempotent request once where a reused keep-alive
        # connection is reset, so some resets never reach the engine's retries)
        assert retries >= 1
    if retries:
        assert any(f"{retries} requests were retried" in line for line in lines), lines
    assert leftovers(tmp_path) == ["out.zarr"]


def test_output_puts_failing_now_and_then_are_retried(
    remote_store, proxy, s3_storage_options, s3_bucket
):
    proxy.add(Rule("status", method="PUT", status=500, every=3))
    ds, lines = run_remote(remote_store, proxy, s3_storage_options, f"{s3_bucket}/scores.zarr")

    assert proxy.hits() > 3
    np.testing.assert_array_equal(ds.scores.values, remote_store[1])
    assert ds.attrs["embedding_change:retries"] >= 3
    assert any("retried" in line for line in lines)


def test_a_slow_server_within_the_deadline_needs_no_retry(
    remote_store, proxy, s3_storage_options, tmp_path
):
    proxy.add(Rule("stall", "GET", CHUNKS, seconds=0.5, every=3))
    ds, lines = run_remote(remote_store, proxy, s3_storage_options, tmp_path / "out.zarr")

    np.testing.assert_array_equal(ds.scores.values, remote_store[1])
    assert ds.attrs["embedding_change:retries"] == 0
    assert not any("retried" in line for line in lines)


# --- S3: lasting faults end in a clear error, in bounded time, with nothing left ------------


def test_403_on_data_chunks_is_permission_denied_naming_the_chunk_and_year(
    remote_store, proxy, s3_storage_options, tmp_path
):
    proxy.add(Rule("status", "GET", CHUNKS, status=403))
    with pytest.raises(StoreError) as error:
        run_remote(remote_store, proxy, s3_storage_options, tmp_path / "out.zarr")

    message = str(error.value)
    assert "s3://faults/aef.zarr" in message
    assert "permission denied" in message
    assert "chunk embeddings/c/" in message and "(year 20" in message
    assert "credentials" in message  # the fix
    assert leftovers(tmp_path) == []


def test_server_gone_mid_run_fails_in_bounded_time_naming_the_chunk(
    remote_store, proxy, s3_storage_options, tmp_path
):
    proxy.add(Rule("exit", "GET", CHUNKS))
    started = time.monotonic()
    with pytest.raises(StoreError, match=r"chunk embeddings/c/.*\(year 20\d\d\).*refused"):
        run_remote(remote_store, proxy, s3_storage_options, tmp_path / "out.zarr")

    assert time.monotonic() - started < 4 * FAST.budget  # generous: one budget is the design
    assert leftovers(tmp_path) == []


def test_hung_server_fails_in_bounded_time_saying_it_stopped_answering(
    remote_store, proxy, s3_storage_options, tmp_path
):
    proxy.add(Rule("hang", "GET", CHUNKS))
    started = time.monotonic()
    with pytest.raises(StoreError, match="the server stopped answering"):
        run_remote(remote_store, proxy, s3_storage_options, tmp_path / "out.zarr")

    assert time.monotonic() - started < 4 * FAST.budget
    assert leftovers(tmp_path) == []


def test_hung_server_at_open_fails_in_bounded_time(
    remote_store, proxy, s3_storage_options, tmp_path
):
    proxy.add(Rule("hang"))
    started = time.monotonic()
    with pytest.raises(StoreError, match="stopped answering"):
        run_remote(remote_store, proxy, s3_storage_options, tmp_path / "out.zarr")

    # The open's dozen metadata reads share one budget: the first to give up ends them all.
    assert time.monotonic() - started < 4 * FAST.budget
    assert leftovers(tmp_path) == []


def test_persistent_500_on_output_puts_is_an_output_error_and_the_prefix_is_removed(
    remote_store, proxy, s3_storage_options, s3_bucket
):
    import s3fs

    proxy.add(Rule("status", "PUT", r"/scores/c/", status=500))
    output = f"{s3_bucket}/scores.zarr"
    with pytest.raises(OutputError) as error:
        run_remote(remote_store, proxy, s3_storage_options, output)

    message = str(error.value)
    assert output in message and "chunk scores/c/" in message and "(year 20" in message
    assert "HTTP 500" in message
    time.sleep(0.5)  # let abandoned writers meet the refusal
    fs = s3fs.S3FileSystem(**s3_storage_options)
    fs.invalidate_cache()
    assert fs.ls(s3_bucket) == []


def test_wrong_endpoint_fails_the_open_fast(remote_store, s3_storage_options, tmp_path):
    url, _ = remote_store
    options = {**s3_storage_options, "endpoint_url": "http://127.0.0.1:9"}
    started = time.monotonic()
    with pytest.raises(StoreError, match="refused"):
        compute_change_scores(url, tmp_path / "out.zarr", storage_options=options, retry=FAST)
    assert time.monotonic() - started < 5
    assert leftovers(tmp_path) == []


# --- cancel, whatever the I/O is doing --------------------------------------------------


def test_cancel_during_a_hang_returns_within_5_s_and_late_writes_are_refused(
    remote_store, proxy, s3_storage_options, tmp_path
):
    proxy.add(Rule("hang", "GET", CHUNKS, times=1))
    cancelled_at = []

    def cancel():
        if not cancelled_at and proxy.hits():
            cancelled_at.append(time.monotonic())
        return bool(cancelled_at)

    slow = RetryPolicy(request_timeout=60, budget=120)  # the hang must outlast the cancel
    url, _ = remote_store
    with pytest.raises(CancelledError):
        compute_change_scores(
            url,
            tmp_path / "out.zarr",
            storage_options=through(proxy, s3_storage_options),
            retry=slow,
            cancel=cancel,
        )
    assert time.monotonic() - cancelled_at[0] < 5
    assert leftovers(tmp_path) == []
    proxy.clear()
    proxy.stop()  # the hung request ends now; its task must not bring the output back
    time.sleep(1.5)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_cancels_leave_nothing(local_store, seed):
    path, out = local_store
    rng = np.random.default_rng(seed)
    after = int(rng.integers(0, 3))
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > after

    with pytest.raises(CancelledError):
        compute_change_scores(path, out / "scores.zarr", cancel=cancel)
    time.sleep(0.3)
    assert leftovers(out) == []


# --- local stores: damaged, unreadable and absent chunks --------------------------------


def test_damaged_chunk_is_a_store_error_naming_the_chunk_and_year(local_store):
    path, out = local_store
    chunk = path / "embeddings" / "c" / "3" / "0" / "0" / "0"
    chunk.write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(2000))  # a zstd frame that does not decode

    with pytest.raises(StoreError) as error:
        compute_change_scores(path, out / "scores.zarr")

    message = str(error.value)
    assert str(path) in message
    assert "chunk embeddings/c/3/0/0/0 (year 2020): damaged chunk" in message
    assert "leave that year out" in message
    assert leftovers(out) == []


def test_unreadable_chunk_file_is_permission_denied(local_store, tmp_path):
    """Run as an unprivileged user (root reads any file), in a child process."""
    if os.geteuid() != 0:
        pytest.skip("needs root to start a child as the 'nobody' user")
    path, _ = local_store
    shared = Path(tempfile.mkdtemp(prefix="ec-perm-"))
    os.chmod(shared, 0o777)
    store = shared / "aef.zarr"
    subprocess.run(["cp", "-r", str(path), str(store)], check=True)
    subprocess.run(["chmod", "-R", "a+rX", str(store)], check=True)
    chunk = store / "embeddings" / "c" / "4" / "0" / "0" / "0"
    os.chmod(chunk, 0)
    script = (
        "import sys\n"
        "from embedding_change.core import compute_change_scores\n"
        "from embedding_change.core.errors import StoreError\n"
        "try:\n"
        f"    compute_change_scores({str(store)!r}, {str(shared / 'out.zarr')!r})\n"
        "except StoreError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "HOME": str(shared), "NUMBA_CACHE_DIR": str(shared / "numba")}
    try:
        nobody_can_run = subprocess.run(
            [sys.executable, "-c", "import embedding_change.core"],
            capture_output=True, env=env, user=65534, group=65534, timeout=120,
        )  # fmt: skip
    except PermissionError:
        nobody_can_run = None
    if nobody_can_run is None or nobody_can_run.returncode != 0:
        subprocess.run(["rm", "-rf", str(shared)], check=False)
        pytest.skip("'nobody' cannot run this checkout's Python (a folder on its path is private)")
    try:
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            user=65534,
            group=65534,
        )
        assert "Traceback" not in done.stderr, done.stderr
        assert "chunk embeddings/c/4/0/0/0 (year 2021): permission denied" in done.stdout
        assert sorted(p.name for p in shared.iterdir() if p.name != "numba") == ["aef.zarr"]
    finally:
        subprocess.run(["rm", "-rf", str(shared)], check=False)


def reference_euclidean_difference(values, valid):
    """d(e_t, e_prev) under euclidean on dequantised values, e_prev the previous valid year."""
    vectors = np.sign(values) * (values.astype(np.float64) / 127.5) ** 2
    T = values.shape[0]
    out = np.full((T, *values.shape[2:]), np.nan)
    previous = np.full(values.shape[2:], -1)
    for t in range(T):
        for y, x in zip(*np.nonzero(valid[t]), strict=True):
            p = previous[y, x]
            if p >= 0:
                out[t, y, x] = np.sqrt(np.sum((vectors[t, :, y, x] - vectors[p, :, y, x]) ** 2))
            previous[y, x] = t
    return out


def test_absent_chunk_is_no_data_under_euclidean_whatever_the_fill_value(local_store):
    path, out = local_store
    # As another writer might: fill 0, not the no-data value -128 (absent reads as zeros).
    metadata = path / "embeddings" / "zarr.json"
    metadata.write_text(metadata.read_text().replace('"fill_value": -128', '"fill_value": 0'))
    array = zarr.open_group(path, mode="r")["embeddings"]
    assert array.fill_value == 0
    values = array[...]
    (path / "embeddings" / "c" / "2" / "0" / "0" / "0").unlink()
    lines = []

    ds = compute_change_scores(
        path,
        out / "scores.zarr",
        methods="difference",
        metric="euclidean",
        robust_zscore=False,
        log=lines.append,
    )

    valid = values[:, 0] != -128
    valid[2] = False  # the absent year
    expected = reference_euclidean_difference(values, valid)
    got = ds.scores.values[:, 0]
    assert np.isnan(got[2]).all()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert "1 chunks absent: treated as no data." in lines
    assert ds.attrs["embedding_change:absent"] == 1


# --- full disks -------------------------------------------------------------------------


@pytest.fixture
def tiny_disk():
    """Mounts a tmpfs of the size asked for; skipped where mounting is not allowed."""
    mounted = []

    def mount(size_mib: int) -> Path:
        folder = Path(tempfile.mkdtemp(prefix="ec-tiny-"))
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            folder.rmdir()
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=False)
        folder.rmdir()


def test_output_larger_than_the_free_space_is_refused_at_once(local_store, tiny_disk):
    path, _ = local_store
    disk = tiny_disk(6)
    # (9 years + the 2 summary planes) x 2 scores x 256 x 256 float32 = 5.5 MiB: fill the
    # disk but 2 MiB first.
    (disk / "filler").write_bytes(b"\0" * (4 * 2**20))
    needed = f"{(9 + 2) * 2 * 256 * 256 * 4 / 2**20:,.0f}"
    with pytest.raises(OutputError, match=rf"disk full: 2 MiB free, about {needed} MiB needed"):
        compute_change_scores(path, disk / "scores.zarr")
    assert leftovers(disk) == ["filler"]


def test_disk_filling_mid_run_is_an_output_error_naming_the_chunk(tmp_path, tiny_disk):
    path = tmp_path / "aef.zarr"  # 4 output tiles: the disk fills after the first is written
    write_aef_like_store(path, shape=(512, 512), bands=16, seed=6)
    disk = tiny_disk(24)  # the output needs (9 + 2) x 2 x 512 x 512 x 4 B = 22 MiB
    filled = []

    def fill_the_disk(fraction):  # another program takes the space once the run has started
        if not filled:
            filled.append(1)
            with open(disk / "filler", "wb", buffering=0) as file:
                try:
                    while True:
                        file.write(b"\0" * 2**16)
                except OSError:
                    pass

    (disk / "out").mkdir()
    with pytest.raises(OutputError) as error:
        compute_change_scores(path, disk / "out" / "scores.zarr", progress=fill_the_disk)
    message = str(error.value)
    assert str(disk / "out" / "scores.zarr") in message
    assert "disk full: 0 MiB free, about 22 MiB needed" in message
    assert "chunk scores/c/" in message and "(year 20" in message
    assert leftovers(disk / "out") == []


# --- competing, finished-first and killed runs ------------------------------------------


def test_second_run_to_the_same_output_fails_at_once_and_the_first_completes(local_store):
    path, out = local_store
    release, started = threading.Event(), threading.Event()
    results = {}

    def first():
        def hold(fraction):
            started.set()
            release.wait(30)

        results["first"] = compute_change_scores(path, out / "scores.zarr", progress=hold)

    thread = threading.Thread(target=first)
    thread.start()
    assert started.wait(60)
    began = time.monotonic()
    with pytest.raises(OutputError, match="Another run .* is writing .*scores.zarr"):
        compute_change_scores(path, out / "scores.zarr")
    assert time.monotonic() - began < 5  # at once, not after doing all the work
    release.set()
    thread.join(60)

    np.testing.assert_array_equal(results["first"].scores.values, kernel_scores(path))
    assert leftovers(out) == ["scores.zarr"]


def test_output_finished_by_someone_else_first_is_a_clear_error(local_store):
    path, out = local_store

    def someone_else_finishes(fraction):
        (out / "scores.zarr").mkdir(exist_ok=True)
        (out / "scores.zarr" / "theirs").write_text("x")

    with pytest.raises(OutputError, match="another run finished this output first"):
        compute_change_scores(path, out / "scores.zarr", progress=someone_else_finishes)
    assert leftovers(out) == ["scores.zarr"]
    assert [p.name for p in (out / "scores.zarr").iterdir()] == ["theirs"]  # theirs, untouched


@pytest.mark.slow
def test_killed_run_leaves_a_claim_the_next_run_sweeps_with_a_log_line(local_store):
    path, out = local_store
    output = out / "scores.zarr"
    script = (
        "import time\n"
        "from embedding_change.core import compute_change_scores\n"
        f"compute_change_scores({str(path)!r}, {str(output)!r}, "
        "progress=lambda f: time.sleep(600))\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 90
        while not any(p.name.startswith(".scores.zarr.partial-") for p in out.iterdir()):
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.1)
        while not list(out.glob(".scores.zarr.partial-*/scores/c")):
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.1)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    claim = json.loads((out / ".scores.zarr.claim").read_text())
    assert claim["pid"] == child.pid
    lines = []

    ds = compute_change_scores(path, output, log=lines.append)

    assert any("was killed" in line and "claim was removed" in line for line in lines), lines
    assert any(line.startswith("Removed .scores.zarr.partial-") for line in lines), lines
    np.testing.assert_array_equal(ds.scores.values, kernel_scores(path))
    assert leftovers(out) == ["scores.zarr"]


# --- parameters and too few years -------------------------------------------------------


def test_years_as_one_bare_string_is_one_year_and_says_so(local_store):
    path, out = local_store
    with pytest.raises(ParameterError, match="at least two years"):
        compute_change_scores(path, out / "s.zarr", years="2020")
    ds = compute_change_scores(
        path, out / "s.zarr", years=("2019", 2020, 2021), methods="loo_medoid"
    )
    assert list(ds.time.values) == [2019, 2020, 2021]
    assert list(ds.band.values) == ["loo_medoid_alpha_earth_cosine_distance_robust_time_zscore"]


def test_methods_as_a_bare_string_is_one_method_and_unknown_ones_are_named(local_store):
    path, out = local_store
    with pytest.raises(ParameterError, match=r"score method \['medoid'\]"):
        compute_change_scores(path, out / "s.zarr", methods="medoid")
    ds = compute_change_scores(path, out / "s.zarr", methods="difference", robust_zscore=False)
    expected = kernel_scores(path, methods=("difference",), robust_zscore=False)
    np.testing.assert_array_equal(ds.scores.values, expected)


@pytest.mark.parametrize(
    "bbox", [(1.0, 2.0, 3.0), (0, 0, float("nan"), 1), "1,2,3,4", (0, 0, "x", 1), 5]
)
def test_a_box_that_is_not_4_finite_numbers_is_named(local_store, bbox):
    path, out = local_store
    with pytest.raises(ParameterError, match="not 4 finite numbers"):
        compute_change_scores(path, out / "s.zarr", bbox=bbox)
    assert leftovers(out) == []


def test_robust_zscore_that_is_not_a_bool_is_named(local_store):
    path, out = local_store
    with pytest.raises(ParameterError, match="robust_zscore must be True or False, not 'no'"):
        compute_change_scores(path, out / "s.zarr", robust_zscore="no")


def few_years_store(folder: Path, n_years: int) -> Path:
    path = folder / f"years{n_years}.zarr"
    write_aef_like_store(path, shape=(64, 64), bands=8, years=range(2020, 2020 + n_years))
    return path


def test_store_with_one_year_is_refused(tmp_path):
    path = few_years_store(tmp_path, 1)
    with pytest.raises(StoreError, match="holds 1 year.*at least two"):
        compute_change_scores(path, tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()


def test_two_years_with_zscores_warns_and_says_what_would_help(tmp_path):
    path = few_years_store(tmp_path, 2)
    lines = []
    with pytest.warns(UserWarning, match="Only 2 years"):
        ds = compute_change_scores(path, tmp_path / "s.zarr", log=lines.append)
    assert np.isnan(ds.scores.values).all()  # as the warning says
    assert any("Choose 3 or more years" in line for line in lines)


# --- the same through QGIS: one clean error line, a non-zero exit -----------------------


@pytest.mark.qgis
@pytest.mark.slow
def test_qgis_process_reports_a_damaged_chunk_in_one_line_without_a_traceback(
    local_store, tmp_path
):
    import shutil

    import embedding_change

    qgis_process = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"
    if not Path(qgis_process).exists():
        pytest.skip("qgis_process.bin is not installed")
    path, out = local_store
    (path / "embeddings" / "c" / "5" / "0" / "0" / "0").write_bytes(os.urandom(3000))
    profile = tmp_path / "profile"
    env = dict(os.environ, QGIS_CUSTOM_CONFIG_PATH=str(profile), QGIS_OPTIONS_PATH=str(profile))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    plugins = Path(embedding_change.__file__).parent.parent
    env["QGIS_PLUGINPATH"] = os.pathsep.join([str(plugins), env.get("QGIS_PLUGINPATH", "")])
    env.setdefault("QT_QPA_PLATFORM", "offscreen")

    def run(*args):
        return subprocess.run(
            [qgis_process, *args], env=env, capture_output=True, text=True, timeout=300
        )

    assert run("plugins", "enable", "embedding_change").returncode == 0
    xmin, ymin, xmax, ymax = open_embedding_store(path).grid.bbox
    done = run(
        "run",
        "embeddingchange:changescores",
        "--",
        f"STORE={path}",
        f"EXTENT={xmin},{xmax},{ymin},{ymax} [EPSG:4326]",
        f"OUTPUT={out / 'scores.zarr'}",
    )

    text = done.stdout + done.stderr
    assert done.returncode != 0
    assert "chunk embeddings/c/5/0/0/0 (year 2022): damaged chunk" in text
    assert "Traceback" not in text
    assert leftovers(out) == []


def test_cancel_while_the_open_hangs_returns_within_5_s(
    remote_store, proxy, s3_storage_options, tmp_path
):
    proxy.add(Rule("hang"))
    url, _ = remote_store
    hung_since = []

    def cancel():  # the analyst presses cancel 1 s after the open's first request hung
        if proxy.hits() == 0:  # on a loaded machine the open may take a while to get there
            return False
        hung_since.append(time.monotonic())
        return time.monotonic() - hung_since[0] > 1.0

    with pytest.raises(CancelledError, match="while opening"):
        compute_change_scores(
            url,
            tmp_path / "out.zarr",
            storage_options=through(proxy, s3_storage_options),
            cancel=cancel,  # the default policy: the open alone would wait a minute
        )
    assert time.monotonic() - hung_since[0] < 1.0 + 5
    assert proxy.hits() >= 1
    assert leftovers(tmp_path) == []


# --- the pyramid (Build multiscale pyramid) under the same faults ---------------------------

SCORE_CHUNKS = r"/scores\.zarr/scores/c/"  # the source scores' data chunks


def write_scores_like(url, values, storage_options=None, compressors="auto"):
    """A scores output's layout: (time, band, y, x) float32, one band per 32 x 32 chunk."""
    import xarray as xr

    n_time, n_band, ny, nx = values.shape
    ds = xr.Dataset(
        {"scores": (("time", "band", "y", "x"), values)},
        coords={
            "time": ("time", np.arange(2018, 2018 + n_time, dtype=np.int32)),
            "band": ("band", np.array([f"score_{i}" for i in range(n_band)], dtype=object)),
            "y": ("y", 40.0 - 0.001 * (np.arange(ny) + 0.5)),
            "x": ("x", -105.0 + 0.001 * (np.arange(nx) + 0.5)),
        },
        attrs={
            "proj:code": "EPSG:4326",
            "spatial:transform": [0.001, 0.0, -105.0, 0.0, -0.001, 40.0],
            "spatial:shape": [ny, nx],
        },
    )
    encoding = {"scores": {"chunks": (1, 1, 32, 32), "fill_value": np.nan}}
    if compressors != "auto":
        encoding["scores"]["compressors"] = compressors
    ds.to_zarr(url, encoding=encoding, zarr_format=3, storage_options=storage_options)
    return url


def scores_values(seed=11, shape=(3, 2, 96, 80)):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=shape).astype(np.float32)
    values[..., :3, :] = np.nan
    return values


def pyramid_levels(tree) -> list[np.ndarray]:
    return [tree[str(k)].ds["scores"].values for k in range(len(tree.children))]


@pytest.fixture(scope="module")
def remote_scores(s3_server, s3_storage_options, tmp_path_factory):
    """A scores store on the S3 server and its fault-free pyramid (tile 16), built locally."""
    import s3fs

    from embedding_change.core import build_multiscales

    fs = s3fs.S3FileSystem(**s3_storage_options)
    if not fs.exists("faults"):
        fs.mkdir("faults")
    url = "s3://faults/scores.zarr"
    if fs.exists(url):
        fs.rm(url, recursive=True)
    values = scores_values()
    write_scores_like(url, values, s3_storage_options)
    local = write_scores_like(tmp_path_factory.mktemp("scores") / "scores.zarr", values)
    tree = build_multiscales(local, local.parent / "pyramid.zarr", tile=16)
    return url, pyramid_levels(tree)


def build_remote_pyramid(remote_scores, proxy, s3_storage_options, output, **options):
    from embedding_change.core import build_multiscales

    url, _ = remote_scores
    lines = []
    output_options = through(proxy, s3_storage_options) if "://" in str(output) else None
    tree = build_multiscales(
        url,
        output,
        tile=16,
        storage_options=through(proxy, s3_storage_options),
        output_storage_options=output_options,
        retry=FAST,
        log=lines.append,
        **options,
    )
    return tree, lines


def test_pyramid_retries_transient_source_faults_and_gives_the_fault_free_levels(
    remote_scores, proxy, s3_storage_options, tmp_path
):
    proxy.add(Rule("status", "GET", SCORE_CHUNKS, status=503, every=3))
    tree, lines = build_remote_pyramid(
        remote_scores, proxy, s3_storage_options, tmp_path / "pyramid.zarr"
    )
    assert proxy.hits() > 0
    for level, expected in zip(pyramid_levels(tree), remote_scores[1], strict=True):
        np.testing.assert_array_equal(level, expected)
    retries = tree.attrs["embedding_change:retries"]
    assert retries >= proxy.hits()
    assert any(f"{retries} requests were retried" in line for line in lines), lines
    assert any("Level 0 is a copy of the source" in line for line in lines)


def test_pyramid_403_on_source_chunks_is_permission_denied_naming_the_chunk_and_year(
    remote_scores, proxy, s3_storage_options, tmp_path
):
    proxy.add(Rule("status", "GET", SCORE_CHUNKS, status=403))
    with pytest.raises(StoreError) as error:
        build_remote_pyramid(remote_scores, proxy, s3_storage_options, tmp_path / "pyramid.zarr")
    message = str(error.value)
    assert "Could not read s3://faults/scores.zarr, chunk scores/c/" in message
    assert "(year 20" in message and "permission denied" in message and "credentials" in message
    assert leftovers(tmp_path) == []


def test_pyramid_persistent_500_on_a_level_is_an_output_error_and_the_prefix_is_removed(
    remote_scores, proxy, s3_storage_options, s3_bucket
):
    import s3fs

    proxy.add(Rule("status", "PUT", r"/pyramid\.zarr/1/scores/c/", status=500))
    output = f"{s3_bucket}/pyramid.zarr"
    with pytest.raises(OutputError) as error:
        build_remote_pyramid(remote_scores, proxy, s3_storage_options, output)
    message = str(error.value)
    assert f"Could not write {output}, chunk 1/scores/c/" in message
    assert "(year 20" in message and "HTTP 500" in message
    assert "partial output was removed" in message
    time.sleep(0.5)
    fs = s3fs.S3FileSystem(**s3_storage_options)
    fs.invalidate_cache()
    assert fs.ls(s3_bucket) == []  # the levels and the claim


def test_pyramid_hung_server_fails_in_bounded_time(
    remote_scores, proxy, s3_storage_options, tmp_path
):
    proxy.add(Rule("hang", "GET", SCORE_CHUNKS))
    started = time.monotonic()
    with pytest.raises(StoreError, match=r"chunk scores/c/.*stopped answering"):
        build_remote_pyramid(remote_scores, proxy, s3_storage_options, tmp_path / "pyramid.zarr")
    assert time.monotonic() - started < 4 * FAST.budget
    assert leftovers(tmp_path) == []


def test_pyramid_second_run_to_a_remote_output_fails_at_once(
    remote_scores, proxy, s3_storage_options, s3_bucket
):
    output = f"{s3_bucket}/pyramid.zarr"
    release, started = threading.Event(), threading.Event()
    results = {}

    def hold(fraction):
        started.set()
        release.wait(30)

    thread = threading.Thread(
        target=lambda: results.update(
            first=build_remote_pyramid(
                remote_scores, proxy, s3_storage_options, output, progress=hold
            )
        )
    )
    thread.start()
    assert started.wait(60)
    began = time.monotonic()
    with pytest.raises(OutputError, match=f"Another run .* is writing {output}"):
        build_remote_pyramid(remote_scores, proxy, s3_storage_options, output)
    assert time.monotonic() - began < 5
    release.set()
    thread.join(60)
    tree, _ = results["first"]
    for level, expected in zip(pyramid_levels(tree), remote_scores[1], strict=True):
        np.testing.assert_array_equal(level, expected)


@pytest.mark.parametrize("linked", [True, False], ids=["linked_level_0", "copied_level_0"])
def test_pyramid_damaged_source_chunk_is_a_store_error_naming_the_chunk_and_year(tmp_path, linked):
    from embedding_change.core import build_multiscales

    source = tmp_path / "in" / "scores.zarr"
    source.parent.mkdir()
    # uncompressed (as Change scores writes): level 0 links it and level 1 meets the damage
    write_scores_like(source, scores_values(), compressors=None if linked else "auto")
    (source / "scores" / "c" / "1" / "0" / "1" / "0").write_bytes(b"\x28\xb5\x2f\xfd" + b"x" * 99)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(StoreError) as error:
        build_multiscales(source, out / "pyramid.zarr", tile=32)
    message = str(error.value)
    assert f"Could not read {source}, chunk scores/c/1/0/1/0 (year 2019): damaged chunk" in message
    assert leftovers(out) == []


def test_pyramid_disk_filling_mid_build_is_an_output_error_naming_the_chunk(tmp_path, tiny_disk):
    from embedding_change.core import build_multiscales

    source = write_scores_like(tmp_path / "scores.zarr", scores_values(shape=(3, 2, 512, 512)))
    disk = tiny_disk(16)  # levels 0..4 at tile 32: about 8 MiB; another program takes the rest
    filled = []

    def fill_the_disk(fraction):
        if not filled:
            filled.append(1)
            with open(disk / "filler", "wb", buffering=0) as file:
                try:
                    while True:
                        file.write(b"\0" * 2**16)
                except OSError:
                    pass

    (disk / "out").mkdir()
    with pytest.raises(OutputError) as error:
        build_multiscales(source, disk / "out" / "pyramid.zarr", tile=32, progress=fill_the_disk)
    message = str(error.value)
    assert str(disk / "out" / "pyramid.zarr") in message
    assert "disk full: 0 MiB free, about 8 MiB needed" in message
    assert "chunk 0/scores/c/" in message and "(year 20" in message
    assert leftovers(disk / "out") == []


def test_pyramid_second_local_run_fails_at_once(tmp_path):
    from embedding_change.core import build_multiscales

    source = write_scores_like(tmp_path / "scores.zarr", scores_values())
    release, started = threading.Event(), threading.Event()

    def hold(fraction):
        started.set()
        release.wait(30)

    thread = threading.Thread(
        target=build_multiscales,
        args=(source, tmp_path / "pyramid.zarr"),
        kwargs={"tile": 16, "progress": hold},
    )
    thread.start()
    assert started.wait(60)
    with pytest.raises(OutputError, match="Another run .* is writing .*pyramid.zarr"):
        build_multiscales(source, tmp_path / "pyramid.zarr", tile=16)
    release.set()
    thread.join(60)
    assert leftovers(tmp_path) == ["pyramid.zarr", "scores.zarr"]


# --- a dask cluster: its workers' retries count in the run's total ----------------------


def test_retries_on_dask_cluster_workers_are_counted_and_logged(
    remote_store, proxy, s3_storage_options, tmp_path
):
    from distributed import Client, LocalCluster

    rule = Rule("status", "GET", CHUNKS, status=503, every=3)
    proxy.add(rule)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        ds, lines = run_remote(
            remote_store, proxy, s3_storage_options, tmp_path / "out.zarr", scheduler=client
        )
    np.testing.assert_array_equal(ds.scores.values, remote_store[1])
    retries = ds.attrs["embedding_change:retries"]
    # Data chunks are read only on the workers (other processes): each 503 there is a retry.
    assert rule.hits > 0 and retries >= rule.hits
    assert any(f"{retries} requests were retried" in line for line in lines), lines
