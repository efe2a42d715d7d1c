"""dependencies/locks.py: the pinned, hashed sets and what of them this Python installs."""

import hashlib
import re
import subprocess
import sys

import pytest

from embedding_change.dependencies.locks import (
    LOCK_NAME,
    LOCKS,
    QGIS_OWNED,
    Lock,
    LockError,
    Pin,
    available_locks,
    lock_for,
    normalise,
    parse_pins,
    pins_to_install,
)
from embedding_change.dependencies.requirements import REQUIRED, version_tuple

ALL_LOCKS = available_locks()
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}(?:\s|$)")
each_lock = pytest.mark.parametrize("lock", ALL_LOCKS, ids=lambda lock: lock.name)


def lock_named(name: str) -> Lock:
    return next(lock for lock in ALL_LOCKS if lock.name == name)


def test_the_plugin_ships_one_lock_per_python_and_numpy_family():
    assert [(lock.name, lock.python, lock.numpy_major) for lock in ALL_LOCKS] == [
        ("py3.11-numpy1", (3, 11), 1),
        ("py3.12-numpy1", (3, 12), 1),
        ("py3.13-numpy2", (3, 13), 2),
        ("py3.14-numpy2", (3, 14), 2),
    ]
    assert all(lock.path.parent == LOCKS for lock in ALL_LOCKS)


@each_lock
def test_every_pin_of_every_lock_has_a_sha256_hash_on_one_line(lock):
    pins = lock.pins()
    assert len(pins) > 20
    for pin in pins:
        assert normalise(pin.text.split("==")[0]) == pin.name
        assert pin.text.split()[0].endswith(f"=={pin.version}")
        assert HASH.search(pin.text), pin.text[:80]
        assert "\\" not in pin.text and "\n" not in pin.text and "#" not in pin.text


@each_lock
def test_every_lock_pins_each_name_once(lock):
    names = [pin.name for pin in lock.pins()]
    assert len(names) == len(set(names))


@each_lock
def test_every_lock_pins_numpy_of_the_major_in_its_file_name(lock):
    assert LOCK_NAME.fullmatch(lock.path.name)[3] == str(lock.numpy_major)
    assert version_tuple(lock.numpy_pin())[0] == lock.numpy_major


@each_lock
def test_every_lock_pins_each_required_distribution_at_its_minimum_or_newer(lock):
    pinned = {pin.name: pin.version for pin in lock.pins()}
    for requirement in REQUIRED:
        name = normalise(requirement.distribution)
        assert name in pinned, f"{lock.name} does not pin {name}"
        assert version_tuple(pinned[name]) >= version_tuple(requirement.minimum), (
            f"{lock.name} pins {name} {pinned[name]}, the engine needs {requirement.minimum}"
        )


@each_lock
def test_what_a_lock_installs_never_includes_what_qgis_owns(lock):
    for qgis_numpy in (None, "1.24.2", "2.2.4"):
        assert not {pin.name for pin in pins_to_install(lock, qgis_numpy)} & QGIS_OWNED


def test_the_lock_hash_is_the_sha256_of_its_bytes(tmp_path):
    path = tmp_path / "py3.11-numpy1.txt"
    path.write_bytes(b"numpy==1.26.4 --hash=sha256:" + b"a" * 64 + b"\n")
    lock = Lock(path, (3, 11), 1)
    assert lock.sha256() == hashlib.sha256(path.read_bytes()).hexdigest()
    assert lock.name == "py3.11-numpy1"


LOCK_TEXT = """\
# Runtime lock: a header comment
#   which runs: uv pip compile runtime.in --generate-hashes
Foo_Bar==1.2.3 \\
    --hash=sha256:aaa \\
    --hash=sha256:bbb
    # via
    #   zarr
    #   xarray
numpy==1.26.4 ; python_version >= "3.11" \\
    --hash=sha256:ccc
    # via numba

s3fs[boto]==2026.9.0 --hash=sha256:ddd  # a trailing comment
"""


def test_parse_pins_joins_continuations_and_skips_comments_and_via_lines():
    assert parse_pins(LOCK_TEXT) == [
        Pin("foo-bar", "1.2.3", "Foo_Bar==1.2.3 --hash=sha256:aaa --hash=sha256:bbb"),
        Pin("numpy", "1.26.4", 'numpy==1.26.4 ; python_version >= "3.11" --hash=sha256:ccc'),
        Pin("s3fs", "2026.9.0", "s3fs[boto]==2026.9.0 --hash=sha256:ddd"),
    ]


@pytest.mark.parametrize(
    "line", ["numpy>=1.26", "-e git+https://example.org/pkg.git", "--index-url https://x"]
)
def test_parse_pins_refuses_a_line_it_cannot_read(line):
    with pytest.raises(LockError, match="Cannot read the lock line") as error:
        parse_pins(f"zarr==3.1.5 --hash=sha256:aaa\n{line}\n")
    assert line[:20] in str(error.value)


def test_normalise_folds_case_and_separators_as_pip_does():
    assert normalise("Zarr_CM") == "zarr-cm"
    assert normalise("ruamel.yaml") == "ruamel-yaml"
    assert normalise("PyQt5-sip") == "pyqt5-sip"


def test_lock_for_debian_12s_python_and_numpy_is_the_py311_numpy1_lock():
    assert lock_for((3, 11), "1.24.2").name == "py3.11-numpy1"


def test_lock_for_python_313_with_numpy_2_is_the_py313_numpy2_lock():
    assert lock_for((3, 13), "2.2.4").name == "py3.13-numpy2"


def test_lock_for_a_numpy_major_no_lock_serves_names_the_families():
    with pytest.raises(LockError) as error:
        lock_for((3, 12), "2.1.0")
    message = str(error.value)
    assert "Python 3.12 with numpy 2.1.0" in message
    for family in (
        "Python 3.11 with numpy 1",
        "Python 3.12 with numpy 1",
        "Python 3.13 with numpy 2",
        "Python 3.14 with numpy 2",
    ):
        assert family in message
    assert "manual route" in message


def test_lock_for_an_old_python_says_311_or_newer_is_needed():
    with pytest.raises(LockError) as error:
        lock_for((3, 9), None)
    message = str(error.value)
    assert "No pinned set for Python 3.9 (sets exist for 3.11, 3.12, 3.13, 3.14)" in message
    assert "need Python 3.11 or newer" in message


def test_lock_for_an_old_python_with_numpy_blames_the_python_not_numpy():
    # Every QGIS ships numpy: a Python 3.9 QGIS must hear that it needs 3.11, not that its numpy
    # major cannot be replaced.
    with pytest.raises(LockError) as error:
        lock_for((3, 9), "1.24.2")
    message = str(error.value)
    assert "need Python 3.11 or newer" in message
    assert "another major version" not in message


def test_lock_for_a_python_newer_than_every_lock_does_not_ask_for_a_newer_one():
    with pytest.raises(LockError) as error:
        lock_for((3, 15), None)
    assert "or newer" not in str(error.value) and "manual route" in str(error.value)


def test_lock_for_a_python_without_numpy_takes_its_newest_numpy_major():
    assert lock_for((3, 14), None).name == "py3.14-numpy2"
    assert lock_for((3, 11), None).name == "py3.11-numpy1"


def test_lock_for_defaults_to_the_running_python():
    numpy = "1.26.4" if sys.version_info[:2] < (3, 13) else "2.2.6"
    assert lock_for(numpy_version=numpy).python == sys.version_info[:2]


def names(pins):
    return [pin.name for pin in pins]


def test_qgis_numpy_older_than_the_pin_in_the_same_major_keeps_the_numpy_pin():
    lock = lock_named("py3.11-numpy1")
    assert lock.numpy_pin() == "1.26.4"
    pins = pins_to_install(lock, "1.24.2")
    assert "numpy" in names(pins)
    assert len(pins) == len(lock.pins())


def test_qgis_numpy_as_new_as_the_pin_drops_the_numpy_pin():
    lock = lock_named("py3.11-numpy1")
    pins = pins_to_install(lock, "1.26.4")
    assert "numpy" not in names(pins)
    assert len(pins) == len(lock.pins()) - 1
    assert {"numba", "zarr", "xarray"} <= set(names(pins))


def test_qgis_numpy_of_the_pins_minor_drops_the_numpy_pin_of_a_numpy2_lock():
    lock = lock_named("py3.13-numpy2")
    assert lock.numpy_pin() == "2.2.6"
    assert "numpy" not in names(pins_to_install(lock, "2.2.4"))


def test_qgis_numpy_of_an_older_minor_keeps_the_numpy2_pin():
    assert "numpy" in names(pins_to_install(lock_named("py3.13-numpy2"), "2.1"))


def test_without_qgis_numpy_every_pin_installs():
    lock = lock_named("py3.14-numpy2")
    assert names(pins_to_install(lock, None)) == names(lock.pins())


def test_pins_to_install_drops_qgis_owned_bindings_from_a_lock(tmp_path):
    path = tmp_path / "py3.11-numpy1.txt"
    path.write_text(
        "GDAL==3.6.2 --hash=sha256:aaa\n"
        "PyQt5==5.15.9 --hash=sha256:bbb\n"
        "PyQt5_sip==12.11 --hash=sha256:ccc\n"
        "numpy==1.26.4 --hash=sha256:ddd\n"
        "zarr==3.1.5 --hash=sha256:eee\n"
    )
    lock = Lock(path, (3, 11), 1)
    assert names(pins_to_install(lock, "1.24.2")) == ["numpy", "zarr"]
    assert names(pins_to_install(lock, "1.26.4")) == ["zarr"]


def run_locks_module(*args):
    return subprocess.run(
        [sys.executable, "-m", "embedding_change.dependencies.locks", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the numpy versions are Python 3.11's")
def test_locks_module_prints_hashed_requirements_with_numpy_for_an_older_numpy():
    out = run_locks_module("--numpy", "1.24.2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines == [pin.text for pin in lock_named("py3.11-numpy1").pins()]
    assert all(HASH.search(line) for line in lines)
    assert [line for line in lines if line.startswith("numpy==")] == [
        next(pin.text for pin in lock_named("py3.11-numpy1").pins() if pin.name == "numpy")
    ]
    assert lines[0].split("==")[0] == "aiobotocore"


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the numpy versions are Python 3.11's")
def test_locks_module_prints_no_numpy_line_when_the_numpy_serves():
    out = run_locks_module("--numpy", "1.26.4")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == len(lock_named("py3.11-numpy1").pins()) - 1
    assert not [line for line in lines if line.startswith("numpy")]
    assert any(line.startswith("numba==") for line in lines)


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the numpy versions are Python 3.11's")
def test_locks_module_prints_the_lock_path_and_fails_clearly_without_a_lock():
    which = run_locks_module("--which", "--numpy", "1.24.2")
    assert which.stdout.strip() == str(lock_named("py3.11-numpy1").path)
    refused = run_locks_module("--numpy", "2.1.0")
    assert refused.returncode == 2 and refused.stdout == ""
    assert "No pinned set for Python 3.11 with numpy 2.1.0" in refused.stderr
