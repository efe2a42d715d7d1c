"""Run by the QGIS desktop (--code) in test_plugin_install: what an analyst sees once QGIS is up.

Writes a JSON report (message bar, plugin menu, the provider's algorithms, which numpy loaded)
to $REPORT and a screenshot next to it, then quits QGIS.
"""

import json
import os
import shutil
import subprocess
import sys

import qgis.utils
from qgis.core import QgsApplication
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QPushButton
from qgis.utils import iface


def report():
    bar = [
        {
            "title": item.title(),
            "text": item.text(),
            "buttons": [button.text() for button in item.findChildren(QPushButton)],
        }
        for item in iface.messageBar().items()
    ]
    menus = {
        action.text(): [sub.text() for sub in action.menu().actions()]
        for action in iface.pluginMenu().actions()
        if action.menu() is not None
    }
    provider = QgsApplication.processingRegistry().providerById("embeddingchange")
    numpy = sys.modules.get("numpy")
    out = os.environ["REPORT"]
    with open(out, "w") as file:
        json.dump(
            {
                "active_plugins": sorted(qgis.utils.active_plugins),
                "algorithms": sorted(a.id() for a in provider.algorithms()) if provider else None,
                "message_bar": bar,
                "plugin_menus": menus,
                "numpy": getattr(numpy, "__version__", None),
                "numpy_file": getattr(numpy, "__file__", None),
            },
            file,
            indent=1,
        )
    if shutil.which("import"):  # ImageMagick, for a look at it; not needed by the tests
        subprocess.run(["import", "-window", "root", out + ".png"], check=False)
    iface.actionExit().trigger()


QTimer.singleShot(3000, report)
