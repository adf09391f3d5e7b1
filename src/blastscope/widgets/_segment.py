"""The **Segment cells** dock widget: Cellpose on the chosen image, off the UI thread."""

from __future__ import annotations

from typing import Optional

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    ProgressBar,
    PushButton,
    SpinBox,
    create_widget,
)
from napari.layers import Image, Labels, Shapes
from napari.utils.notifications import show_error, show_info

from blastscope.devices import available_devices
from blastscope.pipeline import recompute_stage, segment_stage
from blastscope.progress import Progress, Steps
from blastscope.result import SlideResult
from blastscope.segment import SegmentationParams, segmenter_choices
from blastscope.widgets._base import status_label
from blastscope.widgets._layers import (
    RESULT_KEY,
    cells_layer_name,
    image_picker,
    image_pixel_size_um,
    image_rgb,
    is_overlay,
    match_world_units,
    result_region,
    shapes_region,
)
from blastscope.widgets._runner import StageRunner
from blastscope.widgets._session import show_result
from blastscope.widgets._settings import PersistentValues


def _segment_region_steps(
    pixels, pixel_size_um: float | None, params: SegmentationParams, region
) -> Steps[SlideResult]:
    """:func:`~blastscope.pipeline.segment_stage` on ``pixels`` (read here, in the worker: a
    region of a slide decodes its tiles), recording the ``region`` (top, left, bottom, right)
    of the image they were cut from (exports use level-0 pixels)."""
    if region is not None:
        yield Progress("reading", 0, 1, "the region's tiles")
    result = yield from segment_stage(np.asarray(pixels), pixel_size_um, params)
    if region is not None:
        top, left, bottom, right = region
        result.provenance["region"] = {
            "x_y_width_height": f"{left},{top},{right - left},{bottom - top}",
            "offset_yx": [top, left],
            "coordinates": "full-resolution pixels of the image",
        }
    return result


class SegmentWidget(Container):
    """Segment every cell of an image; the result is a Labels layer with the cells table."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__(labels=True)
        self._viewer = napari_viewer
        defaults = SegmentationParams()
        self._image = image_picker(napari_viewer)
        self._region = create_widget(
            annotation=Optional[Shapes],  # noqa: UP045 (magicgui reads Optional, not X | None)
            label="region",
            options={
                "tooltip": "A Shapes layer: its last rectangle is the part of the image to "
                "segment (needed for whole slides); none: the whole image."
            },
        )
        models = segmenter_choices()
        self._model = ComboBox(
            label="model",
            choices=models,
            value=defaults.model if defaults.model in models else models[0],
            tooltip="A shipped model, or a Cellpose model name (downloaded on first use).",
        )
        self._model_file = FileEdit(
            label="or model file",
            mode="r",
            tooltip="A Cellpose model file or a blastscope bundle; overrides the model above.",
        )
        self._pixel_size = FloatSpinBox(
            label="pixel size (µm)",
            min=0.0,
            max=10.0,
            step=0.01,
            value=0.0,
            tooltip="µm per pixel; 0 = from the image's metadata, else the model's default.",
        )
        self._pixel_source = status_label()
        self._pixel_size.changed.connect(self._show_pixel_size)
        self._estimate = CheckBox(
            text="estimate diameter",
            value=True,
            tooltip="Automatic diameter: from the pixel size and the model's cell size in µm "
            "when both are known, else estimated from a first pass on the image.",
        )
        self._diameter = FloatSpinBox(
            label="diameter (px)",
            min=1.0,
            max=1000.0,
            step=1.0,
            value=60.0,
            tooltip="Typical cell diameter in pixels (used when the estimate is off).",
        )
        self._flow_threshold = FloatSpinBox(
            label="flow threshold", min=0.0, max=3.0, step=0.05, value=defaults.flow_threshold
        )
        self._cellprob_threshold = FloatSpinBox(
            label="cell prob. threshold",
            min=-6.0,
            max=6.0,
            step=0.25,
            value=defaults.cellprob_threshold,
        )
        self._device = ComboBox(label="device", choices=["auto", *available_devices()])
        self._tile_size = SpinBox(
            label="tile size (px)", min=256, max=16384, step=256, value=defaults.tile_size
        )
        self.run_button = PushButton(text="Segment")
        self._recompute_button = PushButton(
            text="Recompute masks",
            tooltip="Apply the thresholds to the stored network outputs (no network run).",
        )
        self.cancel_button = PushButton(text="Cancel")
        self._bar = ProgressBar(label="progress")
        self._status = status_label()
        self.extend(
            [
                self._image,
                self._region,
                self._model,
                self._model_file,
                self._pixel_size,
                self._pixel_source,
                self._estimate,
                self._diameter,
                self._flow_threshold,
                self._cellprob_threshold,
                self._device,
                self._tile_size,
                self.run_button,
                self._recompute_button,
                self.cancel_button,
                self._bar,
                self._status,
            ]
        )
        self.runner = StageRunner(
            self.run_button, self.cancel_button, self._bar, also_disable=[self._recompute_button]
        )
        self._estimate.changed.connect(self._estimate_changed)
        self.settings = PersistentValues(
            "segment",
            {
                "model": self._model,
                "model_file": self._model_file,
                "estimate_diameter": self._estimate,
                "diameter": self._diameter,
                "flow_threshold": self._flow_threshold,
                "cellprob_threshold": self._cellprob_threshold,
                "device": self._device,
                "tile_size": self._tile_size,
            },
        )
        self._estimate_changed()
        self.run_button.changed.connect(self.run)
        self._recompute_button.changed.connect(self.recompute)
        for event in (self._viewer.layers.events.inserted, self._viewer.layers.events.removed):
            event.connect(self._image.reset_choices)
            event.connect(self._region.reset_choices)
        self._viewer.layers.events.inserted.connect(
            lambda event: match_world_units(self._viewer, event.value)
        )
        self._viewer.layers.selection.events.active.connect(self._on_active_layer)
        self._image.changed.connect(self._show_pixel_size)
        self._show_pixel_size()

    def _on_active_layer(self, event=None) -> None:
        """Segment the image the user selects (selecting another kind of layer changes
        nothing)."""
        layer = self._viewer.layers.selection.active
        if isinstance(layer, Image) and not is_overlay(layer) and layer is not self._image.value:
            self._image.reset_choices()
            self._image.value = layer

    def _show_pixel_size(self, *args) -> None:
        """The pixel size a run will use and where it comes from, kept visible."""
        size, origin = self._pixel_size_and_origin(self._image.value)
        if size:
            text = f"pixel size {size:g} µm ({origin})"
        else:
            text = "pixel size unknown: estimated from the cell size (set it above if known)"
        self._pixel_source.value = text

    def _pixel_size_and_origin(self, image_layer: Image | None) -> tuple[float | None, str]:
        """The pixel size a run of ``image_layer`` is given (None: none) and where it is from."""
        if self._pixel_size.value:
            return self._pixel_size.value, "given here"
        from_layer = image_pixel_size_um(image_layer) if isinstance(image_layer, Image) else None
        return from_layer, "from the image"

    def params(self) -> SegmentationParams:
        """The segmentation parameters set in the widget."""
        model_file = self._model_file.value
        model = str(model_file) if model_file and model_file.is_file() else self._model.value
        return SegmentationParams(
            model=model,
            diameter=None if self._estimate.value else self._diameter.value,
            flow_threshold=self._flow_threshold.value,
            cellprob_threshold=self._cellprob_threshold.value,
            device=self._device.value,
            tile_size=self._tile_size.value,
        )

    def _estimate_changed(self, *args) -> None:
        self._diameter.enabled = not self._estimate.value

    def run(self) -> None:
        """Segment the chosen image in a worker thread."""
        image_layer: Image | None = self._image.value
        if image_layer is None:
            show_error("Choose an image layer to segment (open one with File > Open).")
            return
        pixel_size, origin = self._pixel_size_and_origin(image_layer)
        try:
            shapes = self._region.value
            match_world_units(self._viewer, shapes)
            region = shapes_region(shapes, image_layer) if isinstance(shapes, Shapes) else None
            pixels = image_rgb(image_layer, region, read=False)
        except ValueError as error:
            show_error(str(error))
            return
        steps = _segment_region_steps(pixels, pixel_size, self.params(), region)
        self.runner.start(
            steps,
            lambda result: self._show(image_layer, result, origin),
            description=f"Segmenting {image_layer.name}",
        )

    def recompute(self) -> None:
        """Re-derive masks from the stored network outputs with the current thresholds."""
        image_layer: Image | None = self._image.value
        name = None if image_layer is None else cells_layer_name(image_layer)
        layer = self._viewer.layers[name] if name in self._viewer.layers else None  # noqa: SIM401
        if not isinstance(layer, Labels) or RESULT_KEY not in layer.metadata:
            if image_layer is not None and image_layer.multiscale:
                show_error(
                    "Recompute masks reuses a run's stored network outputs; a whole slide's "
                    "tiled run keeps none (for memory). Segment a rectangle of the slide and "
                    "recompute that, or rerun `blastscope run SLIDE --tiled`."
                )
                return
            show_error("Segment the image first: there are no stored network outputs to reuse.")
            return
        result = layer.metadata[RESULT_KEY]
        try:
            pixels = image_rgb(image_layer, result_region(result))
        except ValueError as error:
            show_error(str(error))
            return
        steps = recompute_stage(
            pixels,
            result,
            flow_threshold=self._flow_threshold.value,
            cellprob_threshold=self._cellprob_threshold.value,
        )
        self.runner.start(
            steps,
            lambda result: self._show(
                image_layer, result, self._pixel_size_and_origin(image_layer)[1]
            ),
            description=f"Recomputing masks of {image_layer.name}",
        )

    def _show(self, image_layer: Image, result: SlideResult, origin: str = "given") -> None:
        """Show ``result``; ``origin`` says where a pixel size the run was given came from."""
        show_result(self._viewer, image_layer, result)
        for notice in result.notices:
            show_info(notice)
        source = result.provenance.get("segmentation", {}).get("model", {})
        source = source.get("pixel_size_source", "given")
        if source == "given":
            source = origin
        self._status.value = (
            f"{result.n_cells} cells, {result.n_nucleated} nucleated, "
            f"{result.pixel_size_um:g} µm/px ({source})"
        )
        self._pixel_source.value = f"pixel size {result.pixel_size_um:g} µm ({source})"
