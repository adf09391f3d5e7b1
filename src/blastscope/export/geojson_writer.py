"""Writing QuPath GeoJSON: the cells of a labels image as detection (or cell) features.

The format (coordinates, what a feature and the collection's ``blastscope`` member carry) is
described in :mod:`blastscope.export.geojson`; outlines come from
:mod:`blastscope.export.outlines`.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from blastscope.classes import mutation_classes_of
from blastscope.export._atomic import AtomicFiles, ExportError
from blastscope.export._columns import column_specs, plain_values
from blastscope.export._style import (
    NO_CALL,
    UNMEASURED,
    cell_classes,
    class_colour,
    qupath_class_name,
)
from blastscope.export.outlines import geometry_centroid, labels_geometries, simplified_geometry
from blastscope.jsonable import jsonable
from blastscope.palette import RGB

FORMAT_NAME = "blastscope-qupath-geojson"
FORMAT_VERSION = 1
METADATA_KEY = "blastscope"
SLIDE_CALL_KIND = "slide_call"

GEOJSON_SHAPES = ("outline", "simplified", "centroid")
"""How a cell is drawn in the GeoJSON: its outline on pixel corners (QuPath draws and measures
it), the outline thinned to within :data:`SIMPLIFY_TOLERANCE_PX`, or only its centre as a Point
(a whole slide's million cells fit in a fraction of the bytes; no outline to edit or re-read)."""
SIMPLIFY_TOLERANCE_PX = 1.0
"""A simplified outline stays within this many pixels of the traced one."""

UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/napari-blastscope/objects")


def object_uuid(image_key: str, label: int | str, offset_yx: tuple[int, int] = (0, 0)) -> str:
    """The UUID5 of one object: the same image, offset and label give the same id."""
    where = "" if tuple(offset_yx) == (0, 0) else f"@{offset_yx[0]},{offset_yx[1]}"
    return str(uuid.uuid5(UUID_NAMESPACE, f"{image_key}{where}:{label}"))


def slide_call_dict(slide_call: Any) -> dict[str, Any] | None:
    """The slide call as a JSON-ready dict (``SlideCall.to_dict()``), or None."""
    if slide_call is None:
        return None
    if hasattr(slide_call, "to_dict"):
        return jsonable(slide_call.to_dict(), "slide_call")
    if isinstance(slide_call, Mapping):
        return jsonable(dict(slide_call), "slide_call")
    raise ExportError(
        f"slide_call must be a SlideCall (blastscope.slide_call.call_slide) or its to_dict(), "
        f"got {type(slide_call).__name__}."
    )


def geojson_collection(
    labels: np.ndarray,
    cells: pd.DataFrame,
    *,
    pixel_size_um: float | None,
    image_sha256: str | None = None,
    slide_call: Any = None,
    include_non_nucleated: bool = False,
    object_type: Literal["detection", "cell"] | None = None,
    nucleus_labels: np.ndarray | None = None,
    offset_yx: tuple[int, int] = (0, 0),
    provenance: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    shapes: str = "outline",
) -> dict[str, Any]:
    """The QuPath GeoJSON FeatureCollection (a JSON-ready dict) of a labels image and its table.

    Arguments as in :func:`write_geojson`.
    """
    shapes = check_shapes(shapes)
    labels = _check_labels(labels, "labels")
    if nucleus_labels is not None:
        nucleus_labels = _check_labels(nucleus_labels, "nucleus_labels")
        if nucleus_labels.shape != labels.shape:
            raise ExportError(
                f"nucleus_labels has shape {nucleus_labels.shape} but labels {labels.shape}; give "
                "the nucleus of each cell in a labels image of the same shape (same ids)."
            )
    object_type = object_type or ("cell" if nucleus_labels is not None else "detection")
    if object_type not in ("detection", "cell"):
        raise ExportError(f"object_type must be 'detection' or 'cell', got {object_type!r}.")
    if object_type == "detection" and nucleus_labels is not None:
        raise ExportError(
            "QuPath keeps a nucleus only on cell objects: pass object_type='cell' (or leave it "
            "None) with nucleus_labels."
        )
    pixel_size_um = _check_pixel_size(pixel_size_um)
    offset = _check_offset(offset_yx)
    table = _check_cells(cells)
    specs = column_specs(table)
    image_key = image_sha256 or (
        "labels-sha256:" + hashlib.sha256(np.ascontiguousarray(labels).data).hexdigest()
    )

    present = np.unique(labels)
    present = present[present > 0]
    table_labels = table["label"].to_numpy(dtype=np.int64)
    unmeasured = np.setdiff1d(present, table_labels)
    without_pixels = np.setdiff1d(table_labels, present)
    classes = cell_classes(table)
    model_classes = mutation_classes_of(table.columns)
    colours = {name: class_colour(name, model_classes) for name in {*classes, UNMEASURED}}
    keep = np.isin(table_labels, present)
    if not include_non_nucleated and "is_nucleated" in table:
        keep &= table["is_nucleated"].astype("boolean").fillna(True).to_numpy(dtype=bool)

    rows = np.flatnonzero(keep)
    ids = [int(label) for label in table_labels[rows]] + [int(label) for label in unmeasured]
    geometries = labels_geometries(labels, ids, offset)
    nuclei = labels_geometries(nucleus_labels, ids, offset) if nucleus_labels is not None else {}

    columns = {name: plain_values(table[name]) for name, _ in specs}
    numeric = [name for name, values in columns.items() if _is_numeric(table[name])]
    text = [name for name in columns if name not in numeric]
    features = []
    for row in rows:
        label = int(table_labels[row])
        measurements = {
            name: int(value) if isinstance(value, bool) else value
            for name in numeric
            if (value := columns[name][row]) is not None
        }
        strings = {name: value for name in text if (value := columns[name][row]) is not None}
        features.append(
            _feature(
                object_uuid(image_key, label, offset),
                geometries[label],
                nuclei.get(label),
                object_type,
                classes.iloc[row],
                colours[classes.iloc[row]],
                measurements,
                strings,
            )
        )
    areas: dict[int, int] = {}
    if len(unmeasured):
        values, counts = np.unique(labels, return_counts=True)
        areas = dict(zip(values.tolist(), counts.tolist(), strict=True))
    for label in unmeasured:
        label = int(label)
        measurements = {"label": label, "area_px": areas[label]}
        features.append(
            _feature(
                object_uuid(image_key, label, offset),
                geometries[label],
                nuclei.get(label),
                object_type,
                UNMEASURED,
                colours[UNMEASURED],
                measurements,
                {},
            )
        )

    features = [with_shapes(feature, shapes) for feature in features]
    call = slide_call_dict(slide_call)
    if call is not None:
        features.append(_slide_call_feature(call, labels.shape, offset, image_key))
    canonical = sorted({*classes.unique(), *(call or {}).get("classes", [])})
    info = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "image_shape": list(labels.shape),
        "offset_yx": list(offset),
        "pixel_size_um": pixel_size_um,
        "image_sha256": image_sha256,
        "object_type": object_type,
        "include_non_nucleated": include_non_nucleated,
        "shapes": shapes,
        "columns": [list(spec) for spec in specs],
        "class_names": {qupath_class_name(name): name for name in canonical},
        "unmeasured_labels": unmeasured.tolist(),
        "rows_without_pixels": without_pixels.tolist(),
        "slide_call": call,
        "provenance": jsonable(provenance or {}, "provenance"),
        **jsonable(metadata or {}, "metadata"),
    }
    return {"type": "FeatureCollection", METADATA_KEY: info, "features": features}


def check_shapes(shapes: str) -> str:
    """``shapes`` when it is one of :data:`GEOJSON_SHAPES`, else an ExportError naming them."""
    if shapes not in GEOJSON_SHAPES:
        raise ExportError(
            f"GeoJSON shapes {shapes!r} is not known: choose {', '.join(GEOJSON_SHAPES)}."
        )
    return shapes


def with_shapes(feature: dict[str, Any], shapes: str) -> dict[str, Any]:
    """A cell feature drawn as ``shapes`` (:data:`GEOJSON_SHAPES`): its outline as it is, the
    outline (and nucleus) simplified, or a Point at its centroid without a nucleus."""
    geometry = feature.get("geometry")
    if shapes == "outline" or geometry is None:
        return feature
    if shapes == "centroid":
        reshaped = {key: value for key, value in feature.items() if key != "nucleusGeometry"}
        x, y = geometry_centroid(geometry)
        reshaped["geometry"] = {"type": "Point", "coordinates": [round(x, 2), round(y, 2)]}
        return reshaped
    reshaped = {**feature, "geometry": simplified_geometry(geometry, SIMPLIFY_TOLERANCE_PX)}
    if feature.get("nucleusGeometry") is not None:
        nucleus = simplified_geometry(feature["nucleusGeometry"], SIMPLIFY_TOLERANCE_PX)
        reshaped["nucleusGeometry"] = nucleus
    return reshaped


def _feature(
    identifier: str,
    geometry: dict[str, Any] | None,
    nucleus: dict[str, Any] | None,
    object_type: str,
    class_name: str,
    colour: RGB,
    measurements: dict[str, float | int],
    strings: dict[str, str],
) -> dict[str, Any]:
    feature: dict[str, Any] = {"type": "Feature", "id": identifier, "geometry": geometry}
    if nucleus is not None:
        feature["nucleusGeometry"] = nucleus
    feature["properties"] = {
        "objectType": object_type,
        "classification": {
            "name": qupath_class_name(class_name),
            "color": list(colour),
        },
        "measurements": measurements,
        "metadata": {**strings, "blastscope_class": class_name},
    }
    return feature


def _slide_call_feature(
    call: dict[str, Any], shape: tuple[int, int], offset: tuple[int, int], image_key: str
) -> dict[str, Any]:
    """One annotation over the image: the slide call with its numbers as measurements."""
    top, left = offset
    bottom, right = top + shape[0], left + shape[1]
    ring = [[left, top], [right, top], [right, bottom], [left, bottom], [left, top]]
    name = call.get("call") or NO_CALL
    measurements: dict[str, float | int] = {}
    for class_name, probability in (call.get("probabilities") or {}).items():
        if probability is not None:
            measurements[f"p_{class_name}"] = probability
    for class_name, bounds in (call.get("interval") or {}).items():
        for side, bound in zip(("low", "high"), bounds or (), strict=False):
            if bound is not None:
                measurements[f"p_{class_name}_{side}"] = bound
    for key in ("n_blasts", "n_nucleated", "blast_percentage", "n_images"):
        if isinstance(call.get(key), (int, float)) and not isinstance(call.get(key), bool):
            measurements[key] = call[key]
    return {
        "type": "Feature",
        "id": object_uuid(image_key, SLIDE_CALL_KIND, offset),
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "objectType": "annotation",
            "name": f"Slide call: {name}" + (f" ({call['reason']})" if call.get("reason") else ""),
            "classification": {
                "name": qupath_class_name(name),
                "color": list(class_colour(name, list(call.get("probabilities") or {}))),
            },
            "measurements": measurements,
            "metadata": {"blastscope_kind": SLIDE_CALL_KIND, "blastscope_class": name},
        },
    }


def write_geojson(
    path: str | Path,
    labels: np.ndarray,
    cells: pd.DataFrame,
    *,
    pixel_size_um: float | None,
    image_sha256: str | None = None,
    slide_call: Any = None,
    include_non_nucleated: bool = False,
    object_type: Literal["detection", "cell"] | None = None,
    nucleus_labels: np.ndarray | None = None,
    offset_yx: tuple[int, int] = (0, 0),
    provenance: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    shapes: str = "outline",
    overwrite: bool = False,
) -> Path:
    """Write the cells as a QuPath GeoJSON FeatureCollection; returns the path written.

    ``labels`` (Y, X) integer labels of the analysed image (its pixels are the image's
    full-resolution pixels); ``cells`` the cells table (a ``label`` column, one row per label);
    ``pixel_size_um`` µm per pixel (metadata only). One feature per nucleated cell (every cell
    with ``include_non_nucleated``; every cell when the table has no ``is_nucleated``), plus
    labels the table lacks (class ``Unmeasured``); table rows whose label has no pixels are left
    out and listed in the metadata. ``image_sha256`` seeds the stable UUIDs (default: a hash of
    the labels). ``slide_call`` (a SlideCall or its dict) becomes one annotation. ``object_type``
    ``"cell"`` writes ``nucleus_labels`` (same ids) as each cell's ``nucleusGeometry`` (the
    default when they are given). ``offset_yx`` (pixels) places a tile within a larger image.
    ``provenance`` and ``metadata`` (JSON-ready) go into the collection's ``blastscope`` member.
    ``shapes`` draws each cell as its outline, a simplified outline or its centroid
    (:data:`GEOJSON_SHAPES`).
    """
    collection = geojson_collection(
        labels,
        cells,
        pixel_size_um=pixel_size_um,
        image_sha256=image_sha256,
        slide_call=slide_call,
        include_non_nucleated=include_non_nucleated,
        object_type=object_type,
        nucleus_labels=nucleus_labels,
        offset_yx=offset_yx,
        provenance=provenance,
        metadata=metadata,
        shapes=shapes,
    )
    with AtomicFiles(overwrite=overwrite) as files:
        write_collection(files, path, collection)
    return Path(path)


def write_collection(files: AtomicFiles, path: str | Path, collection: dict[str, Any]) -> None:
    """Write a FeatureCollection into a pending set of atomic files."""
    info = collection.get(METADATA_KEY, {})
    checked = {**collection, METADATA_KEY: jsonable(info, "the GeoJSON metadata")}
    try:  # features hold plain values already (geojson_collection builds them so)
        text = json.dumps(checked, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise ExportError(
            f"Cannot write the GeoJSON: {error}; give numbers, strings, lists and dicts only."
        ) from error
    files.temporary(path).write_text(text, encoding="utf-8")


def _is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype)


def _check_labels(labels: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 2 or array.dtype.kind not in "iu":
        raise ExportError(
            f"{name} must be a 2-D integer labels image (Y, X), got {array.dtype} of shape "
            f"{array.shape}; give the cells' labels layer data (0 = background)."
        )
    if array.size and array.min() < 0:
        raise ExportError(f"{name} holds negative ids; label ids are 0 (background) or positive.")
    if array.dtype == np.uint64:
        if array.size and array.max() > np.iinfo(np.int64).max:
            raise ExportError(f"{name} holds ids above 2**63 - 1; relabel it (0, 1, 2, ...).")
        array = array.astype(np.int64)
    return array


def _check_cells(cells: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(cells, pd.DataFrame) or "label" not in cells:
        raise ExportError(
            "cells must be the cells table (a DataFrame with a 'label' column, one row per "
            "label); build it with blastscope.cells.measure_cells."
        )
    table = cells.reset_index(drop=True)
    if table["label"].duplicated().any():
        raise ExportError("The cells table has repeated labels; keep one row per label.")
    return table


def _check_pixel_size(pixel_size_um: float | None) -> float | None:
    if pixel_size_um is None:
        return None
    value = float(pixel_size_um)
    if not math.isfinite(value) or value <= 0:
        raise ExportError(
            f"pixel_size_um must be a positive number of µm per pixel, got {pixel_size_um!r}."
        )
    return value


def _check_offset(offset_yx: Sequence[int]) -> tuple[int, int]:
    values = tuple(offset_yx)
    if len(values) != 2 or not all(float(value).is_integer() for value in values):
        raise ExportError(f"offset_yx must be two whole numbers of pixels, got {offset_yx!r}.")
    return int(values[0]), int(values[1])
