"""The **Cell inspector** dock: the clicked cell's crop (what the blast model sees, enlarged) and
probabilities, overrides of its blast call (buttons and keys on the cells layer), and the cells
table as a view of the layer's ``features`` whose rows select cells and vice versa."""

from __future__ import annotations

import math

import napari
import numpy as np
import pandas as pd
from magicgui.widgets import Container, PushButton
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QLabel

from blastscope.crops import background_fill, cell_crop
from blastscope.io import to_rgb_uint8
from blastscope.models.classifier import DEFAULT_CROP_PIXEL_SIZE_UM, DEFAULT_WINDOW_UM
from blastscope.widgets._base import SessionDock
from blastscope.widgets._layers import image_rgb, result_region, viewer_camera
from blastscope.widgets._panels import FeaturesTable, bold_label, rgb_pixmap
from blastscope.widgets._session import NEXT_KEY, OVERRIDE_KEYS, UNDO_KEY

CROP_SIDE_PX = 192
WHOLE_SLIDE_OVERRIDES = (
    "{name} holds a whole slide's cells from a tiled run: overrides and the review queue work "
    "on fields and slide regions. Draw a rectangle on the slide (a Shapes layer) and Segment "
    "that region to review its cells here."
)
KEY_OF = {value: key for key, value in OVERRIDE_KEYS.items()}


def describe_cell(row, classes: tuple[str, ...]) -> str:
    """A few lines about one row of the cells table (a ``features`` row)."""
    lines = [f"Cell {int(row['label'])} · {row['diameter_um']:.1f} µm across"]
    if not bool(row.get("is_nucleated", False)):
        lines.append("not nucleated (red cell or platelet): not classified")
    if "p_blast" in row and math.isfinite(row["p_blast"]):
        model = "blast" if bool(row["blast_call"]) else "non-blast"
        line = f"p_blast {row['p_blast']:.3f} · model: {model}"
        override = row.get("blast_override", pd.NA)
        if not pd.isna(override):
            line += f" · your call: {'blast' if bool(override) else 'non-blast'}"
        lines.append(line)
    probabilities = [
        (name, row[f"p_{name}"])
        for name in classes
        if f"p_{name}" in row and math.isfinite(row[f"p_{name}"])
    ]
    if probabilities and not bool(row.get("is_blast", False)):
        lines.append("not a blast at this threshold: no mutation call")
        probabilities = []
    if probabilities:
        lines.append(" · ".join(f"{name} {value:.2f}" for name, value in probabilities))
    return "\n".join(lines)


class InspectorWidget(SessionDock):
    """Inspect and override cells of the chosen cells layer."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(napari_viewer, with_image=False)
        self.mark_blast = PushButton(text=f"Mark blast ({KEY_OF[True]})")
        self.mark_non_blast = PushButton(text=f"Mark non-blast ({KEY_OF[False]})")
        self.clear_mark = PushButton(text=f"Back to the model's call ({KEY_OF[None]})")
        self.undo = PushButton(text=f"Undo override ({UNDO_KEY})")
        buttons = Container(
            layout="horizontal", widgets=[self.mark_blast, self.mark_non_blast], labels=False
        )
        more = Container(layout="horizontal", widgets=[self.clear_mark, self.undo], labels=False)
        self.next_uncertain = PushButton(
            text=f"Next uncertain cell ({NEXT_KEY})",
            tooltip="The next cell you have not called, nearest the blast threshold first.",
        )
        self.extend([buttons, more, self.next_uncertain])
        self.crop = QLabel()
        self.crop.setFixedSize(CROP_SIDE_PX, CROP_SIDE_PX)
        self.info = bold_label("Click a cell (pan/zoom mode) or a row of the table.", 9)
        self._fill: tuple[np.ndarray, np.ndarray] | None = None
        self.table = FeaturesTable(self._row_selected, default_sort="p_blast")
        for widget in (self.crop, self.info, self.table):
            self.native.layout().addWidget(widget)
        self.mark_blast.changed.connect(lambda: self._override(True))
        self.mark_non_blast.changed.connect(lambda: self._override(False))
        self.clear_mark.changed.connect(lambda: self._override(None))
        self.undo.changed.connect(self._undo)
        self.next_uncertain.changed.connect(self._next_uncertain)
        self._follow()

    def _override(self, value: bool | None) -> None:
        if self.slide_view is not None:
            show_error(WHOLE_SLIDE_OVERRIDES.format(name=self.slide_view.layer.name))
            return
        session = self.session
        if session is None or session.selected_label <= 0:
            show_error("Select a cell first: click it in pan/zoom mode or pick a table row.")
            return
        try:
            session.set_override(session.selected_label, value)
        except ValueError as error:
            show_error(str(error))

    def _undo(self) -> None:
        if self.session is not None:
            self.session.undo_override()

    def _next_uncertain(self) -> None:
        if self.slide_view is not None:
            show_error(WHOLE_SLIDE_OVERRIDES.format(name=self.slide_view.layer.name))
            return
        session = self.session
        if session is None or not session.classified:
            show_error("Classify blasts first: the queue orders cells by their blast probability.")
            return
        label = session.review.next_uncertain(session.selected_label)
        if label is None:
            show_info("No uncertain cell left: you have called every classified cell.")
            return
        session.go_to(label)

    def _row_selected(self, row: int) -> None:
        view = self.slide_view
        if view is not None:
            view.select(int(view.layer.features["label"].iloc[row]))
            viewer_camera(self._viewer).center = view.world_position(row)
            return
        session = self.session
        if session is not None:
            session.go_to(int(session.layer.features["index"].iloc[row]))

    def on_selected(self, label: int) -> None:
        session = self.session
        row = session.row_of(label) if session is not None else None
        self.table.select_frame_row(row)
        self._show_cell(row)

    def on_slide_cell_selected(self, row: int) -> None:
        view = self.slide_view
        self.table.select_frame_row(row)
        self.info.setText(
            describe_cell(view.layer.features.iloc[row], view.classes)
            + "\n(whole slide: no crop; segment a region to see it as the model does)"
        )
        self.crop.clear()

    def on_session_changed(self) -> None:
        view = self.slide_view
        if view is not None:
            if self.table.model_.frame is not view.layer.features:
                self.table.set_frame(view.layer.features)
            else:
                self.table.model_.refresh_values()
            if view.selected_row is not None:
                self.on_slide_cell_selected(view.selected_row)
            return
        session = self.session
        if session is None:
            self.table.set_frame(self.table.model_.frame.iloc[0:0])
            return
        features = session.layer.features
        if self.table.model_.frame is not features:
            self.table.set_frame(features)
        else:
            self.table.model_.refresh_values()
        if session.selected_label > 0:
            row = session.row_of(session.selected_label)
            self.table.select_frame_row(row)
            self._show_cell(row, crop=False)

    def _show_cell(self, row: int | None, crop: bool = True) -> None:
        session = self.session
        if session is None or row is None:
            self.info.setText("Click a cell (pan/zoom mode) or a row of the table.")
            self.crop.clear()
            return
        features = session.layer.features
        self.info.setText(describe_cell(features.iloc[row], session.classes))
        if crop:
            self.crop.setPixmap(rgb_pixmap(self.cell_crop(row), CROP_SIDE_PX))

    def cell_crop(self, row: int) -> np.ndarray:
        """The crop the blast model sees for the cell of ``row`` (h, w, 3) uint8; without a
        blast model yet, a 24 µm window at 0.5 µm per pixel. Only the cell's neighbourhood is
        read; the fill colour is the field's background, computed once per result."""
        session = self.session
        result = session.result
        image = image_rgb(self.image_layer(), result_region(result))
        classifier = session.blast_classifier
        if self._fill is None or self._fill[0] is not result.labels:
            self._fill = (result.labels, background_fill(to_rgb_uint8(image)[0], result.labels))
        cells = result.cells
        return cell_crop(
            image,
            cells[["centroid_y", "centroid_x"]].to_numpy()[row],
            pixel_size_um=result.pixel_size_um,
            window_um=classifier.input.window_um if classifier else DEFAULT_WINDOW_UM,
            out_pixel_size_um=(
                classifier.input.pixel_size_um if classifier else DEFAULT_CROP_PIXEL_SIZE_UM
            ),
            labels=result.labels,
            cell_label=int(cells["label"].iloc[row]),
            mask_to_cell=bool(classifier.input.mask_to_cell) if classifier else False,
            fill=self._fill[1],
        )
