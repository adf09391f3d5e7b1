"""Dock parameters that persist across napari sessions: one small JSON file per dock.

The files live in Qt's per-user configuration folder under ``napari-blastscope/`` (for example
``~/.config/napari-blastscope/`` on Linux), or in ``$BLASTSCOPE_SETTINGS_DIR`` when set.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from magicgui.widgets.bases import ValueWidget
from qtpy.QtCore import QStandardPaths

from blastscope.jsonable import jsonable

SETTINGS_ENV = "BLASTSCOPE_SETTINGS_DIR"


def settings_dir() -> Path:
    """Where the docks keep their parameters."""
    override = os.environ.get(SETTINGS_ENV)
    if override:
        return Path(override)
    location = QStandardPaths.StandardLocation.GenericConfigLocation
    return Path(QStandardPaths.writableLocation(location)) / "napari-blastscope"


class PersistentValues:
    """Restores the values of ``widgets`` (name -> widget) saved under ``key`` and saves them on
    every change. Values that no longer fit a widget (e.g. a removed choice) are skipped."""

    def __init__(self, key: str, widgets: dict[str, ValueWidget]):
        self.path = settings_dir() / f"{key}.json"
        self._widgets = widgets
        self._restore()
        for widget in widgets.values():
            widget.changed.connect(self.save)

    def _restore(self) -> None:
        try:
            stored = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if not isinstance(stored, dict):
            return
        for name, widget in self._widgets.items():
            if name not in stored:
                continue
            try:
                widget.value = stored[name]
            except (ValueError, TypeError):
                continue

    def save(self) -> None:
        """Write the current values (failures to write are ignored: settings are a comfort)."""
        values = {name: jsonable(widget.value) for name, widget in self._widgets.items()}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(values, indent=1), encoding="utf-8")
        except OSError:
            return
