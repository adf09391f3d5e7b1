"""npe2 reader for QuPath GeoJSON and writers for Labels layers (GeoJSON, CSV, Parquet).

Thin wrappers over :mod:`blastscope.export`: the writers take the cells table from the layer's
``features`` (its ``index`` column is the label id), so edits made in the viewer (e.g. a
``blast_override``) are what gets written, and the pixel size, slide call and provenance from the
layer's metadata (or the SlideResult kept there). napari asks before replacing an existing file
in its save dialog, so these writers replace files. The GeoJSON writer exports every cell (red
cells too) and the layer's scale and translate, so that napari -> file -> napari gives the same
layer back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from napari.types import LayerDataTuple

from blastscope.export import read_geojson, write_cells_table, write_geojson
from blastscope.widgets._layers import RESULT_KEY, layer_features

GEOJSON_SUFFIX = ".geojson"
NAPARI_KEY = "napari"


def get_geojson_reader(path: str | list[str]) -> Callable[[str | list[str]], list] | None:
    """The reader of ``*.geojson`` files (one or several), else None."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(str(item).lower().endswith(GEOJSON_SUFFIX) for item in paths):
        return None
    return read_geojson_layers


def read_geojson_layers(path: str | list[str]) -> list[LayerDataTuple]:
    """One Labels layer per GeoJSON file: the rasterised objects with the cells table as
    ``features`` and the file's metadata (pixel size, slide call, provenance) as metadata."""
    paths = [path] if isinstance(path, str) else list(path)
    return [_labels_layer(Path(item)) for item in paths]


def _labels_layer(path: Path) -> LayerDataTuple:
    labels, cells, metadata = read_geojson(path)
    placement = metadata.get(NAPARI_KEY) or {}
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
    for key in ("scale", "translate"):
        if placement.get(key):
            attributes[key] = tuple(placement[key])
    return (labels, attributes, "labels")


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
    placement = {}
    for key in ("scale", "translate"):
        if key in meta:
            placement[key] = [float(value) for value in meta[key]]
    return placement
