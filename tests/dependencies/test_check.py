"""dependencies/check.py: the one dependency check the plugin, its notice and algorithms share."""

from embedding_change.dependencies import folder as folders
from embedding_change.dependencies.check import dependency_report
from embedding_change.dependencies.locks import lock_for


def test_this_venv_with_an_empty_profile_has_everything_and_a_lock(profile, own_sys_path):
    before = list(own_sys_path)
    report = dependency_report(profile)
    assert report.ok, report.message()
    assert report.cannot_install is None and report.reinstall is None
    assert own_sys_path == before and not (profile / "python").exists()


def test_a_set_pinned_by_an_older_plugin_asks_for_a_reinstall(profile, make_set, own_sys_path):
    folder = make_set(profile, lock_sha256="0" * 64)
    report = dependency_report(profile)
    assert report.ok
    assert report.reinstall == "the plugin was updated and pins other versions"
    assert own_sys_path[0] == str(folder)


def test_a_set_stamped_with_this_lock_needs_nothing(profile, make_set, own_sys_path):
    lock = lock_for(numpy_version=folders.qgis_numpy_version(profile))
    make_set(profile, lock_sha256=lock.sha256())
    report = dependency_report(profile)
    assert report.ok and report.reinstall is None


def test_a_set_for_another_numpy_major_is_a_problem_in_the_report(profile, make_set, own_sys_path):
    other = other_numpy_major(folders.qgis_numpy_version(profile))
    folder = make_set(profile, qgis_numpy=other)
    report = dependency_report(profile)
    assert not report.ok
    assert report.problems[0].startswith(f"The installed dependencies were built for numpy {other}")
    assert report.problems[0] in report.message()
    assert str(folder) not in own_sys_path


def other_numpy_major(qgis_numpy: str) -> str:
    """A numpy of the other major than this Python's (Debian 12 has 1.x, Debian 13 2.x)."""
    return "2.2.4" if qgis_numpy.startswith("1.") else "1.26.4"
