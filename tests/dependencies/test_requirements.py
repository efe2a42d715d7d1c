"""dependencies/requirements.py: what the engine needs, checked without importing it."""

import pytest

from embedding_change.dependencies.requirements import (
    REQUIRED,
    DependencyReport,
    Requirement,
    check_requirements,
    version_tuple,
)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("2.2.4", (2, 2, 4)),
        ("1.26", (1, 26)),
        ("1.26.4rc1", (1, 26, 4)),
        ("2.0.0.post1", (2, 0, 0)),
        ("2025.1.0", (2025, 1, 0)),
        ("0.60.0rc1", (0, 60, 0)),
    ],
)
def test_version_tuple_keeps_the_release_numbers_and_drops_suffixes(version, expected):
    assert version_tuple(version) == expected


def test_version_tuple_orders_releases_numerically_not_as_text():
    assert version_tuple("1.10") > version_tuple("1.9")
    assert version_tuple("0.100.0") > version_tuple("0.60")
    assert version_tuple("2025.1.0") > version_tuple("2025.1")
    assert version_tuple("2025.1") > version_tuple("2024.12.1")


def test_version_tuple_compares_rc_and_post_releases_as_their_release():
    # "Enough to compare releases": a suffix neither meets a newer minimum nor fails its own.
    assert version_tuple("1.26.4rc1") == version_tuple("1.26.4")
    assert version_tuple("1.26.4.post2") == version_tuple("1.26.4")
    assert version_tuple("1.26.0rc1") >= version_tuple("1.26")
    assert version_tuple("0.60.0rc1") < version_tuple("0.61")
    assert version_tuple("1.25.2.post1") < version_tuple("1.26")


def test_required_lists_every_engine_import_with_a_minimum():
    modules = {requirement.module for requirement in REQUIRED}
    assert {"numpy", "numba", "zarr", "xarray", "dask", "s3fs", "zarr_cm"} <= modules
    assert all(version_tuple(requirement.minimum) for requirement in REQUIRED)


def test_a_module_that_does_not_exist_is_missing_by_its_distribution_name():
    report = check_requirements([Requirement("no_such_module_ec", "no-such-dist-ec", "1.0")])
    assert report.missing == ["no-such-dist-ec"]
    assert report.too_old == []
    assert not report.ok


def test_an_installed_module_below_an_absurd_minimum_is_too_old_with_its_real_version():
    import pytest as installed

    report = check_requirements([Requirement("pytest", "pytest", "999.0")])
    assert report.missing == []
    assert report.too_old == [("pytest", installed.__version__, "999.0")]
    assert not report.ok


def test_a_satisfied_requirement_is_ok():
    report = check_requirements([Requirement("pytest", "pytest", "1.0")])
    assert report.missing == [] and report.too_old == [] and report.ok
    assert report.message() == "" and report.summary() == ""


def test_a_module_importable_without_metadata_counts_as_too_old(tmp_path, monkeypatch):
    (tmp_path / "ec_bare_module.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    report = check_requirements([Requirement("ec_bare_module", "ec-bare-module", "1.0")])
    assert report.too_old == [("ec-bare-module", "0", "1.0")]


def test_check_requirements_does_not_import_what_it_checks(tmp_path, monkeypatch):
    (tmp_path / "ec_loud_module.py").write_text("raise RuntimeError('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    report = check_requirements([Requirement("ec_loud_module", "ec-loud-module", "1.0")])
    assert report.too_old == [("ec-loud-module", "0", "1.0")]


def _report():
    return DependencyReport(missing=["numba", "zarr"], too_old=[("numpy", "1.24.2", "1.26")])


def test_summary_names_the_missing_and_the_too_old_with_versions():
    assert _report().summary() == (
        "Python packages missing: numba, zarr; too old: numpy 1.24.2 (needs 1.26)."
    )


def test_summary_appends_problems_after_the_packages():
    report = _report()
    report.problems.append("Restart QGIS.")
    assert report.summary().endswith("(needs 1.26). Restart QGIS.")
    assert DependencyReport(problems=["Restart QGIS."]).summary() == "Restart QGIS."


def test_message_names_the_packages_and_the_install_route():
    message = _report().message()
    assert message.startswith("Embedding Change cannot run yet. Python packages missing: numba")
    assert "numpy 1.24.2 (needs 1.26)" in message
    assert "Install dependencies…" in message
    assert "embeddingchange:installdependencies" in message
    assert "manual route" in message


def test_cannot_install_replaces_the_install_hint():
    report = _report()
    report.cannot_install = "No pinned set for Python 3.9. See the README's manual route."
    message = report.message()
    assert "numba, zarr" in message
    assert message.endswith("No pinned set for Python 3.9. See the README's manual route.")
    assert "Install dependencies" not in message
    assert "embeddingchange:installdependencies" not in message


def test_short_names_a_few_packages_with_the_right_verb():
    assert _report().short() == "numba, zarr, numpy are missing or too old."
    one = DependencyReport(missing=["s3fs"])
    assert one.short() == "s3fs is missing or too old."


def test_short_counts_the_packages_beyond_four():
    report = DependencyReport(missing=["a", "b", "c", "d", "e", "f"])
    assert report.short() == "a, b, c, d and 2 more are missing or too old."


def test_short_without_packages_gives_the_problems():
    report = DependencyReport(problems=["QGIS loaded its numpy first."])
    assert report.short() == "QGIS loaded its numpy first."
    assert not report.ok and report.names() == []


def test_reinstall_alone_does_not_make_the_report_fail():
    report = DependencyReport(reinstall="the plugin was updated and pins other versions")
    assert report.ok and report.message() == ""
