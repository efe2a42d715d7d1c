"""The notice that the engine's packages are missing, and the one-click install behind it.

A non-blocking message-bar item names what is missing and offers "Install dependencies…",
which runs the Processing algorithm embeddingchange:installdependencies as a background task
(progress in QGIS's task bar, pip's output in the log panel's "Embedding Change" tab) and says
how it ended.
"""

from __future__ import annotations

import contextlib

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMessageLog,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
)
from qgis.PyQt.QtWidgets import QPushButton

INSTALL_ALGORITHM = "embeddingchange:installdependencies"
INSTALL_TEXT = "Install dependencies…"
LOG_TAG = "Embedding Change"


class LogFeedback(QgsProcessingFeedback):
    """Processing feedback that writes to the log panel's "Embedding Change" tab."""

    def __init__(self):
        super().__init__()
        self.errors: list[str] = []

    def pushInfo(self, info):
        QgsMessageLog.logMessage(info, LOG_TAG, Qgis.Info)

    def pushConsoleInfo(self, info):
        QgsMessageLog.logMessage(info, LOG_TAG, Qgis.Info)

    def pushWarning(self, warning):
        QgsMessageLog.logMessage(warning, LOG_TAG, Qgis.Warning)

    def reportError(self, error, fatalError=False):  # noqa: N803 (QGIS's name)
        self.errors.append(error)
        QgsMessageLog.logMessage(error, LOG_TAG, Qgis.Critical)


class DependencyNotice:
    """The message-bar notice and the install task; one per plugin instance."""

    def __init__(self, iface):
        self.iface = iface
        self.item = None
        self.task = None  # the running install (Python must keep it and its parts alive)
        self._keep = ()

    def show(self, report) -> None:
        """The notice for a report: what is missing, or why the set should be installed again."""
        if report.cannot_install and not report.ok:
            self._notice(
                "Embedding Change cannot run", f"{report.summary()} {report.cannot_install}"
            )
        elif not report.ok:
            self._notice("Embedding Change needs Python packages", report.short(), INSTALL_TEXT)
        elif report.reinstall:
            text = f"Install its dependencies again: {report.reinstall}."
            self._notice("Embedding Change", text, INSTALL_TEXT, Qgis.Info)

    def _notice(self, title: str, text: str, button_text: str = "", level=Qgis.Warning) -> None:
        self.clear()
        self.item = self.iface.messageBar().createMessage(title, text)
        if button_text:
            button = QPushButton(button_text, self.item)
            button.setObjectName("embeddingChangeInstallDependencies")
            button.clicked.connect(self.install)
            self.item.layout().addWidget(button)
        self.iface.messageBar().pushWidget(self.item, level, 0)

    def clear(self) -> None:
        if self.item is not None:
            # RuntimeError: the analyst closed it already (its C++ side is gone).
            with contextlib.suppress(RuntimeError):
                self.iface.messageBar().popWidget(self.item)
            self.item = None

    def install(self) -> None:
        """Run the installer as a background task, once at a time."""
        if self.task is not None:
            return
        algorithm = QgsApplication.processingRegistry().createAlgorithmById(INSTALL_ALGORITHM)
        context = QgsProcessingContext()
        context.setProject(QgsProject.instance())
        feedback = LogFeedback()
        task = QgsProcessingAlgRunnerTask(algorithm, {}, context, feedback)
        task.executed.connect(lambda ok, results: self._finished(ok, results, feedback))
        self.task, self._keep = task, (algorithm, context, feedback)
        self.clear()
        self.iface.messageBar().pushMessage(
            "Embedding Change",
            "Installing its dependencies in the background (about 150 MB); progress in the "
            "task bar, pip's output in the log panel's Embedding Change tab.",
            Qgis.Info,
            10,
        )
        QgsApplication.taskManager().addTask(task)

    def _finished(self, ok: bool, results: dict, feedback: LogFeedback) -> None:
        self.task, self._keep = None, ()
        bar = self.iface.messageBar()
        if ok:
            status = results.get("STATUS", "")
            level = Qgis.Success if status.startswith("Ready") else Qgis.Warning
            bar.pushMessage("Embedding Change", f"Dependencies installed. {status}", level, 0)
        else:
            reason = feedback.errors[-1] if feedback.errors else "see the log panel"
            self.item = bar.createMessage("Installing the dependencies failed", reason)
            button = QPushButton("Show log", self.item)
            button.clicked.connect(self.iface.openMessageLog)
            self.item.layout().addWidget(button)
            bar.pushWidget(self.item, Qgis.Critical, 0)
