"""Shared by the dependency tests: an installed set written by hand in a tmp profile."""

import json
import sys

import pytest

from embedding_change.dependencies import folder as folders

THIS_PYTHON = "{}.{}.{}".format(*sys.version_info[:3])


@pytest.fixture
def profile(tmp_path):
    """A fresh QGIS profile folder (never the real one)."""
    path = tmp_path / "profiles" / "default"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def own_sys_path(monkeypatch):
    """activate() inserts into sys.path: give it a copy, put back after the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    return sys.path


@pytest.fixture
def make_set():
    """make_set(profile, name, with_numpy=False, **stamp): a set folder with stamp.json (and
    a numpy/ folder if asked), made the active one; returns its folder."""

    def make(profile, name="py3.11-numpy1-20261201T093000", with_numpy=False, **stamp):
        root = folders.dependencies_root(profile)
        folder = root / name
        folder.mkdir(parents=True)
        values = {
            "lock": "py3.11-numpy1",
            "lock_sha256": "0" * 64,
            "python": THIS_PYTHON,
            "qgis_numpy": folders.qgis_numpy_version(profile),
        }
        values.update(stamp)
        (folder / folders.STAMP).write_text(json.dumps(values))
        if with_numpy:
            (folder / "numpy").mkdir()
            (folder / "numpy" / "__init__.py").write_text("__version__ = '1.26.4'\n")
        folders.switch_to(root, folder)
        return folder

    return make
