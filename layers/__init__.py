"""How outputs look and move in time in QGIS: styles, temporal wiring, layer sources, summaries.

Algorithms and the gui call these modules; they call core/ (inside functions, for the engine's
packages) and never the algorithms.
"""
