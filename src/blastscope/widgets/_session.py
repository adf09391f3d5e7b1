"""The live state of one cells layer as napari shows it: a view of the headless review model
(:class:`~blastscope.review.Review`: threshold, overrides and their audit, calls, counts, the
slide-call preview) plus the selected cell and the colour layers, shared by every blastscope dock.

A change of the threshold, an override or the pooling settings is shown at once from the
review's per-cell arrays (``is_blast`` and ``blast_call`` written into the layer's ``features``,
the counts, the slide call's class and pooled probabilities, the veil's contrast limits), with
no inference. The exact result (:meth:`Review.exact`, whose bootstrap interval costs more)
follows off the UI thread a moment later and replaces the layer's ``features`` and the
:class:`~blastscope.result.SlideResult` kept in its metadata; until then
:attr:`CellsSession.exact` is False and the panels show the interval as pending.

Sessions are kept per layer (by its ``unique_id``, not in its metadata, which writers see) so
that every dock, whatever viewer proxy it holds, finds the same one with :func:`session_for`;
a session ends when its layer leaves the viewer.
"""

from __future__ import annotations

import napari
import numpy as np
from napari.layers import Image, Labels, Shapes
from napari.qt.threading import FunctionWorker, create_worker
from napari.utils.notifications import show_error, show_warning
from psygnal import Signal
from qtpy.QtCore import QTimer
from scipy import ndimage as ndi

from blastscope.calls import override_column
from blastscope.models.classifier import Classifier
from blastscope.pipeline import SlideCallSettings
from blastscope.result import SlideResult
from blastscope.review import Review
from blastscope.slide_call import SlideCall
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
    OVERLAY_KEY,
    RESULT_KEY,
    SOURCE_KEY,
    click_selects,
    put_features,
    show_cells,
    viewer_camera,
    viewer_scale_bar,
    viewer_text_overlay,
)

_SESSIONS: dict[str, CellsSession] = {}
"""The live session of each cells layer, by the layer's ``unique_id``."""
EXACT_DELAY_MS = 150
"""Quiet time after the last change before the exact result is computed (ms)."""
DEMO_NOTICE = "demo model: not for diagnosis"
COLOUR_BY = ("p_blast", "mutation class")
OVERRIDE_KEYS = {"Shift-B": True, "Shift-N": False, "Shift-C": None}
UNDO_KEY = "Shift-U"
NEXT_KEY = "Shift-Space"
CELL_OPACITY = 0.6
MARKER_RGBA = (1.0, 0.2, 0.2, 1.0)


def session_for(
    viewer: napari.viewer.Viewer, layer: Labels, *, show_stored: bool = True
) -> CellsSession:
    """The session of ``layer`` (made on first use, showing the result the layer holds, e.g.
    a reopened review, unless ``show_stored`` is False)."""
    session = _SESSIONS.get(layer.unique_id)
    if session is None:
        session = CellsSession(viewer, layer)
        _SESSIONS[layer.unique_id] = session
        stored = layer.metadata.get(RESULT_KEY)
        if show_stored and isinstance(stored, SlideResult):
            session.show(stored)
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
    and veil layers; returns the layer's session.

    A run works on the labels it started from: when the user painted the layer meanwhile, the
    painting is kept (not replaced by the run's labels) and a warning says how to bring the
    table up to date; ``update_data`` False leaves the layer's labels as they are in any case.
    """
    if update_data and isinstance(layer, Labels):
        current = np.asarray(layer.data)
        if current.shape == result.labels.shape and not np.array_equal(current, result.labels):
            update_data = False
            show_warning(
                f"{layer.name} was edited while the run went on: your edits are kept; click "
                "'Re-classify edited cells' (Edit and re-classify) to bring them up to date."
            )
    layer = show_cells(viewer, image_layer, result, layer, update_data=update_data)
    session = session_for(viewer, layer, show_stored=False)
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
        self.review: Review | None = None
        self.colour_by = COLOUR_BY[0]
        self.selected_label = 0
        self.exact = True
        self.preview_call: SlideCall | None = None
        self.blast_classifier: Classifier | None = None
        self.mutation_classifier: Classifier | None = None
        self._bounding_boxes: list | None = None
        self._generation = 0
        self._failed_generation = -1
        self._worker: FunctionWorker | None = None
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(EXACT_DELAY_MS)
        self._timer.timeout.connect(self._start_exact)
        layer.mouse_drag_callbacks.append(click_selects(self.select))
        for key, value in OVERRIDE_KEYS.items():
            layer.bind_key(key, self._key_override(value), overwrite=True)
        layer.bind_key(UNDO_KEY, lambda _layer: self.undo_override(), overwrite=True)
        layer.bind_key(NEXT_KEY, lambda _layer: self.select_next_uncertain(), overwrite=True)
        viewer.layers.events.removed.connect(self._on_layer_removed)

    def _on_layer_removed(self, event) -> None:
        if event.value is self.layer or getattr(event.value, "unique_id", None) == self.layer_id:
            self._timer.stop()
            _SESSIONS.pop(self.layer_id, None)
            self._viewer.layers.events.removed.disconnect(self._on_layer_removed)

    # ----------------------------------------------------------------- state
    @property
    def result(self) -> SlideResult | None:
        """The exact result (the one exports and re-runs start from)."""
        return self.layer.metadata.get(RESULT_KEY)

    @property
    def classified(self) -> bool:
        return self.review is not None and self.review.classified

    @property
    def classes(self) -> tuple[str, ...]:
        return self.review.classes if self.review is not None else ()

    @property
    def threshold(self) -> float | None:
        """The blast threshold in use (None before classification)."""
        return self.review.threshold if self.classified else None

    @property
    def settings(self) -> SlideCallSettings | None:
        """How the slide call pools blasts (None before the mutation stage)."""
        return self.review.settings if self.review is not None else None

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
        if self.review is None:
            return {"cells": 0, "nucleated": 0, "blasts": 0}
        return self.review.counts()

    def row_of(self, label: int) -> int | None:
        """The row of the cells table (and of ``features``) of cell ``label``, else None."""
        return self.review.row_of(label) if self.review is not None else None

    # ----------------------------------------------------------------- new results
    def show(self, result: SlideResult) -> None:
        """Take ``result`` (just put on the layer by :func:`show_result`) as the exact state."""
        self._timer.stop()
        self._generation += 1
        self.review = Review(result)
        self._bounding_boxes = None
        if self.row_of(self.selected_label) is None:
            self.selected_label = 0
        if self.colour_by != COLOUR_BY[0] and self.review.probabilities is None:
            self.colour_by = COLOUR_BY[0]
        self.exact = True
        self.preview_call = None
        self._update_colour_layers()
        self._update_demo_notice()
        self._show_scale_bar()
        self._mark_selected()
        self.changed.emit()

    # ----------------------------------------------------------------- fast changes
    def set_threshold(self, threshold: float) -> None:
        """Blast calls, counts, colours and slide call at ``threshold``; no inference."""
        if not self.classified or threshold == self.threshold:
            return
        self.review.set_threshold(threshold)
        veil = self._overlay(self.veil_layer_name)
        if veil is not None:
            veil.contrast_limits = veil_limits(self.threshold)
        self._preview()

    def set_settings(self, settings: SlideCallSettings) -> None:
        """Pool the slide call with other settings (pooling, minimum blasts); no inference."""
        if self.review is None or settings == self.settings:
            return
        self.review.set_settings(settings)
        if self.result is not None and self.result.slide_call is not None:
            self._preview()

    def set_override(self, label: int, value: bool | None) -> None:
        """Mark cell ``label`` a blast (True) or a non-blast (False), or clear the mark (None);
        audited and undoable with :meth:`undo_override`."""
        if self.review is None:
            raise ValueError("Run Classify blasts first: there are no calls to change.")
        self.review.set_override(label, value)
        self._override_shown(label)

    def undo_override(self) -> None:
        """Undo the last override (no-op when there is none)."""
        undone = self.review.undo_override() if self.classified else None
        if undone is not None:
            self._override_shown(undone.label)

    def select_next_uncertain(self) -> None:
        """Inspect the next cell of the review queue (undecided, nearest the threshold)."""
        label = self.review.next_uncertain(self.selected_label) if self.classified else None
        if label is not None:
            self.go_to(label)

    def _override_shown(self, label: int) -> None:
        self.layer.features["blast_override"] = override_column(self.review.override)
        row = self.row_of(label)
        if row is not None:
            self._update_veil_cell(row)
        self._preview()

    def _preview(self) -> None:
        review = self.review
        blast_call, is_blast = review.calls()
        features = self.layer.features
        features["blast_call"] = blast_call
        features["is_blast"] = is_blast
        mutation_calls = review.mutation_calls(is_blast)
        if mutation_calls is not None and "mutation_call" in features:
            features["mutation_call"] = mutation_calls
        result = self.result
        pooled = result is not None and result.slide_call is not None
        self.preview_call = review.preview_call() if pooled else None
        if self.colour_by == COLOUR_BY[1]:
            self._update_colour_layers()
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
        return self.review.exact()

    def _start_exact(self) -> None:
        if self._worker is not None or self.exact:
            return
        generation = self._generation
        worker = create_worker(
            self.review.snapshot().exact, _start_thread=False, _ignore_errors=True
        )
        worker.returned.connect(lambda result: self._exact_done(result, generation))
        worker.errored.connect(lambda error: self._exact_failed(error, generation))
        worker.finished.connect(self._exact_finished)
        self._worker = worker
        worker.start()

    def _exact_done(self, result: SlideResult, generation: int) -> None:
        if generation == self._generation:
            self._store(result)

    def _exact_failed(self, error: Exception, generation: int) -> None:
        self._failed_generation = generation  # not retried until the state changes again
        show_error(str(error))

    def _exact_finished(self) -> None:
        self._worker = None
        retry = self._failed_generation != self._generation
        if not self.exact and not self._timer.isActive() and retry:
            self._timer.start()

    def _store(self, result: SlideResult) -> None:
        put_features(self.layer, result.cells)
        self.layer.metadata[RESULT_KEY] = result
        self.layer.metadata["provenance"] = result.provenance
        self.exact = True
        self.preview_call = None
        self.changed.emit()

    # ----------------------------------------------------------------- selection
    def go_to(self, label: int) -> None:
        """Centre the view on cell ``label`` and inspect it."""
        row = self.row_of(label)
        if row is None:
            return
        features = self.layer.features
        centre = (features["centroid_y"].iloc[row], features["centroid_x"].iloc[row])
        viewer_camera(self._viewer).center = tuple(self.layer.data_to_world(centre))
        self.select(label)

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
                units=self.layer.units,
            )
        layers.selection.active = self.layer

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
        if mode == COLOUR_BY[1] and (self.review is None or self.review.probabilities is None):
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
        arrays = self.review
        labels = self.result.labels
        if self.colour_by == COLOUR_BY[1]:
            top_class = top_class_values(arrays.probabilities)
            top_class[~arrays.calls()[1]] = np.nan  # only blasts carry a mutation call
            values = per_pixel(labels, arrays.labels, top_class)
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
        placement = {
            "scale": self.layer.scale,
            "translate": self.layer.translate,
            "units": self.layer.units,
        }
        layer = self._overlay(name)
        if layer is None:
            self._viewer.add_image(
                data,
                name=name,
                opacity=opacity,
                interpolation2d="nearest",
                blending="translucent",
                metadata={OVERLAY_KEY: True},
                **style,
                **placement,
            )
            return
        layer.data = data
        layer.colormap = style["colormap"]
        layer.contrast_limits = style["contrast_limits"]
        layer.scale, layer.translate = placement["scale"], placement["translate"]
        layer.units = placement["units"]

    def _order_layers(self) -> None:
        """Colours, then the veil, then the cells layer on top (active, for hover and clicks)."""
        layers = self._viewer.layers
        for name in (self.colour_layer_name, self.veil_layer_name):
            layers.move(layers.index(name), layers.index(self.layer.name))
        layers.selection.active = self.layer

    def _update_veil_cell(self, row: int) -> None:
        veil = self._overlay(self.veil_layer_name)
        label = int(self.review.labels[row])
        box = self._cell_box(label)
        if veil is None or box is None:
            return
        labels = self.result.labels
        rows = slice(row, row + 1)
        value = veil_values(self.review.p_blast[rows], self.review.override[rows])[0]
        veil.data[box][labels[box] == label] = value
        veil.refresh()

    def _show_scale_bar(self) -> None:
        """A scale bar in µm when the cells are placed in µm (their scale is the pixel size):
        the image, the cells and their overlays get µm units (napari's scale bar reads them)."""
        result = self.result
        if result is None:
            return
        for layer in self._viewer.layers:
            scale = [float(value) for value in layer.scale[-2:]]
            ours = layer is self.layer or layer.name.startswith(self._base_name)
            if ours and np.allclose(scale, result.pixel_size_um, rtol=1e-3):
                layer.units = ("um",) * layer.ndim
        viewer_scale_bar(self._viewer).visible = True

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
