"""Whole slides in napari: pyramidal TIFF, OME-TIFF, Aperio SVS, NDPI and OpenSlide formats open
as a lazy multiscale image (the pyramid's levels as dask arrays; only the tiles in view are
decoded), placed in µm; the folder of a tiled run opens as lazy multiscale labels over it, with
the fields' colour and threshold-veil overlays built chunk by chunk as they come into view, or,
run with ``--no-labels``, as points at its nucleated cells' centres."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from napari.types import LayerDataTuple
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_error, show_info, show_warning

from blastscope.calls import override_codes
from blastscope.export.tables import read_cells_table
from blastscope.palette import p_blast_rgb
from blastscope.slide import SLIDE_SUFFIXES, SlideError, open_slide
from blastscope.wholeslide import LABELS_NAME
from blastscope.widgets._colours import (
    p_blast_colormap,
    per_pixel,
    veil_colormap,
    veil_limits,
    veil_values,
)
from blastscope.widgets._layers import OVERLAY_KEY, layer_features
from blastscope.widgets._session import CELL_OPACITY
from blastscope.widgets._slide_view import SLIDE_RECORD_KEY, VEIL_SUFFIX


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
    ``cells/``; ``labels.zarr`` unless run with ``--no-labels``), else None."""
    if not isinstance(path, str):
        return None
    folder = Path(path)
    if not (folder / "slide.json").is_file() or not (folder / "cells").is_dir():
        return None
    return read_tiled_result_layers


def read_tiled_result_layers(path: str | list[str]) -> list[LayerDataTuple]:
    """The tiled run's cells as a lazy multiscale labels layer over the slide (µm, level-0
    placement), with every tile's cells table as its features; a run made with ``--no-labels``
    as points (:func:`_cell_points`)."""
    import dask.array as da
    import zarr

    folder = Path(path if isinstance(path, str) else path[0])
    labelled = (folder / LABELS_NAME).is_dir()
    try:
        record = json.loads((folder / "slide.json").read_text(encoding="utf-8"))
        levels = []
        if labelled:
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
    name = f"{folder.name} cells"
    if not labelled:
        return [_cell_points(table, folder.name, size)]
    placement = {
        "scale": (size, size),
        "translate": (top * size, left * size),
        "units": ("um", "um"),
    }
    options = {
        "name": name,
        "multiscale": True,
        **placement,
        "features": layer_features(table) if len(table) else None,
        "metadata": {"pixel_size_um": size, SLIDE_RECORD_KEY: record},
    }
    layers = [(levels, options, "labels")]
    if "p_blast" in table and table["p_blast"].notna().any():
        # the overlays colour the cells; the labels stay on top, clear, for hovering (napari
        # cannot be told to draw a reader's labels as outlines)
        options["colormap"] = DirectLabelColormap(color_dict={None: (0, 0, 0, 0)})
        layers = [*_lazy_overlays(levels, table, record, name, placement), *layers]
    return layers


def _cell_points(table: pd.DataFrame, folder_name: str, size: float) -> LayerDataTuple:
    """A ``--no-labels`` run's nucleated cells as points at their centres (level-0 pixels,
    scaled to µm), each as wide as its cell and coloured by p_blast (grey where unclassified),
    the cells table as features; a notification says why and how to see the cells."""
    cells = table[table["is_nucleated"]] if len(table) else table
    show_info(
        f"{folder_name} was run with --no-labels: it holds the cells table and "
        f"the call but no cell outlines, so its {len(cells)} nucleated cells show as points at "
        "their centres. Rerun `blastscope run SLIDE --tiled` without --no-labels to see the "
        "cells themselves."
    )
    options = {
        "name": f"{folder_name} cells",
        "scale": (size, size),
        "units": ("um", "um"),
        "metadata": {"pixel_size_um": size},
    }
    if not len(cells):
        return np.empty((0, 2)), options, "points"
    p_blast = cells.get("p_blast", pd.Series(np.nan, index=cells.index))  # no blast model
    options["size"] = cells["diameter_um"].to_numpy() / size
    options["face_color"] = p_blast_rgb(p_blast.to_numpy()) / 255
    options["features"] = layer_features(cells)
    return cells[["centroid_y", "centroid_x"]].to_numpy(), options, "points"


def _lazy_overlays(levels, table: pd.DataFrame, record: dict, name: str, placement: dict):
    """The field's colour and threshold-veil overlays of a tiled run, built chunk by chunk as
    napari shows them (dask), at the run's threshold: p_blast in viridis, cells below the
    threshold dimmed."""
    ids = table["label"].to_numpy(np.int64)
    p_blast = table["p_blast"].to_numpy(np.float32)
    override = override_codes(table.get("blast_override"), len(table))
    veil = veil_values(p_blast, override)
    threshold = record["settings"].get("blast_threshold")

    def lazily(values):
        return [
            level.map_blocks(per_pixel, ids, values, dtype=np.float32, meta=np.empty((0, 0)))
            for level in levels
        ]

    style = {"multiscale": True, "interpolation2d": "nearest", "blending": "translucent"}
    base = name.removesuffix(" cells")
    colours = {
        **style,
        **placement,
        "name": f"{base} cell colours",
        "colormap": p_blast_colormap(),
        "contrast_limits": (0.0, 1.0),
        "opacity": CELL_OPACITY,
        "metadata": {OVERLAY_KEY: True},
    }
    dimmed = {
        **style,
        **placement,
        "name": f"{base}{VEIL_SUFFIX}",
        "colormap": veil_colormap(),
        "contrast_limits": veil_limits(threshold or 0.0),
        "metadata": {OVERLAY_KEY: True},
    }
    layers = [(lazily(p_blast), colours, "image")]
    if threshold is not None:  # (runs before 2026-12-02 did not record the threshold used)
        layers.append((lazily(veil), dimmed, "image"))
    return layers
