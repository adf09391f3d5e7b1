"""What the result docks share: an image and a cells-layer choice, and following the chosen
cells layer's :class:`~blastscope.widgets._session.CellsSession` (and, for a whole slide's
cells from a tiled run, its :class:`~blastscope.widgets._slide_view.TiledResultView`)."""

from __future__ import annotations

import napari
import numpy as np
from magicgui.widgets import Container, Label, create_widget
from napari.layers import Image, Labels
from napari.utils.notifications import show_warning
from qtpy.QtWidgets import QMessageBox

from blastscope.io import to_rgb_uint8
from blastscope.pipeline import labels_result_steps
from blastscope.progress import Steps
from blastscope.result import SlideResult
from blastscope.widgets._layers import (
    SOURCE_KEY,
    cells_layer_name,
    image_picker,
    image_pixel_size_um,
    image_rgb,
    result_region,
)
from blastscope.widgets._session import CellsSession, session_for
from blastscope.widgets._slide_view import TiledResultView, tiled_result_view

DEMO_TEXT = "⚠ Demonstration model, not for diagnosis (trained on synthetic smears)."


def status_label() -> Label:
    """A line of status text that wraps instead of widening its dock."""
    label = Label(value="")
    label.native.setWordWrap(True)
    return label


def demo_label() -> Label:
    """The loud "not for diagnosis" notice (hidden until a demo bundle is chosen or used)."""
    label = Label(value=DEMO_TEXT)
    label.native.setStyleSheet("color: #ff9800; font-weight: bold;")
    label.native.setWordWrap(True)
    label.visible = False
    return label


def conversion_notices(image: Image) -> list[str]:
    """What the core will convert in this image (a single channel, RGBA, 16 bits, ...), from
    a corner of it (a whole slide is not read)."""
    data = image.data[0] if image.multiscale else image.data
    if image.rgb and data.dtype == np.uint8 and data.shape[-1] == 3:
        return []
    return to_rgb_uint8(np.asarray(data[:256, :256]))[1]


WHOLE_SLIDE_RESULT = (
    "{name} holds a whole slide's cells from a tiled run (blastscope run --tiled), stored on "
    "disk and shown lazily: its threshold slider (Classify blasts) and the Cell inspector work "
    "here. Classify, Predict mutation, overrides, Recompute masks, Edit and Export work on "
    "fields and slide regions: draw a rectangle on the slide (a Shapes layer) and Segment that "
    "region to review it here, or rerun `blastscope run SLIDE --tiled` with other settings (it "
    "redoes every tile); the tiled run's own exports are in its folder."
)


def refuse_whole_slide_result(layer: Labels | None) -> None:
    """Raise with :data:`WHOLE_SLIDE_RESULT` when ``layer`` is a tiled run's multiscale cells."""
    if isinstance(layer, Labels) and layer.multiscale:
        raise ValueError(WHOLE_SLIDE_RESULT.format(name=layer.name))


class SessionDock(Container):
    """A dock working on one image and its cells layer; follows the layer's session."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, *, with_image: bool = True):
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._image = image_picker(napari_viewer) if with_image else None
        self._cells = create_widget(annotation=Labels, label="cells")
        self.session: CellsSession | None = None
        self.slide_view: TiledResultView | None = None
        self.extend([widget for widget in (self._image, self._cells) if widget is not None])
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self._reset_choices)
        napari_viewer.layers.selection.events.active.connect(self._on_active_layer)
        if self._image is not None:
            self._image.changed.connect(self._pick_cells_of_image)
        self._cells.changed.connect(self._follow)

    def _reset_choices(self, event=None) -> None:
        if self._image is not None:
            self._image.reset_choices()
        self._cells.reset_choices()
        if self._cells.value is None:
            self._pick_cells_of_image()
        self._follow()

    def _on_active_layer(self, event=None) -> None:
        """Work on the cells layer the user selects (or Segment cells makes, which napari
        selects); selecting any other kind of layer changes nothing."""
        layer = self._viewer.layers.selection.active
        if not isinstance(layer, Labels) or layer is self._cells.value:
            return
        if layer not in self._cells.choices:
            self._cells.reset_choices()
        self._cells.value = layer
        source = (
            self._viewer.layers[layer.metadata[SOURCE_KEY]] if self._has_source(layer) else None
        )
        if self._image is not None and isinstance(source, Image):
            self._image.value = source

    def _has_source(self, layer: Labels) -> bool:
        return layer.metadata.get(SOURCE_KEY) in self._viewer.layers

    def _pick_cells_of_image(self, *args) -> None:
        image = self.image_layer()
        if image is None:
            return
        name = cells_layer_name(image)
        for layer in self._cells.choices:
            if layer.name == name and self._cells.value is not layer:
                self._cells.value = layer

    def _follow(self, *args) -> None:
        layer = self._cells.value
        view = tiled_result_view(self._viewer, layer)
        whole_slide = view is not None
        session = (
            session_for(self._viewer, layer)
            if isinstance(layer, Labels) and not whole_slide
            else None
        )
        if session is self.session and view is self.slide_view:
            return
        for followed in (self.session, self.slide_view):
            if followed is not None:
                followed.changed.disconnect(self.on_session_changed)
        if self.session is not None:
            self.session.selected.disconnect(self.on_selected)
        if self.slide_view is not None:
            self.slide_view.selected.disconnect(self.on_slide_cell_selected)
        self.session, self.slide_view = session, view
        for followed in (session, view):
            if followed is not None:
                followed.changed.connect(self.on_session_changed)
        if session is not None:
            session.selected.connect(self.on_selected)
        if view is not None:
            view.selected.connect(self.on_slide_cell_selected)
        self.on_session_changed()

    def on_session_changed(self) -> None:
        """The followed session's state changed (override to update the dock)."""

    def on_selected(self, label: int) -> None:
        """A cell was selected in the followed session (override to react)."""

    def on_slide_cell_selected(self, row: int) -> None:
        """A whole slide's cell (its row of ``features``) was clicked (override to react)."""

    def image_layer(self) -> Image | None:
        """The chosen image, else the image the cells layer was made from."""
        if self._image is not None and isinstance(self._image.value, Image):
            return self._image.value
        layer = self._cells.value
        name = layer.metadata.get(SOURCE_KEY) if isinstance(layer, Labels) else None
        if name in self._viewer.layers and isinstance(self._viewer.layers[name], Image):
            return self._viewer.layers[name]
        return None

    def cells_layer(self) -> Labels | None:
        layer = self._cells.value
        return layer if isinstance(layer, Labels) else None

    def inputs(self) -> tuple[Image, Labels]:
        """The image and cells layers to work on; raises with what to do when one is missing."""
        image, cells = self.image_layer(), self.cells_layer()
        refuse_whole_slide_result(cells)
        if image is None:
            raise ValueError("Choose the image layer of the smear (open one with File > Open).")
        if cells is None:
            raise ValueError(
                "Choose a cells layer: segment the image first (Plugins > blastscope > Segment "
                "cells) or open a labels image or a QuPath GeoJSON of the cells."
            )
        hidden = [layer.name for layer in (image, cells) if not layer.visible]
        if hidden and not self.confirm_hidden(hidden):
            raise ValueError(f"Not run: {' and '.join(hidden)} hidden (you chose not to run).")
        for notice in conversion_notices(image):
            show_warning(notice)
        return image, cells

    def confirm_hidden(self, names: list[str]) -> bool:
        """Ask whether to run on layers the user cannot see (a hidden image or cells layer)."""
        answer = QMessageBox.question(
            self.native,
            "Run on a hidden layer?",
            f"{' and '.join(names)} {'is' if len(names) == 1 else 'are'} hidden. Run on "
            f"{'it' if len(names) == 1 else 'them'} anyway?",
        )
        return answer == QMessageBox.StandardButton.Yes

    def current_steps(self, image: Image, cells: Labels) -> tuple[np.ndarray, Steps[SlideResult]]:
        """(pixels, steps) whose result is the cells layer's result, up to date
        (:func:`~blastscope.pipeline.labels_result_steps`, run in the worker)."""
        result = session_for(self._viewer, cells).flush()
        pixels = image_rgb(image, result_region(result))
        labels = np.asarray(cells.data)
        pixel_size = image_pixel_size_um(image) or cells.metadata.get("pixel_size_um")
        if result is not None:
            pixel_size = pixel_size or result.pixel_size_um
        if not pixel_size:
            raise ValueError(
                f"{image.name} has no pixel size: segment it with Segment cells (which records "
                "one) or set metadata['pixel_size_um'] (µm per pixel) on the image layer."
            )
        if labels.ndim != 2 or labels.shape != pixels.shape[:2]:
            raise ValueError(
                f"The cells layer {cells.name} ({labels.shape}) does not match the image "
                f"{image.name} ({pixels.shape[:2]}); choose the labels of this image."
            )
        return pixels, labels_result_steps(result, pixels, labels.copy(), float(pixel_size))

    def require_session(self) -> CellsSession:
        refuse_whole_slide_result(self.cells_layer())
        if self.session is None or self.session.result is None:
            raise ValueError("Choose a cells layer made by blastscope (Segment cells first).")
        return self.session
