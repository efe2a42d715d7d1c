"""The engine's Python dependencies in an analyst's QGIS: what is needed, where it lives, how
it installs. Standard library only: it runs before any of those packages can be imported.

    requirements  what the engine needs and whether this Python has it (no imports of it)
    locks         the pinned, hashed sets per (Python minor, numpy major), chosen for this Python
    folder        the plugin's folder in a QGIS profile: stamp, active set, sys.path, start-up hook
    pip_install   the interpreter for pip on each OS, and the install into a new folder
"""
