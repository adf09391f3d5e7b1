"""Whole slides in napari: pyramidal TIFF, OME-TIFF and Aperio SVS open as a lazy multiscale
image (the pyramid's levels as dask arrays; only the tiles in view are decoded), placed in µm."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from napari.types import LayerDataTuple
from napari.utils.notifications import show_error, show_warning

from blastscope.slide import SLIDE_SUFFIXES, SlideError, open_slide


def get_slide_reader(path: str | list[str]) -> Callable[[str | list[str]], list] | None:
    """The reader of one pyramidal slide file (an SVS, or a TIFF with several levels)."""
    if not isinstance(path, str) or not path.lower().endswith(SLIDE_SUFFIXES):
        return None
    if path.lower().endswith(".svs"):
        return read_slide_layers
    try:
        with open_slide(path) as slide:
            pyramidal = len(slide.levels) > 1
    except SlideError:
        return None  # not a slide we can read: napari's own TIFF reader may
    return read_slide_layers if pyramidal else None


def read_slide_layers(path: str | list[str]) -> list[LayerDataTuple]:
    """The slide as one multiscale RGB image layer, scaled to µm when the file says its pixel
    size; nothing (the reason as an error notification) when it cannot be read."""
    path = Path(path if isinstance(path, str) else path[0])
    try:
        slide = open_slide(path)  # stays open: the layer reads its tiles on demand
    except SlideError as error:
        show_error(str(error))
        return []
    for notice in slide.notices:
        show_warning(notice)
    options = {
        "name": path.name.split(".")[0],
        "rgb": slide.levels[0].shape[-1] in (3, 4),
        "multiscale": True,
        "metadata": {"slide_path": str(path), "level_shapes": [lv.shape for lv in slide.levels]},
    }
    if slide.pixel_size_um is not None:
        options["scale"] = (slide.pixel_size_um, slide.pixel_size_um)
        options["units"] = ("um", "um")
        options["metadata"]["pixel_size_um"] = slide.pixel_size_um
    return [(slide.levels, options, "image")]
