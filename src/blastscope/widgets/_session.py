"""The live state of one cells layer: its result, blast threshold, users' overrides, slide-call
settings, selected cell and colours, shared by every blastscope dock.

A change of the threshold, an override or the pooling settings is shown at once from numpy
arrays kept per result (``is_blast`` and ``blast_call`` written into the layer's ``features``,
the counts, the slide call's class and pooled probabilities, the veil's contrast limits), with
no inference and at a cost that does not depend on the number of cells beyond a few vector
operations. The exact result (the core's :func:`~blastscope.pipeline.rethreshold`, whose
bootstrap interval costs more) follows off the UI thread a moment later and replaces the
layer's ``features`` and the :class:`~blastscope.result.SlideResult` kept in its metadata; until
then :attr:`CellsSession.exact` is False and the panels show the interval as pending.

The session lives in the layer's metadata (under :data:`SESSION_KEY`), so that every dock,
whatever viewer proxy it holds, finds the same one with :func:`session_for`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import napari
import numpy as np
import pandas as pd
from napari.layers import Image, Labels, Shapes
from napari.qt.threading import FunctionWorker, create_worker
from napari.utils.notifications import show_error
from psygnal import Signal
from qtpy.QtCore import QTimer
from scipy import ndimage as ndi

from blastscope.models.classifier import Classifier
from blastscope.pipeline import SlideCallSettings, rethreshold
from blastscope.result import SlideResult
from blastscope.slide_call import SlideCall, call_slide
from blastscope.widgets._colours import (
    class_colormap,
    p_blast_colormap,
    per_pixel,
    top_class_values,
    veil_colormap,
    veil_limits,
    veil_values,
)
from blastscope.widgets._layers import (
    RESULT_KEY,
    SOURCE_KEY,
    layer_features,
    show_cells,
    viewer_text_overlay,
)

SESSION_KEY = "blastscope_session"
EXACT_DELAY_MS = 150
"""Quiet time after the last change before the exact result is computed (ms)."""
DEMO_NOTICE = "blastscope: demonstration model, not for diagnosis"
COLOUR_BY = ("p_blast", "mutation class")
OVERRIDE_KEYS = {"Shift-B": True, "Shift-N": False, "Shift-C": None}
UNDO_KEY = "Shift-U"
CELL_OPACITY = 0.6
MARKER_RGBA = (1.0, 0.2, 0.2, 1.0)


@dataclass
class CellArrays:
    """Per-cell arrays (rows of the cells table, in order) for the fast preview."""

    labels: np.ndarray
    p_blast: np.ndarray | None
    override: np.ndarray
    nucleated: np.ndarray
    probabilities: np.ndarray | None
    classes: tuple[str, ...]

    @classmethod
    def of(cls, result: SlideResult) -> CellArrays:
        cells = result.cells
        p_blast = cells["p_blast"].to_numpy(np.float64) if "p_blast" in cells else None
        override = np.full(len(cells), -1, np.int8)
        if "blast_override" in cells:
            values = cells["blast_override"].astype("boolean")
            override[values.fillna(False).to_numpy(bool)] = 1
            override[(~values).fillna(False).to_numpy(bool)] = 0
        classes = tuple(result.slide_call.classes) if result.slide_call is not None else ()
        columns = [f"p_{name}" for name in classes]
        probabilities = (
            cells[columns].to_numpy(np.float64)
            if classes and all(c in cells for c in columns)
            else None
        )
        return cls(
            labels=cells["label"].to_numpy(np.int64),
            p_blast=p_blast,
            override=override,
            nucleated=cells["is_nucleated"].to_numpy(bool),
            probabilities=probabilities,
            classes=classes,
        )

    def blast_calls(self, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """(``blast_call``, ``is_blast``) at ``threshold``, as ``apply_blast_threshold`` makes
        them: ``p_blast >= threshold`` (False for NaN), the override where set."""
        call = np.zeros(len(self.labels), bool)
        np.greater_equal(self.p_blast, threshold, out=call, where=np.isfinite(self.p_blast))
        return call, np.where(self.override >= 0, self.override == 1, call)

    def mutation_calls(self, is_blast: np.ndarray) -> np.ndarray:
        """``mutation_call`` as ``refresh_mutation_calls`` makes it: the top class of each
        blast with mutation probabilities, "" elsewhere."""
        scored = np.isfinite(self.probabilities).all(axis=1)
        top = np.where(scored[:, None], self.probabilities, -np.inf).argmax(axis=1)
        names = np.asarray(self.classes, dtype=object)[top]
        return np.where(is_blast & scored, names, "").astype(object)

    def override_column(self) -> pd.arrays.BooleanArray:
        """The ``blast_override`` column (<NA> where the user made no call)."""
        values = pd.array(self.override == 1, dtype="boolean")
        values[self.override < 0] = pd.NA
        return values


def exact_result(
    result: SlideResult,
    threshold: float,
    override: np.ndarray,
    settings: SlideCallSettings | None,
) -> SlideResult:
    """``result`` with the user's overrides (int8 per row: 1, 0, -1 none), the blast calls at
    ``threshold`` and the slide call pooled again with ``settings``; no inference."""
    cells = result.cells.copy()
    values = pd.array(override == 1, dtype="boolean")
    values[override < 0] = pd.NA
    cells["blast_override"] = values
    return rethreshold(replace(result, cells=cells), threshold, settings)


def session_for(viewer: napari.viewer.Viewer, layer: Labels) -> CellsSession:
    """The session of ``layer`` (made on first use)."""
    session = layer.metadata.get(SESSION_KEY)
    if not isinstance(session, CellsSession) or session.layer_id != layer.unique_id:
        session = CellsSession(viewer, layer)
        layer.metadata[SESSION_KEY] = session
    return session


def show_result(
    viewer: napari.viewer.Viewer,
    image_layer: Image,
    result: SlideResult,
    layer: Labels | None = None,
    *,
    update_data: bool = True,
) -> CellsSession:
    """Put ``result`` on the cells layer of ``image_layer`` (``layer``, or the one named after
    the image; added or updated in place, see :func:`show_cells`) and its colours on the colour
    and veil layers; returns the layer's session."""
    layer = show_cells(viewer, image_layer, result, layer, update_data=update_data)
    session = session_for(viewer, layer)
    session.show(result)
    return session


class CellsSession:
    """See the module text. Signals: ``changed`` (counts, calls, table or colours changed),
    ``selected(label)`` (the inspected cell; 0 for none)."""

    changed = Signal()
    selected = Signal(int)

    def __init__(self, viewer: napari.viewer.Viewer, layer: Labels):
        self._viewer = viewer
        self.layer = layer
        self.layer_id = layer.unique_id
        self.threshold: float | None = None
        self.settings: SlideCallSettings | None = None
        self.colour_by = COLOUR_BY[0]
        self.selected_label = 0
        self.exact = True
        self.preview_call: SlideCall | None = None
        self.override_history: list[tuple[int, bool | None]] = []
        self.blast_classifier: Classifier | None = None
        self.mutation_classifier: Classifier | None = None
        self._arrays: CellArrays | None = None
        self._bounding_boxes: list | None = None
        self._generation = 0
        self._worker: FunctionWorker | None = None
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(EXACT_DELAY_MS)
        self._timer.timeout.connect(self._start_exact)
        layer.mouse_drag_callbacks.append(self._on_click)
        for key, value in OVERRIDE_KEYS.items():
            layer.bind_key(key, self._key_override(value), overwrite=True)
        layer.bind_key(UNDO_KEY, lambda _layer: self.undo_override(), overwrite=True)

    # ----------------------------------------------------------------- state
    @property
    def result(self) -> SlideResult | None:
        """The exact result (the one exports and re-runs start from)."""
        return self.layer.metadata.get(RESULT_KEY)

    @property
    def classified(self) -> bool:
        return self._arrays is not None and self._arrays.p_blast is not None

    @property
    def classes(self) -> tuple[str, ...]:
        return self._arrays.classes if self._arrays is not None else ()

    @property
    def slide_call(self) -> SlideCall | None:
        """The slide call shown now (the preview's until the exact one arrives)."""
        if self.exact:
            result = self.result
            return result.slide_call if result is not None else None
        return self.preview_call

    @property
    def demo(self) -> bool:
        """Whether a demonstration bundle made the current calls."""
        result = self.result
        provenance = result.provenance if result is not None else {}
        return any(provenance.get(stage, {}).get("demo") for stage in ("blast", "mutation"))

    def counts(self) -> dict[str, int]:
        """Cells, nucleated cells and blasts (with the current threshold and overrides)."""
        features = self.layer.features
        blasts = int(features["is_blast"].sum()) if "is_blast" in features else 0
        nucleated = int(features["is_nucleated"].sum()) if "is_nucleated" in features else 0
        return {"cells": len(features), "nucleated": nucleated, "blasts": blasts}

    def override_codes(self) -> np.ndarray:
        """The users' calls per row (int8: 1 blast, 0 non-blast, -1 none), a copy."""
        if self._arrays is None:
            return np.empty(0, np.int8)
        return self._arrays.override.copy()

    def row_of(self, label: int) -> int | None:
        """The row of the cells table (and of ``features``) of cell ``label``, else None."""
        if self._arrays is None:
            return None
        rows = np.flatnonzero(self._arrays.labels == label)
        return int(rows[0]) if len(rows) else None

    # ----------------------------------------------------------------- new results
    def show(self, result: SlideResult) -> None:
        """Take ``result`` (just put on the layer by :func:`show_result`) as the exact state."""
        self._timer.stop()
        self._generation += 1
        previous = self._arrays
        self._arrays = CellArrays.of(result)
        self._bounding_boxes = None
        if previous is None or not np.array_equal(previous.labels, self._arrays.labels):
            self.override_history.clear()
        if self.row_of(self.selected_label) is None:
            self.selected_label = 0
        blast = result.provenance.get("blast", {})
        self.threshold = blast.get("threshold") if self.classified else None
        if result.slide_call is not None:
            call = result.slide_call
            self.settings = SlideCallSettings(call.pooling, call.min_blasts, call.min_probability)
        if self.colour_by != COLOUR_BY[0] and self._arrays.probabilities is None:
            self.colour_by = COLOUR_BY[0]
        self.exact = True
        self.preview_call = None
        self._update_colour_layers()
        self._update_demo_notice()
        self._mark_selected()
        self.changed.emit()

    # ----------------------------------------------------------------- fast changes
    def set_threshold(self, threshold: float) -> None:
        """Blast calls, counts, colours and slide call at ``threshold``; no inference."""
        if not self.classified or threshold == self.threshold:
            return
        self.threshold = float(threshold)
        veil = self._overlay(self.veil_layer_name)
        if veil is not None:
            veil.contrast_limits = veil_limits(self.threshold)
        self._preview()

    def set_settings(self, settings: SlideCallSettings) -> None:
        """Pool the slide call with other settings (pooling, minimum blasts); no inference."""
        if settings == self.settings:
            return
        self.settings = settings
        if self.result is not None and self.result.slide_call is not None:
            self._preview()

    def set_override(self, label: int, value: bool | None) -> None:
        """Mark cell ``label`` a blast (True) or a non-blast (False), or clear the mark (None);
        undoable with :meth:`undo_override`."""
        row = self.row_of(label)
        if row is None or not self.classified:
            raise ValueError(
                f"Cell {label} is not in the classified cells table; click a cell of the cells "
                "layer after running Classify blasts."
            )
        before = int(self._arrays.override[row])
        self.override_history.append((label, None if before < 0 else bool(before)))
        self._apply_override(row, value)

    def undo_override(self) -> None:
        """Undo the last override (no-op when there is none)."""
        if not self.override_history:
            return
        label, previous = self.override_history.pop()
        row = self.row_of(label)
        if row is not None:
            self._apply_override(row, previous)

    def _apply_override(self, row: int, value: bool | None) -> None:
        self._arrays.override[row] = -1 if value is None else int(value)
        self.layer.features["blast_override"] = self._arrays.override_column()
        self._update_veil_cell(row)
        self._preview()

    def _preview(self) -> None:
        arrays = self._arrays
        call, is_blast = arrays.blast_calls(self.threshold)
        features = self.layer.features
        features["blast_call"] = call
        features["is_blast"] = is_blast
        if arrays.probabilities is not None and "mutation_call" in features:
            features["mutation_call"] = arrays.mutation_calls(is_blast)
        self.preview_call = None
        result = self.result
        pooled = result is not None and result.slide_call is not None
        if pooled and arrays.probabilities is not None:
            settings = self.settings
            rows = arrays.nucleated | is_blast  # the only rows the call counts or pools
            table = {"is_nucleated": arrays.nucleated[rows], "is_blast": is_blast[rows]}
            for index, name in enumerate(arrays.classes):
                table[f"p_{name}"] = arrays.probabilities[rows, index]
            table = pd.DataFrame(table)
            self.preview_call = call_slide(
                table,
                arrays.classes,
                pooling=settings.pooling,
                min_blasts=settings.min_blasts,
                min_probability=settings.min_probability,
                n_bootstrap=1,
            )
        self.exact = False
        self._generation += 1
        self._timer.start()
        self.changed.emit()

    # ----------------------------------------------------------------- exact results
    def flush(self) -> SlideResult | None:
        """Bring the exact result up to date now (on this thread) and return it."""
        self._timer.stop()
        if not self.exact:
            self._generation += 1
            self._store(self._compute_exact())
        return self.result

    def _compute_exact(self) -> SlideResult:
        return exact_result(self.result, self.threshold, self.override_codes(), self.settings)

    def _start_exact(self) -> None:
        if self._worker is not None or self.exact:
            return
        generation = self._generation
        worker = create_worker(
            exact_result,
            self.result,
            self.threshold,
            self.override_codes(),
            self.settings,
            _start_thread=False,
            _ignore_errors=True,
        )
        worker.returned.connect(lambda result: self._exact_done(result, generation))
        worker.errored.connect(lambda error: show_error(str(error)))
        worker.finished.connect(self._exact_finished)
        self._worker = worker
        worker.start()

    def _exact_done(self, result: SlideResult, generation: int) -> None:
        if generation == self._generation:
            self._store(result)

    def _exact_finished(self) -> None:
        self._worker = None
        if not self.exact and not self._timer.isActive():
            self._timer.start()

    def _store(self, result: SlideResult) -> None:
        self.layer.metadata[RESULT_KEY] = result
        self.layer.metadata["provenance"] = result.provenance
        self.layer.features = layer_features(result.cells)
        self.exact = True
        self.preview_call = None
        self.changed.emit()

    # ----------------------------------------------------------------- selection
    def select(self, label: int) -> None:
        """Make cell ``label`` the inspected one (0: none) and ring it on the canvas."""
        self.selected_label = int(label)
        self._mark_selected()
        self.selected.emit(self.selected_label)

    @property
    def marker_layer_name(self) -> str:
        return f"{self._base_name} selected cell"

    def _cell_box(self, label: int) -> tuple[slice, slice] | None:
        labels = self.result.labels
        if self._bounding_boxes is None:
            self._bounding_boxes = ndi.find_objects(labels)
        if not 0 < label <= len(self._bounding_boxes):
            return None
        return self._bounding_boxes[label - 1]

    def _mark_selected(self) -> None:
        layers = self._viewer.layers
        name = self.marker_layer_name
        box = self._cell_box(self.selected_label) if self.result is not None else None
        if box is None:
            if name in layers:
                layers.remove(layers[name])
            return
        rows, cols = box
        top, left, bottom, right = rows.start - 3, cols.start - 3, rows.stop + 2, cols.stop + 2
        corners = np.array(
            [[top, left], [top, right], [bottom, right], [bottom, left]], dtype=float
        )
        if name in layers and isinstance(layers[name], Shapes):
            marker = layers[name]
            marker.data = [corners]
            marker.shape_type = ["ellipse"]
        else:
            self._viewer.add_shapes(
                [corners],
                shape_type="ellipse",
                name=name,
                edge_color=np.array([MARKER_RGBA]),
                face_color="transparent",
                edge_width=3,
                scale=self.layer.scale,
                translate=self.layer.translate,
            )
        layers.selection.active = self.layer

    def _on_click(self, layer: Labels, event):
        if layer.mode != "pan_zoom":
            return
        start = np.asarray(event.position)
        yield
        moved = False
        while event.type == "mouse_move":
            moved = moved or np.abs(np.asarray(event.position) - start).max() > 0
            yield
        if moved:
            return
        value = layer.get_value(event.position, world=True)
        if value is not None and int(value) > 0:
            self.select(int(value))

    def _key_override(self, value: bool | None):
        def mark(_layer: Labels) -> None:
            if self.selected_label > 0 and self.classified:
                self.set_override(self.selected_label, value)

        return mark

    # ----------------------------------------------------------------- colours
    @property
    def _base_name(self) -> str:
        return self.layer.metadata.get(SOURCE_KEY) or self.layer.name

    @property
    def colour_layer_name(self) -> str:
        return f"{self._base_name} cell colours"

    @property
    def veil_layer_name(self) -> str:
        return f"{self._base_name} below threshold"

    def _overlay(self, name: str) -> Image | None:
        if name in self._viewer.layers and isinstance(self._viewer.layers[name], Image):
            return self._viewer.layers[name]
        return None

    def set_colour_by(self, mode: str) -> None:
        """Colour cells by ``"p_blast"`` or by their top ``"mutation class"``."""
        if mode not in COLOUR_BY:
            raise ValueError(f"Colour cells by one of {', '.join(COLOUR_BY)}, not {mode!r}.")
        if mode == COLOUR_BY[1] and (self._arrays is None or self._arrays.probabilities is None):
            raise ValueError("Run Predict mutation first: no cell has mutation probabilities.")
        if mode != self.colour_by:
            self.colour_by = mode
            self._update_colour_layers()
            self.changed.emit()

    def _update_colour_layers(self) -> None:
        if not self.classified:
            for name in (self.colour_layer_name, self.veil_layer_name):
                if self._overlay(name) is not None:
                    self._viewer.layers.remove(name)
            return
        arrays = self._arrays
        labels = self.result.labels
        if self.colour_by == COLOUR_BY[1]:
            values = per_pixel(labels, arrays.labels, top_class_values(arrays.probabilities))
            colour = {
                "colormap": class_colormap(arrays.classes),
                "contrast_limits": (0.0, float(len(arrays.classes))),
            }
        else:
            values = per_pixel(labels, arrays.labels, arrays.p_blast)
            colour = {"colormap": p_blast_colormap(), "contrast_limits": (0.0, 1.0)}
        veil = per_pixel(labels, arrays.labels, veil_values(arrays.p_blast, arrays.override))
        self._put_overlay(self.colour_layer_name, values, colour, CELL_OPACITY)
        veil_style = {"colormap": veil_colormap(), "contrast_limits": veil_limits(self.threshold)}
        self._put_overlay(self.veil_layer_name, veil, veil_style, 1.0)
        colours = self._overlay(self.colour_layer_name)
        colours.colorbar.visible = self.colour_by == COLOUR_BY[0]
        colours.colorbar.position = "bottom_right"  # the demo notice takes the top
        self._order_layers()

    def _put_overlay(self, name: str, data: np.ndarray, style: dict, opacity: float) -> None:
        placement = {"scale": self.layer.scale, "translate": self.layer.translate}
        layer = self._overlay(name)
        if layer is None:
            self._viewer.add_image(
                data,
                name=name,
                opacity=opacity,
                interpolation2d="nearest",
                blending="translucent",
                metadata={"blastscope_overlay": True},
                **style,
                **placement,
            )
            return
        layer.data = data
        layer.colormap = style["colormap"]
        layer.contrast_limits = style["contrast_limits"]
        layer.scale, layer.translate = placement["scale"], placement["translate"]

    def _order_layers(self) -> None:
        """Colours, then the veil, then the cells layer on top (active, for hover and clicks)."""
        layers = self._viewer.layers
        for name in (self.colour_layer_name, self.veil_layer_name):
            layers.move(layers.index(name), layers.index(self.layer.name))
        layers.selection.active = self.layer

    def _update_veil_cell(self, row: int) -> None:
        veil = self._overlay(self.veil_layer_name)
        label = int(self._arrays.labels[row])
        box = self._cell_box(label)
        if veil is None or box is None:
            return
        labels = self.result.labels
        rows = slice(row, row + 1)
        value = veil_values(self._arrays.p_blast[rows], self._arrays.override[rows])[0]
        veil.data[box][labels[box] == label] = value
        veil.refresh()

    def _update_demo_notice(self) -> None:
        overlay = viewer_text_overlay(self._viewer)
        if self.demo:
            overlay.text = DEMO_NOTICE
            overlay.color = (1.0, 0.55, 0.0, 1.0)
            overlay.font_size = 12
            overlay.position = "top_left"
            overlay.visible = True
        elif overlay.text == DEMO_NOTICE:
            overlay.visible = False
