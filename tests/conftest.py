"""Shared test set-up: the checkout imports as `embedding_change` whatever its folder is called."""

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _link_package():
    # scripts/setup.sh puts a link in the venv; this covers a bare `pytest` run too.
    if importlib.util.find_spec("embedding_change") is not None:
        return
    plugins = ROOT / ".venv" / "qgis-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "embedding_change"
    if not link.exists():
        os.symlink(ROOT, link)
    sys.path.insert(0, str(plugins))


_link_package()
