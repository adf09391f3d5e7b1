"""The **Export** dock: the chosen cells layer's result, with the user's overrides and the
current threshold, written by :func:`blastscope.export.export_result`; shows the paths."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    LineEdit,
    ProgressBar,
    PushButton,
)
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt

from blastscope.export import ALL_FORMATS, DEFAULT_FORMATS, export_paths, export_result
from blastscope.export.geojson_writer import GEOJSON_SHAPES
from blastscope.io import to_rgb_uint8
from blastscope.progress import Progress, Steps
from blastscope.result import SlideResult
from blastscope.review import Review, save_review
from blastscope.widgets._base import SessionDock
from blastscope.widgets._io import NAPARI_KEY, layer_placement
from blastscope.widgets._layers import image_rgb, result_region
from blastscope.widgets._panels import bold_label
from blastscope.widgets._review_io import REVIEW_SUFFIX
from blastscope.widgets._runner import StageRunner
from blastscope.widgets._settings import PersistentValues

FORMAT_LABELS = {
    "geojson": "QuPath GeoJSON",
    "csv": "cells table (CSV)",
    "parquet": "cells table (Parquet)",
    "labels": "labels OME-TIFF",
    "overlay": "overlay PNG",
    "report": "HTML report",
}


def file_stem(name: str) -> str:
    """A file-name stem made from a layer name (letters, digits, ``-`` and ``_``)."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")
    return stem or "blastscope"


def export_steps(
    result: SlideResult,
    image: np.ndarray,
    out_dir: Path,
    *,
    stem: str,
    formats: list[str],
    overwrite: bool,
    include_non_nucleated: bool,
    geojson_metadata: Mapping[str, Any] | None = None,
    geojson_shapes: str = "outline",
) -> Steps[list[Path]]:
    """:func:`export_result` as a one-step stage (so it runs in the dock's worker)."""
    yield Progress("export", 0, 1, f"writing {', '.join(formats)}")
    rgb, _ = to_rgb_uint8(image)
    paths = export_result(
        result,
        rgb,
        out_dir,
        stem=stem,
        formats=formats,
        overwrite=overwrite,
        include_non_nucleated=include_non_nucleated,
        geojson_metadata=geojson_metadata,
        geojson_shapes=geojson_shapes,
    )
    yield Progress("export", 1, 1, f"{len(paths)} files")
    return paths


def _save_review_steps(review: Review, target: Path, **options) -> Steps[Path]:
    yield Progress("save review", 0, 1, target.name)
    path = save_review(review, target, **options)
    yield Progress("save review", 1, 1, target.name)
    return path


class ExportWidget(SessionDock):
    """Export the chosen cells layer's result in the chosen formats to a folder."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(napari_viewer, with_image=False)
        self.folder = FileEdit(label="folder", mode="d", tooltip="Where the files go.")
        self.stem = LineEdit(label="file name", tooltip="Files are named <file name>_cells.csv …")
        self.formats = {
            name: CheckBox(text=FORMAT_LABELS[name], value=name in DEFAULT_FORMATS)
            for name in ALL_FORMATS
        }
        self.overwrite = CheckBox(text="replace existing files", value=False)
        self.include_non_nucleated = CheckBox(
            text="red cells and platelets in the GeoJSON too", value=False
        )
        self.geojson_shapes = ComboBox(
            label="GeoJSON cells as",
            choices=GEOJSON_SHAPES,
            value="outline",
            tooltip="outline: QuPath draws, measures and reopens each cell; simplified: about "
            "half the bytes, within 1 pixel; centroid: a point per cell with its measurements.",
        )
        self.run_button = PushButton(text="Export")
        self.save_review_button = PushButton(
            text="Save review",
            tooltip="Save the cells, threshold, overrides and their audit to <file name>.review "
            "in the folder; reopen it with File > Open Folder.",
        )
        self.cancel_button = PushButton(text="Cancel")
        self._bar = ProgressBar(label="progress")
        boxes = Container(widgets=list(self.formats.values()), labels=False, label="formats")
        self.extend(
            [
                self.folder,
                self.stem,
                boxes,
                self.overwrite,
                self.include_non_nucleated,
                self.geojson_shapes,
                self.run_button,
                self.save_review_button,
                self.cancel_button,
                self._bar,
            ]
        )
        self.written = bold_label("", 9)
        self.written.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.native.layout().addWidget(self.written)
        self.runner = StageRunner(
            self.run_button, self.cancel_button, self._bar, also_disable=[self.save_review_button]
        )
        self.run_button.changed.connect(self.run)
        self.save_review_button.changed.connect(self.save_review)
        self.paths: list[Path] = []
        self.settings = PersistentValues(
            "export",
            {
                "folder": self.folder,
                **{f"format_{name}": box for name, box in self.formats.items()},
                "include_non_nucleated": self.include_non_nucleated,
                "geojson_shapes": self.geojson_shapes,
            },
        )
        self._follow()

    def chosen_formats(self) -> list[str]:
        return [name for name, box in self.formats.items() if box.value]

    def on_session_changed(self) -> None:
        layer = self.cells_layer()
        image = self.image_layer()
        if layer is not None and not self.stem.value:
            self.stem.value = file_stem(image.name if image is not None else layer.name)

    def run(self) -> None:
        """Write the exports in a worker thread."""
        try:
            session = self.require_session()
            image = self.image_layer()
            if image is None:
                raise ValueError("Open the image of these cells again: the exports need it.")
            folder = self.folder.value
            if not folder or str(folder) in ("", "."):
                raise ValueError("Choose the folder to export to.")
            formats = self.chosen_formats()
            if not formats:
                raise ValueError("Tick at least one format to export.")
            stem = self.stem.value or file_stem(image.name)
            targets = export_paths(folder, stem)
            existing = [targets[name] for name in (*formats, "run") if targets[name].exists()]
            if existing and not self.overwrite.value:
                raise ValueError(
                    f"{existing[0]} already exists: tick 'replace existing files', or choose "
                    "another folder or file name."
                )
            result = session.flush()
            layer = session.layer
        except ValueError as error:
            show_error(str(error))
            return
        steps = export_steps(
            result,
            image_rgb(image, result_region(result)),
            Path(folder),
            stem=stem,
            formats=formats,
            overwrite=self.overwrite.value,
            include_non_nucleated=self.include_non_nucleated.value,
            geojson_shapes=self.geojson_shapes.value,
            # where the cells layer lies in the viewer, so the GeoJSON reopens over the image
            geojson_metadata={NAPARI_KEY: layer_placement(layer.scale, layer.translate)},
        )
        self.runner.start(steps, self._done, description=f"Exporting {image.name}")

    def save_review(self) -> None:
        """Save the review of the chosen cells layer to ``<folder>/<file name>.review``."""
        try:
            session = self.require_session()
            if not self.folder.value or str(self.folder.value) in ("", "."):
                raise ValueError("Choose the folder to save the review in.")
            image = self.image_layer()
            stem = self.stem.value or file_stem(image.name if image is not None else "cells")
            target = Path(self.folder.value) / f"{stem}{REVIEW_SUFFIX}"
            if target.exists() and not self.overwrite.value:
                raise ValueError(
                    f"{target} already exists: tick 'replace existing files', or choose another "
                    "folder or file name."
                )
            layer = session.layer
            viewer = {
                "image_name": image.name if image is not None else layer.name,
                "scale": [float(value) for value in layer.scale],
                "translate": [float(value) for value in layer.translate],
            }
        except ValueError as error:
            show_error(str(error))
            return
        steps = _save_review_steps(
            session.review.snapshot(), target, overwrite=self.overwrite.value, viewer=viewer
        )
        self.runner.start(steps, lambda path: self._done([path]), f"Saving the review {stem}")

    def _done(self, paths: list[Path]) -> None:
        self.paths = list(paths)
        self.written.setText("Written:\n" + "\n".join(str(path) for path in self.paths))
        show_info(f"blastscope: {len(self.paths)} files written to {self.paths[0].parent}")
