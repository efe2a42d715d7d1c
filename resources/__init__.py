"""Files the plugin shows: the icon the provider, its algorithms and the toolbar share."""

from pathlib import Path

ICON = Path(__file__).resolve().parent / "icon.svg"
