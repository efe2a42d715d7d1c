"""scripts/render_scores.py: one year of scores rendered to PNG by QGIS's map renderer."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from qgis.PyQt.QtGui import QColor, QImage

from .conftest import write_scores_store

pytestmark = pytest.mark.qgis

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "render_scores.py"


def load_script():
    spec = importlib.util.spec_from_file_location("render_scores", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pixels(path) -> np.ndarray:
    image = QImage(str(path)).convertToFormat(QImage.Format_RGB32)
    values = np.frombuffer(bytes(image.constBits().asarray(image.sizeInBytes())), np.uint32)
    values = values.reshape(image.height(), image.width())
    return np.stack([(values >> s) & 0xFF for s in (16, 8, 0)], axis=-1)


def test_the_event_year_shows_the_event_in_red_on_the_background(project, tmp_path):
    store = write_scores_store(tmp_path / "scores.zarr", shape=(40, 50))
    render = load_script()

    event = render.render_year(store.path, 2020, tmp_path / "2020.png", width=500, project=project)
    quiet = render.render_year(store.path, 2021, tmp_path / "2021.png", width=500, project=project)

    rgb, calm = pixels(event), pixels(quiet)
    assert rgb.shape == (400, 500, 3)  # 10 image pixels per store pixel
    background = QColor(render.BACKGROUND)
    grey = [background.red(), background.green(), background.blue()]
    inside = rgb[110:190, 60:140]  # store rows 11..19, cols 6..14, off the edges
    assert (inside == [189, 0, 38]).all()
    outside = np.ones(rgb.shape[:2], bool)
    outside[95:205, 45:155] = False
    assert (rgb[outside] == grey).all()
    assert (calm == grey).all()  # 2021 has no event: only the background


def test_the_script_runs_from_the_command_line(tmp_path):
    store = write_scores_store(tmp_path / "scores.zarr")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(store.path), "--year", "2020", "--out",
         str(tmp_path / "out.png"), "--width", "300"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert QImage(str(tmp_path / "out.png")).width() == 300
