"""dependencies/folder.py: the profile's dependency folder, the active set, sys.path and the
start-up hook."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from embedding_change.dependencies import folder as folders
from embedding_change.dependencies.folder import (
    HOOK_BEGIN,
    HOOK_BODY,
    HOOK_END,
    activate,
    active_set,
    dependencies_root,
    install_startup_hook,
    qgis_numpy_version,
    read_stamp,
    remove_startup_hook,
    stale_reason,
    switch_to,
)

THIS_PYTHON = "{}.{}.{}".format(*sys.version_info[:3])

SYSTEM_PYTHON = Path("/usr/bin/python3")


def test_dependencies_root_is_per_plugin_and_python_minor_in_the_profile(tmp_path):
    profile = tmp_path / "default"
    assert dependencies_root(profile, (3, 13)) == (
        profile / "python" / "dependencies" / "embedding_change" / "py3.13"
    )
    assert dependencies_root(str(profile)).name == "py{}.{}".format(*sys.version_info[:2])
    assert folders.python_tag((3, 11)) == "py3.11"


def test_active_set_is_none_without_a_pointer(profile):
    assert active_set(profile) is None
    dependencies_root(profile).mkdir(parents=True)
    assert active_set(profile) is None


def test_active_set_is_none_when_the_pointer_names_a_missing_folder(profile):
    root = dependencies_root(profile)
    root.mkdir(parents=True)
    (root / "current").write_text("py3.11-numpy1-20261201T093000\n")
    assert active_set(profile) is None


def test_active_set_is_none_for_a_folder_without_its_stamp(profile):
    root = dependencies_root(profile)
    (root / "py3.11-numpy1-20261201T093000").mkdir(parents=True)
    (root / "current").write_text("py3.11-numpy1-20261201T093000\n")
    assert active_set(profile) is None


def test_active_set_is_none_for_an_empty_pointer(profile):
    root = dependencies_root(profile)
    root.mkdir(parents=True)
    (root / folders.STAMP).write_text("{}")  # the root itself must not count as a set
    (root / "current").write_text("\n")
    assert active_set(profile) is None


def test_active_set_is_the_stamped_folder_the_pointer_names(profile, make_set):
    folder = make_set(profile, "py3.11-numpy1-20261201T093000")
    assert active_set(profile) == folder
    assert read_stamp(folder)["lock"] == "py3.11-numpy1"


def test_read_stamp_of_a_broken_stamp_is_empty(tmp_path):
    (tmp_path / folders.STAMP).write_text("{not json")
    assert read_stamp(tmp_path) == {}
    assert read_stamp(tmp_path / "absent") == {}


def test_switch_to_replaces_the_pointer_and_leaves_no_temporary_file(tmp_path):
    first, second = tmp_path / "set-a", tmp_path / "set-b"
    first.mkdir()
    second.mkdir()
    switch_to(tmp_path, first)
    assert (tmp_path / "current").read_text() == "set-a\n"
    switch_to(tmp_path, second)
    assert (tmp_path / "current").read_text() == "set-b\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["current", "set-a", "set-b"]


def _stamp(**changes):
    stamp = {"python": THIS_PYTHON, "qgis_numpy": "1.24.2", "lock_sha256": "a" * 64}
    stamp.update(changes)
    return stamp


def test_stale_reason_is_none_when_python_numpy_and_lock_all_match():
    assert stale_reason(_stamp(), "a" * 64, "1.24.2") is None


def test_stale_reason_ignores_a_python_patch_release():
    patch = "{}.{}.99".format(*sys.version_info[:2])
    assert stale_reason(_stamp(python=patch), "a" * 64, "1.24.2") is None


def test_stale_reason_names_another_python():
    assert stale_reason(_stamp(python="3.10.4"), "a" * 64, "1.24.2") == (
        "it was installed for Python 3.10.4"
    )


def test_stale_reason_names_qgiss_numpy_change():
    reason = stale_reason(_stamp(), "a" * 64, "1.26.4")
    assert reason == (
        "QGIS's numpy changed since it was installed (1.24.2 -> 1.26.4): QGIS was upgraded"
    )


def test_stale_reason_names_a_plugin_update_with_other_pins():
    assert stale_reason(_stamp(), "b" * 64, "1.24.2") == (
        "the plugin was updated and pins other versions"
    )


def test_stale_reason_of_an_empty_stamp_asks_for_a_reinstall():
    assert stale_reason({}, "a" * 64, "1.24.2") == "it was installed for Python None"


def test_qgis_numpy_version_ignores_a_numpy_in_the_plugins_folder(profile, make_set, own_sys_path):
    folder = make_set(profile)
    info = folder / "numpy-9.9.9.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: numpy\nVersion: 9.9.9\n")
    own_sys_path.insert(0, str(folder))
    assert qgis_numpy_version(None) == "9.9.9"
    assert qgis_numpy_version(profile) not in (None, "9.9.9")


def test_activate_without_a_set_changes_nothing(profile, own_sys_path):
    before = list(own_sys_path)
    activation = activate(profile, "a" * 64)
    assert activation.folder is None and not activation.active
    assert activation.reinstall is None
    assert own_sys_path == before


def test_activate_puts_the_set_first_on_sys_path_once(profile, make_set, own_sys_path):
    folder = make_set(profile)
    first = activate(profile)
    second = activate(profile)
    assert first.active and second.active
    assert first.folder == folder and first.problems == [] and first.reinstall is None
    assert own_sys_path[0] == str(folder)
    assert own_sys_path.count(str(folder)) == 1


def test_activate_refuses_a_set_built_for_another_numpy_major(profile, make_set, own_sys_path):
    qgis_numpy = qgis_numpy_version(profile)
    other = "2.2.4" if qgis_numpy.startswith("1.") else "1.26.4"  # the other major
    folder = make_set(profile, qgis_numpy=other)
    activation = activate(profile)
    assert activation.folder == folder and not activation.active
    assert str(folder) not in own_sys_path
    assert activation.problems == [
        f"The installed dependencies were built for numpy {other}, QGIS now has numpy "
        f"{qgis_numpy}: install the dependencies again."
    ]


def test_activate_reports_a_reinstall_when_the_lock_changed(profile, make_set, own_sys_path):
    folder = make_set(profile, lock_sha256="a" * 64)
    assert activate(profile, "a" * 64).reinstall is None
    activation = activate(profile, "b" * 64)
    assert activation.active and own_sys_path[0] == str(folder)
    assert activation.reinstall == "the plugin was updated and pins other versions"
    assert activation.problems == []


def test_activate_says_restart_when_qgis_loaded_its_numpy_before_the_sets(
    profile, make_set, own_sys_path
):
    import numpy  # QGIS's Processing plugin does this before any other plugin loads

    folder = make_set(profile, with_numpy=True, numpy="1.26.4")
    activation = activate(profile)
    assert activation.active and own_sys_path[0] == str(folder)
    assert len(activation.problems) == 1
    assert activation.problems[0].startswith(
        f"QGIS loaded its numpy {numpy.__version__} before the plugin could load numpy 1.26.4"
    )
    assert "Restart QGIS" in activation.problems[0]


def test_activate_has_no_numpy_problem_when_the_set_has_no_numpy(profile, make_set, own_sys_path):
    import numpy  # noqa: F401

    make_set(profile)
    assert activate(profile).problems == []


ANALYSTS_SCRIPT = "import os\n\nMINE = os.sep  # the analyst's own start-up code\n"


def test_install_startup_hook_keeps_the_analysts_script_and_appends_the_block(tmp_path):
    (tmp_path / "startup.py").write_text(ANALYSTS_SCRIPT)
    path = install_startup_hook(tmp_path)
    assert path == tmp_path / "startup.py"
    assert path.read_text() == f"{ANALYSTS_SCRIPT}{HOOK_BEGIN}\n{HOOK_BODY}{HOOK_END}\n"


def test_install_startup_hook_twice_writes_one_block(tmp_path):
    (tmp_path / "startup.py").write_text(ANALYSTS_SCRIPT)
    once = install_startup_hook(tmp_path).read_text()
    twice = install_startup_hook(tmp_path).read_text()
    assert twice == once
    assert twice.count(HOOK_BEGIN) == 1 and twice.count(HOOK_END) == 1


def test_install_startup_hook_creates_the_script_and_its_folder(tmp_path):
    path = install_startup_hook(tmp_path / "QGIS3")
    assert path.read_text() == f"{HOOK_BEGIN}\n{HOOK_BODY}{HOOK_END}\n"
    compile(path.read_text(), str(path), "exec")


def test_remove_startup_hook_restores_the_analysts_script_exactly(tmp_path):
    (tmp_path / "startup.py").write_text(ANALYSTS_SCRIPT)
    install_startup_hook(tmp_path)
    remove_startup_hook(tmp_path)
    assert (tmp_path / "startup.py").read_text() == ANALYSTS_SCRIPT


def test_remove_startup_hook_keeps_what_the_analyst_added_after_the_block(tmp_path):
    path = install_startup_hook(tmp_path)
    path.write_text("BEFORE = 1\n" + path.read_text() + "AFTER = 2\n")
    remove_startup_hook(tmp_path)
    assert path.read_text() == "BEFORE = 1\nAFTER = 2\n"


def test_remove_startup_hook_deletes_a_script_that_held_only_the_block(tmp_path):
    install_startup_hook(tmp_path)
    remove_startup_hook(tmp_path)
    assert not (tmp_path / "startup.py").exists()
    remove_startup_hook(tmp_path)  # nothing there: nothing to do


def fake_qgis(tmp_path, profile) -> Path:
    """A `qgis.core` whose QgsApplication.qgisSettingsDirPath() is the tmp profile."""
    package = tmp_path / "fake_qgis" / "qgis"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "core.py").write_text(
        "class QgsApplication:\n"
        "    @staticmethod\n"
        "    def qgisSettingsDirPath():\n"
        f"        return {str(profile) + os.sep!r}\n"
    )
    return package.parent


RUN_STARTUP = """\
import json, sys
path = sys.argv[1]
exec(compile(open(path).read(), path, "exec"))
import qgis.core
print(json.dumps({
    "path": sys.path,
    "python": "%d.%d" % sys.version_info[:2],
    "qgis": qgis.core.__file__,
    "leftover": "_embedding_change_numpy_first" in globals(),
    "mine": globals().get("MINE"),
}))
"""


def run_startup_in_system_python(tmp_path, profile) -> dict:
    """QGIS's start-up script as QGIS runs it: exec'd in its Python before any plugin."""
    if not SYSTEM_PYTHON.is_file():
        pytest.skip("needs the system Python QGIS embeds, /usr/bin/python3")
    (tmp_path / "QGIS3").mkdir(exist_ok=True)
    (tmp_path / "QGIS3" / "startup.py").write_text(ANALYSTS_SCRIPT)
    script = install_startup_hook(tmp_path / "QGIS3")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin"),
        "PYTHONPATH": str(fake_qgis(tmp_path, profile)),
    }
    out = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", RUN_STARTUP, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    result = json.loads(out.stdout)
    if result["python"] != "{}.{}".format(*sys.version_info[:2]):
        pytest.skip("the system Python is not the Python these tests run on")
    assert result["qgis"].startswith(str(tmp_path)), "the fake qgis.core must be the one used"
    assert not result["leftover"] and result["mine"] == os.sep
    return result


def plugin_folder(profile) -> Path:
    path = profile / "python" / "plugins" / "embedding_change"
    path.mkdir(parents=True)
    return path


def test_startup_hook_puts_a_set_with_its_own_numpy_first(tmp_path, profile, make_set):
    folder = make_set(profile, with_numpy=True)
    plugin_folder(profile)
    result = run_startup_in_system_python(tmp_path, profile)
    assert result["path"][0] == str(folder)
    assert result["path"].count(str(folder)) == 1


def test_startup_hook_leaves_sys_path_alone_for_a_set_without_numpy(tmp_path, profile, make_set):
    folder = make_set(profile, with_numpy=False)
    plugin_folder(profile)
    result = run_startup_in_system_python(tmp_path, profile)
    assert str(folder) not in result["path"]


def test_startup_hook_leaves_sys_path_alone_when_the_plugin_is_not_in_the_profile(
    tmp_path, profile, make_set
):
    folder = make_set(profile, with_numpy=True)
    result = run_startup_in_system_python(tmp_path, profile)
    assert str(folder) not in result["path"]


def test_startup_hook_never_raises_without_a_pointer(tmp_path, profile):
    plugin_folder(profile)
    result = run_startup_in_system_python(tmp_path, profile)
    assert not [p for p in result["path"] if "dependencies" in p]
