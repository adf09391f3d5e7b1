"""The live view of a whole slide's cells (a folder written by ``blastscope run --tiled``, opened
by :func:`~blastscope.widgets._slide_io.read_tiled_result_layers`): its multiscale cells layer,
whose ``features`` are the slide's cells table, and its lazy colour and veil overlays.

The blast threshold moves the veil (its contrast limits, nothing recomputed) and recounts the
blasts and the slide call from the table with :mod:`blastscope.calls`, the one implementation of
the calls, with no inference; the Mutation dock's pooling and minimums re-pool the call from the
same table. A recounted call is a preview (no bootstrap interval). A click on a cell
selects its row for the inspector. Labels, edits and overrides of a whole slide stay with the
command line (the docks say so): a view is kept per layer, by its ``unique_id``, and ends when
the layer leaves the viewer.
"""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from napari.layers import Labels
from psygnal import Signal

from blastscope.calls import blast_calls, override_codes
from blastscope.pipeline import SlideCallSettings
from blastscope.slide_call import SlideCall
from blastscope.widgets._colours import veil_limits
from blastscope.widgets._layers import click_selects

SLIDE_RECORD_KEY = "slide_record"
"""Metadata key of the tiled run's ``slide.json`` record on its cells layer."""
VEIL_SUFFIX = " below threshold"
"""Name of a tiled result's veil overlay: the cells layer's name without " cells", then this."""

_VIEWS: dict[str, TiledResultView] = {}


def tiled_result_view(viewer: napari.viewer.Viewer, layer: Any) -> TiledResultView | None:
    """The view of ``layer`` when it is a tiled run's cells layer (made on first use), else
    None."""
    if not isinstance(layer, Labels) or SLIDE_RECORD_KEY not in layer.metadata:
        return None
    view = _VIEWS.get(layer.unique_id)
    if view is None:
        view = _VIEWS[layer.unique_id] = TiledResultView(viewer, layer)
    return view


class TiledResultView:
    """See the module text. Signals: ``changed`` (threshold, counts or call changed),
    ``selected(row)`` (the clicked cell's row of ``features``)."""

    changed = Signal()
    selected = Signal(int)

    def __init__(self, viewer: napari.viewer.Viewer, layer: Labels):
        self._viewer = viewer
        self.layer = layer
        self.layer_id = layer.unique_id
        record = layer.metadata[SLIDE_RECORD_KEY]
        features = layer.features
        self.threshold: float | None = record.get("settings", {}).get("blast_threshold")
        self._p_blast = features["p_blast"].to_numpy(np.float64) if "p_blast" in features else None
        self._override = override_codes(features.get("blast_override"), len(features))
        self._nucleated = (
            features["is_nucleated"].to_numpy(bool)
            if "is_nucleated" in features
            else np.ones(len(features), bool)
        )
        self.recorded_call: dict[str, Any] | None = record.get("slide_call")
        call = self.recorded_call
        self.classes: tuple[str, ...] = tuple(call["classes"]) if call else ()
        self._settings = (
            SlideCallSettings(call["pooling"], call["min_blasts"], call["min_probability"])
            if call
            else None
        )
        self.preview_call: SlideCall | None = None
        labels = features["label"].to_numpy(np.int64) if "label" in features else []
        self._rows = {int(label): row for row, label in enumerate(labels)}
        self.selected_row: int | None = None
        layer.mouse_drag_callbacks.append(click_selects(self.select))
        viewer.layers.events.removed.connect(self._on_layer_removed)

    def _on_layer_removed(self, event) -> None:
        if event.value is self.layer:
            _VIEWS.pop(self.layer_id, None)
            self._viewer.layers.events.removed.disconnect(self._on_layer_removed)

    @property
    def classified(self) -> bool:
        """Whether the run classified blasts (and recorded its threshold)."""
        return self._p_blast is not None and self.threshold is not None

    @property
    def demo(self) -> bool:
        """Whether a demonstration bundle made the run's calls (its models, by name or folder,
        as the run recorded them; one that cannot be found any more does not count)."""
        from blastscope.models.bundle import BundleError, read_metadata

        for entry in self.layer.metadata[SLIDE_RECORD_KEY].get("settings", {}).get("models", []):
            name = entry[0] if isinstance(entry, (list, tuple)) and entry else entry
            try:
                if isinstance(name, str) and read_metadata(name).get("demo"):
                    return True
            except (BundleError, OSError, ValueError):
                continue
        return False

    @property
    def slide_call(self) -> SlideCall | None:
        """The call at the current threshold: the preview once the threshold moved, else the
        run's own (with its interval)."""
        if self.preview_call is not None:
            return self.preview_call
        return SlideCall.from_dict(self.recorded_call) if self.recorded_call else None

    def is_blast(self) -> np.ndarray:
        """Blast or not per row of ``features`` at the current threshold (overrides kept)."""
        if not self.classified:
            return np.zeros(len(self._nucleated), bool)
        return blast_calls(self._p_blast, self.threshold, self._override)[1]

    def counts(self) -> dict[str, int]:
        """Cells, nucleated cells and blasts at the current threshold."""
        return {
            "cells": len(self._nucleated),
            "nucleated": int(self._nucleated.sum()),
            "blasts": int(self.is_blast().sum()),
        }

    def set_threshold(self, threshold: float) -> None:
        """Blast calls, counts, veil and slide call at ``threshold``; no inference."""
        if not self.classified or threshold == self.threshold:
            return
        self.threshold = float(threshold)
        name = self.layer.name.removesuffix(" cells") + VEIL_SUFFIX
        if name in self._viewer.layers:
            self._viewer.layers[name].contrast_limits = veil_limits(self.threshold)
        blast_call, is_blast = blast_calls(self._p_blast, self.threshold, self._override)
        features = self.layer.features
        features["blast_call"] = blast_call
        features["is_blast"] = is_blast
        self._pool_call()
        self.changed.emit()

    @property
    def call_settings(self) -> SlideCallSettings | None:
        """How the shown call pools the blasts: the run's settings until they are changed;
        None when the run made no call."""
        return self._settings

    def set_call_settings(self, settings: SlideCallSettings) -> None:
        """Re-pool the slide call from the table with ``settings`` (pooling, minimum blasts,
        minimum probability); no inference. A run that made no call has nothing to re-pool."""
        if settings == self._settings or not self._poolable():
            return
        self._settings = settings
        self._pool_call()
        self.changed.emit()

    def _poolable(self) -> bool:
        """Whether the run made a call and the table holds its classes' probabilities."""
        features = self.layer.features
        return self._settings is not None and all(f"p_{name}" in features for name in self.classes)

    def _pool_call(self) -> None:
        """The preview call from the table's blast calls and mutation probabilities."""
        if not self._poolable():
            return
        features = self.layer.features
        columns = ["is_nucleated", "is_blast", *(f"p_{name}" for name in self.classes)]
        self.preview_call = self._settings.call(features[columns], self.classes, n_bootstrap=1)

    def row_of(self, label: int) -> int | None:
        """The row of ``features`` of cell ``label``, else None."""
        return self._rows.get(int(label))

    def world_position(self, row: int) -> tuple[float, float]:
        """Where the cell of ``row`` lies in the viewer (µm): its centroid is in level-0
        pixels of the slide, the layer's translate is the analysed region's offset."""
        cell = self.layer.features.iloc[row]
        size_y, size_x = self.layer.scale[-2:]
        return float(cell["centroid_y"] * size_y), float(cell["centroid_x"] * size_x)

    def select(self, label: int) -> None:
        """Select cell ``label`` (its row goes to ``selected``)."""
        row = self.row_of(label)
        if row is not None:
            self.selected_row = row
            self.selected.emit(row)
