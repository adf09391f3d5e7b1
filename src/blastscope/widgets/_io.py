"""npe2 reader for QuPath GeoJSON and writers for Labels layers (GeoJSON, CSV, Parquet).

Thin wrappers over :mod:`blastscope.export`: the writers take the cells table from the layer's
``features`` (its ``index`` column is the label id), so edits made in the viewer (e.g. a
``blast_override``) are what gets written, and the pixel size, slide call and provenance from the
layer's metadata (or the SlideResult kept there). napari asks before replacing an existing file
in its save dialog, so these writers replace files. The GeoJSON writer exports every cell (red
cells too) and the layer's scale and translate (as the Export dock does), so that napari -> file
-> napari gives the same layer back, over its image. A file without them (written by the CLI or
QuPath) opens in image pixels (scale 1), and the reader says which pixel size the file holds;
one of a region of a whole slide (``blastscope run SLIDE --roi``) opens in µm at the region's
place over the slide, as blastscope shows slides.

A file the reader cannot use (malformed, empty, only points or lines) opens nothing: the reader
shows the :class:`~blastscope.export.GeoJSONError`'s message as a napari error notification and
returns napari's "no layers" value, so no traceback reaches the event loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from napari.types import LayerDataTuple
from napari.utils.notifications import show_error, show_info, show_warning

from blastscope.export import GeoJSONError, read_geojson, write_cells_table, write_geojson
from blastscope.widgets._layers import RESULT_KEY, layer_features

GEOJSON_SUFFIX = ".geojson"
NAPARI_KEY = "napari"
NO_LAYERS: list = [(None,)]
"""What a napari reader returns when it read the file and opens no layer."""


def get_geojson_reader(path: str | list[str]) -> Callable[[str | list[str]], list] | None:
    """The reader of ``*.geojson`` files (one or several), else None."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(str(item).lower().endswith(GEOJSON_SUFFIX) for item in paths):
        return None
    return read_geojson_layers


def read_geojson_layers(path: str | list[str]) -> list[LayerDataTuple]:
    """One Labels layer per GeoJSON file: the rasterised objects with the cells table as
    ``features`` and the file's metadata (pixel size, slide call, provenance) as metadata.

    A file that cannot be read is left out, its reason shown as an error notification; when
    none can be, returns :data:`NO_LAYERS`.
    """
    paths = [path] if isinstance(path, str) else list(path)
    layers = []
    for item in paths:
        try:
            layers.append(_labels_layer(Path(item)))
        except GeoJSONError as error:
            show_error(str(error))
    return layers or NO_LAYERS


def _labels_layer(path: Path) -> LayerDataTuple:
    labels, cells, metadata = read_geojson(path)
    for notice in metadata.get("notices", []):
        show_warning(notice)
    placement = _recorded_placement(metadata.get(NAPARI_KEY), path.name)
    attributes: dict[str, Any] = {
        "name": path.stem,
        "features": layer_features(cells),
        "metadata": {
            "pixel_size_um": metadata.get("pixel_size_um"),
            "provenance": metadata.get("provenance") or {},
            "slide_call": metadata.get("slide_call"),
            "source_file": str(path),
            "geojson": metadata,
        },
    }
    pixel_size_um = metadata.get("pixel_size_um")
    top, left = metadata.get("offset_yx") or (0, 0)
    if "scale" not in placement and pixel_size_um and (top or left):
        # a region of a whole slide, which blastscope shows in µm: the cells go over it
        placement = {
            "scale": (pixel_size_um, pixel_size_um),
            "translate": (top * pixel_size_um, left * pixel_size_um),
        }
    attributes.update(placement)
    if "scale" not in placement and pixel_size_um:
        show_info(
            f"{path.name} holds {pixel_size_um:g} µm per pixel but not the scale its image had "
            "in napari: the cells open in image pixels (scale 1). If the image is shown in µm, "
            f"set this layer's scale to ({pixel_size_um:g}, {pixel_size_um:g})."
        )
    return (labels, attributes, "labels")


def _recorded_placement(placement: Any, name: str) -> dict[str, tuple[float, float]]:
    """The ``scale`` and ``translate`` a file recorded for its layer (rows, columns), checked:
    two numbers each, the scale positive."""
    if not placement:
        return {}
    if not isinstance(placement, dict):
        raise GeoJSONError(
            f"{name}: its '{NAPARI_KEY}' entry is damaged (got {placement!r:.80}; expected "
            f"{{'scale': [...], 'translate': [...]}}); export the file again, or remove the "
            "entry to open it in image pixels."
        )
    checked = {}
    for key in ("scale", "translate"):
        values = placement.get(key)
        if not values:
            continue
        usable = isinstance(values, list) and len(values) == 2
        usable = usable and all(_finite_number(value) for value in values)
        if not usable or (key == "scale" and min(values) <= 0):
            raise GeoJSONError(
                f"{name}: the napari {key} it records is damaged (got {values!r:.80}; expected "
                "two numbers, rows then columns, a scale above 0); export the file again, or "
                f"remove its '{NAPARI_KEY}' entry to open it in image pixels."
            )
        checked[key] = (float(values[0]), float(values[1]))
    return checked


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def write_labels_geojson(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 writer: a Labels layer as QuPath GeoJSON (every cell, with the slide call)."""
    labels, cells, context = _layer_contents(data, meta)
    written = write_geojson(
        path,
        labels,
        cells,
        pixel_size_um=context["pixel_size_um"],
        image_sha256=context["provenance"].get("input_sha256"),
        slide_call=context["slide_call"],
        include_non_nucleated=True,
        provenance=context["provenance"],
        metadata={NAPARI_KEY: _placement(meta)},
        overwrite=True,
    )
    return [str(written)]


def write_labels_csv(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 writer: a Labels layer's cells table as CSV, with its sidecar JSON."""
    return _write_table(path, data, meta)


def write_labels_parquet(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 writer: a Labels layer's cells table as Parquet, with its sidecar JSON."""
    return _write_table(path, data, meta)


def _write_table(path: str, data: Any, meta: dict) -> list[str]:
    _, cells, context = _layer_contents(data, meta)
    written = write_cells_table(
        path,
        cells,
        context["slide_call"],
        pixel_size_um=context["pixel_size_um"],
        provenance=context["provenance"],
        overwrite=True,
    )
    return [str(item) for item in written]


def _layer_contents(data: Any, meta: dict) -> tuple[np.ndarray, pd.DataFrame, dict[str, Any]]:
    """(labels, cells table, {pixel_size_um, slide_call, provenance}) of a Labels layer."""
    labels = np.asarray(data[0] if meta.get("multiscale") else data)
    metadata = meta.get("metadata") or {}
    result = metadata.get(RESULT_KEY)
    features = meta.get("features")
    if isinstance(features, pd.DataFrame) and len(features.columns):
        cells = features.reset_index(drop=True)
        if "label" not in cells:
            cells = cells.rename(columns={"index": "label"})
        cells = cells.drop(columns=[column for column in ("index",) if column in cells])
    elif result is not None:
        cells = result.cells
    else:
        ids = np.unique(labels)
        cells = pd.DataFrame({"label": ids[ids > 0].astype(np.int64)})
    pixel_size_um = metadata.get("pixel_size_um")
    if pixel_size_um is None and result is not None:
        pixel_size_um = result.pixel_size_um
    context = {
        "pixel_size_um": pixel_size_um,
        "slide_call": result.slide_call if result is not None else metadata.get("slide_call"),
        "provenance": (result.provenance if result is not None else metadata.get("provenance"))
        or {},
    }
    return labels, cells, context


def _placement(meta: dict) -> dict[str, list[float]]:
    return layer_placement(meta.get("scale"), meta.get("translate"))


def layer_placement(
    scale: Sequence[float] | None, translate: Sequence[float] | None
) -> dict[str, list[float]]:
    """A labels layer's ``scale`` and ``translate`` (rows, columns; the last two axes) as the
    GeoJSON's ``napari`` entry records them; a value that is None is left out."""
    placement = {}
    for key, values in (("scale", scale), ("translate", translate)):
        if values is not None:
            placement[key] = [float(value) for value in list(values)[-2:]]
    return placement
