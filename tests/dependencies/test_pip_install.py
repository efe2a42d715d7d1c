"""dependencies/pip_install.py: pip --target into a new folder of the profile, checked in a new
process, then switched to; hermetic (a wheel built here, no index)."""

import base64
import hashlib
import json
import os
import sys
import zipfile
from pathlib import Path

import pytest

from embedding_change.dependencies import folder as folders
from embedding_change.dependencies.locks import Lock
from embedding_change.dependencies.pip_install import (
    InstallCancelledError,
    InstallError,
    find_python,
    install,
    pip_command,
    python_candidates,
)

PACKAGE = "ec_test_pkg"  # a name no index or wheel folder of this machine has
WHEEL = f"{PACKAGE}-1.0-py3-none-any.whl"


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def build_wheel(folder: Path, value: int = 42) -> Path:
    """A pure-Python wheel with one module, `ec_test_pkg.VALUE == value`."""
    folder.mkdir(parents=True, exist_ok=True)
    info = f"{PACKAGE}-1.0.dist-info"
    files = {
        f"{PACKAGE}.py": f"VALUE = {value}\n".encode(),
        f"{info}/METADATA": b"Metadata-Version: 2.1\nName: ec-test-pkg\nVersion: 1.0\n",
        f"{info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    path = folder / WHEEL
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
    return path


def write_lock(folder: Path, sha256: str) -> Lock:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "py3.11-numpy1.txt"
    path.write_text(f"# one pin, for the tests\nec-test-pkg==1.0 \\\n    --hash=sha256:{sha256}\n")
    return Lock(path, (3, 11), 1)


@pytest.fixture
def wheels(tmp_path):
    folder = tmp_path / "wheels"
    build_wheel(folder)
    return folder


@pytest.fixture
def lock(tmp_path, wheels):
    return write_lock(tmp_path / "locks", hashlib.sha256((wheels / WHEEL).read_bytes()).hexdigest())


def test_install_puts_the_lock_into_a_new_stamped_set_and_switches_to_it(profile, wheels, lock):
    lines, fractions = [], []
    result = install(profile, wheels=wheels, lock=lock, log=lines.append, progress=fractions.append)
    root = folders.dependencies_root(profile)
    assert result.folder.parent == root and result.folder.name.startswith("py3.11-numpy1-")
    assert (result.folder / f"{PACKAGE}.py").read_text() == "VALUE = 42\n"
    assert (result.folder / f"{PACKAGE}-1.0.dist-info" / "METADATA").is_file()
    assert (root / "current").read_text() == result.folder.name + "\n"
    assert folders.active_set(profile) == result.folder
    assert sorted(path.name for path in root.iterdir()) == ["current", result.folder.name]

    stamp = json.loads((result.folder / "stamp.json").read_text())
    assert stamp["lock"] == "py3.11-numpy1"
    assert stamp["lock_sha256"] == lock.sha256()
    assert stamp["python"] == "{}.{}.{}".format(*sys.version_info[:3])
    assert stamp["qgis_numpy"] == folders.qgis_numpy_version(profile)
    assert stamp["wheels"] == str(wheels)
    assert "numba=" in stamp["versions"] and "zarr=" in stamp["versions"]
    assert folders.stale_reason(stamp, lock.sha256(), folders.qgis_numpy_version(profile)) is None

    assert result.packages == 1 and result.lock == lock and not result.needs_numpy_first
    assert fractions[-1] == 1.0
    assert fractions == sorted(fractions) and fractions[0] >= 0.0
    assert 0.85 in fractions  # pip's one "Processing" line: all of the lock's wheels seen
    assert any(line.startswith("Running: ") and "--require-hashes" in line for line in lines)
    # pip 23 says "Processing PATH", pip 25 adds "(from -r ...)".
    assert any(line.startswith(f"Processing {wheels / WHEEL}") for line in lines)
    assert any(line.startswith("Successfully installed ec") for line in lines)
    assert any(line.startswith("Checked in a new Python process: numpy=") for line in lines)


def test_a_second_install_switches_to_a_new_set_and_removes_the_old(
    tmp_path, profile, wheels, lock
):
    first = install(profile, wheels=wheels, lock=lock, log=lambda line: None)
    build_wheel(wheels, value=43)  # same name and version, other bytes: a re-pinned lock
    relocked = write_lock(
        tmp_path / "relocked", hashlib.sha256((wheels / WHEEL).read_bytes()).hexdigest()
    )
    second = install(profile, wheels=wheels, lock=relocked, log=lambda line: None)
    root = folders.dependencies_root(profile)
    assert second.folder != first.folder
    assert not first.folder.exists()
    assert (second.folder / f"{PACKAGE}.py").read_text() == "VALUE = 43\n"
    assert (root / "current").read_text() == second.folder.name + "\n"
    assert sorted(path.name for path in root.iterdir()) == ["current", second.folder.name]


def previous_set(profile, make_set) -> tuple[Path, dict]:
    """A set installed earlier, and a snapshot of everything in the plugin's folder."""
    folder = make_set(profile, "py3.11-numpy1-20260101T000000")
    (folder / "old_module.py").write_text("OLD = True\n")
    root = folders.dependencies_root(profile)
    return folder, snapshot(root)


def snapshot(root: Path) -> dict:
    return {
        str(path.relative_to(root)): path.read_bytes() if path.is_file() else None
        for path in sorted(root.rglob("*"))
    }


def test_a_wrong_hash_fails_with_pips_reason_and_changes_nothing(
    tmp_path, profile, make_set, wheels
):
    folder, before = previous_set(profile, make_set)
    wrong = write_lock(tmp_path / "bad", "0" * 64)
    lines = []
    with pytest.raises(InstallError) as error:
        install(profile, wheels=wheels, lock=wrong, log=lines.append)
    message = str(error.value)
    assert message.startswith("pip could not install the dependencies: ")
    assert "HASHES" in message and "The previous set (if any) stays in use" in message
    assert any("HASHES" in line for line in lines)
    root = folders.dependencies_root(profile)
    assert snapshot(root) == before
    assert folders.active_set(profile) == folder
    assert not list(root.glob(".installing-*"))


def test_an_empty_wheel_folder_fails_with_pips_reason_and_changes_nothing(
    tmp_path, profile, make_set, lock
):
    folder, before = previous_set(profile, make_set)
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    with pytest.raises(InstallError) as error:
        install(profile, wheels=empty, lock=lock, log=lambda line: None)
    assert "No matching distribution found for ec-test-pkg==1.0" in str(error.value)
    root = folders.dependencies_root(profile)
    assert snapshot(root) == before
    assert folders.active_set(profile) == folder
    assert not list(root.glob(".installing-*"))


def test_a_missing_wheel_folder_fails_before_anything_is_written(tmp_path, profile, lock):
    with pytest.raises(InstallError, match="does not exist"):
        install(profile, wheels=tmp_path / "absent", lock=lock, log=lambda line: None)
    assert not (profile / "python").exists()


def test_a_profile_under_a_regular_file_fails_naming_the_folder(tmp_path, wheels, lock):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    profile = blocker / "default"
    with pytest.raises(InstallError) as error:
        install(profile, wheels=wheels, lock=lock, log=lambda line: None)
    message = str(error.value)
    assert f"Cannot write to the QGIS profile's folder {folders.dependencies_root(profile)}" in (
        message
    )
    assert "manual route" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 500")
def test_a_read_only_profile_fails_naming_the_folder(tmp_path, wheels, lock):
    profile = tmp_path / "default"
    profile.mkdir()
    profile.chmod(0o500)
    try:
        with pytest.raises(InstallError, match="Cannot write to the QGIS profile's folder"):
            install(profile, wheels=wheels, lock=lock, log=lambda line: None)
    finally:
        profile.chmod(0o700)


def test_a_cancelled_install_raises_and_leaves_nothing(profile, wheels, lock):
    with pytest.raises(InstallCancelledError, match="cancelled; nothing changed"):
        install(profile, wheels=wheels, lock=lock, log=lambda line: None, cancelled=lambda: True)
    root = folders.dependencies_root(profile)
    assert list(root.iterdir()) == []
    assert folders.active_set(profile) is None


def test_a_cancelled_install_keeps_the_previous_set(profile, make_set, wheels, lock):
    folder, before = previous_set(profile, make_set)
    with pytest.raises(InstallCancelledError):
        install(profile, wheels=wheels, lock=lock, log=lambda line: None, cancelled=lambda: True)
    assert snapshot(folders.dependencies_root(profile)) == before
    assert folders.active_set(profile) == folder


def test_find_python_is_an_interpreter_of_this_python_version():
    import subprocess

    python = find_python()
    assert python in python_candidates()
    out = subprocess.run(
        [str(python), "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.strip() == str(sys.version_info[:2])


def test_pip_command_is_wheels_only_hashed_without_deps_into_the_target(tmp_path):
    command = pip_command(Path("/py"), tmp_path / "set", tmp_path / "r.txt", tmp_path / "wheels")
    assert command[:4] == ["/py", "-m", "pip", "install"]
    assert command[command.index("--target") + 1] == str(tmp_path / "set")
    assert command[command.index("--only-binary") + 1] == ":all:"
    assert {"--no-deps", "--require-hashes", "--no-index"} <= set(command)
    assert command[command.index("--find-links") + 1] == str(tmp_path / "wheels")
    online = pip_command(Path("/py"), tmp_path / "set", tmp_path / "r.txt", None)
    assert "--no-index" not in online and "--find-links" not in online
