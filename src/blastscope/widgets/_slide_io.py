"""Whole slides in napari: pyramidal TIFF, OME-TIFF and Aperio SVS open as a lazy multiscale
image (the pyramid's levels as dask arrays; only the tiles in view are decoded), placed in µm;
the folder of a tiled run opens as a lazy multiscale labels layer over it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from napari.types import LayerDataTuple
from napari.utils.notifications import show_error, show_warning

from blastscope.export.tables import read_cells_table
from blastscope.slide import SLIDE_SUFFIXES, SlideError, open_slide
from blastscope.wholeslide import LABELS_NAME
from blastscope.widgets._layers import layer_features


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


def get_tiled_result_reader(path: str | list[str]) -> Callable[[str | list[str]], list] | None:
    """The reader of a folder written by ``blastscope run --tiled`` (``slide.json`` and
    ``labels.zarr``), else None."""
    if not isinstance(path, str):
        return None
    folder = Path(path)
    if not (folder / "slide.json").is_file() or not (folder / LABELS_NAME).is_dir():
        return None
    return read_tiled_result_layers


def read_tiled_result_layers(path: str | list[str]) -> list[LayerDataTuple]:
    """The tiled run's cells as a lazy multiscale labels layer over the slide (µm, level-0
    placement), with every tile's cells table as its features."""
    import dask.array as da
    import zarr

    folder = Path(path if isinstance(path, str) else path[0])
    try:
        record = json.loads((folder / "slide.json").read_text(encoding="utf-8"))
        group = zarr.open_group(str(folder / LABELS_NAME), mode="r")
        levels = [da.from_zarr(group[str(index)]) for index in range(record["labels_levels"])]
        cells = [read_cells_table(table)[0] for table in sorted(folder.glob("cells/tile_*.csv"))]
        size = float(record["pixel_size_um"])
        top, left = record["offset_yx"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        show_error(f"Could not open the tiled result in {folder} ({error}); run it again.")
        return []
    tables = [table for table in cells if len(table)]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    options = {
        "name": f"{folder.name} cells",
        "multiscale": True,
        "scale": (size, size),
        "translate": (top * size, left * size),
        "units": ("um", "um"),
        "features": layer_features(table) if len(table) else None,
        "metadata": {"pixel_size_um": size, "slide_record": record},
    }
    return [(levels, options, "labels")]
