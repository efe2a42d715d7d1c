"""Embedding Change: a QGIS plugin that finds the unusual years in satellite-embedding time series.

The engine lives in `core` (pure Python, no QGIS); QGIS loads the plugin through `classFactory`.
"""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    """Called by QGIS to load the plugin: first the dependencies' folder onto sys.path."""
    from .provider.dependency_check import load_dependencies

    report = load_dependencies()
    from .provider.plugin import EmbeddingChangePlugin

    return EmbeddingChangePlugin(iface, report)
