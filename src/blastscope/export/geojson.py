"""QuPath GeoJSON: cells as detection (or cell) features, and back to a labels image.

Coordinates
-----------
Full-resolution image pixels, ``[x, y]`` with x = column and y = row, origin at the top-left
corner of the top-left pixel, as QuPath reads them. Outlines are traced on pixel corners (every
vertex is an integer), so pixel ``(row, col)`` covers the square ``[col, col+1] x [row, row+1]``
and a polygon's area equals the cell's pixel count. Rasterising takes the pixels whose centre
``(col + 0.5, row + 0.5)`` lies inside the geometry, which gives back exactly the traced pixels.

A cell's pixels that touch only at a corner are separate pieces (4-connectivity), so every
polygon ring is simple: a cell in several pieces is a MultiPolygon, background enclosed by a
cell is an interior ring (a hole), and rings meet at most at single corner points, which
keeps every geometry valid in the OGC sense (shapely ``is_valid``). Shells run counter-clockwise
and holes clockwise in the x-right, y-up sense of the shoelace formula (RFC 7946).

What a feature carries
----------------------
``id`` a UUID5 of the image hash and the label id (stable across re-exports);
``properties.objectType`` ``"detection"`` (or ``"cell"``, with a ``nucleusGeometry``);
``properties.classification`` ``{"name", "color"}`` with a QuPath-safe class name;
``properties.measurements`` every numeric and boolean column of the cells table under its own
name (booleans as 0/1; NaN, infinities and missing values omitted);
``properties.metadata`` the text columns and the canonical class name (strings, as QuPath keeps
them). The slide call is one ``"annotation"`` feature over the whole image. The collection's
foreign member ``"blastscope"`` holds the image shape, offset and pixel size, the columns and
their dtypes, the canonical class names, the slide call and the provenance.
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
from scipy import ndimage as ndi

from blastscope.export._atomic import AtomicFiles, ExportError, jsonable
from blastscope.export._columns import column_specs, plain_values, restore_column
from blastscope.export._style import (
    NO_CALL,
    UNMEASURED,
    cell_classes,
    class_colour,
    qupath_class_name,
)

FORMAT_NAME = "blastscope-qupath-geojson"
FORMAT_VERSION = 1
METADATA_KEY = "blastscope"
SLIDE_CALL_KIND = "slide_call"
MAX_READ_PIXELS = 500_000_000
"""Largest labels image (pixels) :func:`read_geojson` builds."""

UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/napari-blastscope/objects")

# Directions of boundary edges: east, south, west, north (y grows downwards).
_DY = (0, 1, 0, -1)
_DX = (1, 0, -1, 0)

Ring = np.ndarray  # (N, 2) float or int vertices [x, y], not repeating the first
PolygonRings = list[Ring]  # shell first, then holes


# --------------------------------------------------------------------------- outlines


def _trace_rings(mask: np.ndarray) -> list[Ring]:
    """Every boundary ring of a 2-D bool mask, traced on pixel corners.

    Edges run with the pixels on their right-hand side in image orientation; at a corner where
    two diagonal pixels meet, the walk turns towards the pixel it came along, which separates
    pieces that touch only at a corner. Returns simple rings, (N, 2) int arrays of ``[x, y]``.
    """
    height, width = mask.shape
    padded = np.zeros((height + 2, width + 2), dtype=bool)
    padded[1:-1, 1:-1] = mask
    inside = padded[1:-1, 1:-1]
    starts = np.zeros((4, height + 1, width + 1), dtype=bool)
    starts[0, :height, :width] = inside & ~padded[:-2, 1:-1]  # top edges, eastwards
    starts[1, :height, 1:] = inside & ~padded[1:-1, 2:]  # right edges, southwards
    starts[2, 1:, 1:] = inside & ~padded[2:, 1:-1]  # bottom edges, westwards
    starts[3, 1:, :width] = inside & ~padded[1:-1, :-2]  # left edges, northwards
    edges = list(zip(*(axis.tolist() for axis in np.nonzero(starts)), strict=True))
    outgoing: dict[tuple[int, int], int] = {}
    for direction, y, x in edges:
        outgoing[(y, x)] = outgoing.get((y, x), 0) | (1 << direction)
    remaining = set(edges)
    rings = []
    for start in edges:
        if start not in remaining:
            continue
        remaining.discard(start)
        direction, y, x = start
        corners = []
        while True:
            y += _DY[direction]
            x += _DX[direction]
            bits = outgoing[(y, x)]
            for turn in (1, 0, 3):  # right, straight on, left
                following = (direction + turn) & 3
                if bits >> following & 1:
                    break
            if following != direction:
                corners.append((x, y))
            if (following, y, x) == start:
                break
            remaining.discard((following, y, x))
            direction = following
        rings.extend(np.array(loop, dtype=np.int64) for loop in _split_at_repeats(corners))
    return rings


def _split_at_repeats(corners: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Split a closed walk that passes a corner twice into simple loops.

    A background pocket that reaches the outside only through a corner makes the walk around a
    piece touch itself there; OGC rings must not, so the pocket becomes its own (hole) loop.
    """
    loops = []
    walk: list[tuple[int, int]] = []
    position: dict[tuple[int, int], int] = {}
    for corner in corners:
        if corner in position:
            start = position[corner]
            loops.append(walk[start:])
            for visited in walk[start + 1 :]:
                del position[visited]
            del walk[start + 1 :]
        else:
            position[corner] = len(walk)
            walk.append(corner)
    loops.append(walk)
    return loops


def _signed_area(ring: np.ndarray) -> float:
    """Shoelace area of a ring of [x, y] vertices: positive counter-clockwise (x right, y up)."""
    x = ring[:, 0].astype(np.float64)
    y = ring[:, 1].astype(np.float64)
    return 0.5 * float(x[:-1] @ y[1:] - x[1:] @ y[:-1] + x[-1] * y[0] - x[0] * y[-1])


def _inside(point: np.ndarray, ring: np.ndarray) -> bool:
    """Whether ``point`` [x, y] lies inside ``ring`` (even-odd rule; not on its boundary)."""
    x, y = point
    x0, y0 = ring[:, 0], ring[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return bool(np.count_nonzero(crosses & (x < at)) % 2)


def mask_polygons(mask: np.ndarray) -> list[PolygonRings]:
    """Polygons (shell, holes...) of a 2-D bool mask, one per 4-connected piece.

    Vertices are ``[x, y]`` pixel corners of the mask's own grid (int arrays). Each hole goes
    to the smallest shell around it.
    """
    rings = _trace_rings(mask)
    areas = [_signed_area(ring) for ring in rings]
    shells = [index for index, area in enumerate(areas) if area > 0]
    polygons = {index: [rings[index]] for index in shells}
    for index, area in enumerate(areas):
        if area > 0:
            continue
        if len(shells) == 1:
            polygons[shells[0]].append(rings[index])
            continue
        # A point on the hole's first side: on no other ring (rings meet only at corners).
        probe = (rings[index][0] + rings[index][1]) / 2.0
        around = [shell for shell in shells if _inside(probe, rings[shell])]
        polygons[min(around, key=areas.__getitem__)].append(rings[index])
    return list(polygons.values())


def labels_geometries(
    labels: np.ndarray, label_ids: Sequence[int], offset_yx: tuple[int, int] = (0, 0)
) -> dict[int, dict[str, Any] | None]:
    """GeoJSON geometry of each label in ``label_ids`` (None when it has no pixels).

    ``labels`` is (Y, X) integers; coordinates are ``[x, y]`` pixel corners plus ``offset_yx``.
    """
    windows = ndi.find_objects(labels)
    geometries: dict[int, dict[str, Any] | None] = {}
    for label in label_ids:
        window = windows[label - 1] if 0 < label <= len(windows) else None
        if window is None:
            geometries[label] = None
            continue
        shift = (window[1].start + offset_yx[1], window[0].start + offset_yx[0])
        polygons = mask_polygons(labels[window] == label)
        geometries[label] = _geometry([[ring + shift for ring in rings] for rings in polygons])
    return geometries


def _geometry(polygons: list[PolygonRings]) -> dict[str, Any]:
    coordinates = [[_closed(ring) for ring in rings] for rings in polygons]
    if len(coordinates) == 1:
        return {"type": "Polygon", "coordinates": coordinates[0]}
    return {"type": "MultiPolygon", "coordinates": coordinates}


def _closed(ring: np.ndarray) -> list[list[int]]:
    points = ring.tolist()
    return [*points, points[0]]


def geometry_polygons(geometry: Mapping[str, Any]) -> list[PolygonRings]:
    """The polygons of a GeoJSON Polygon, MultiPolygon or GeometryCollection as float rings.

    Points and lines have no area and give no polygon.
    """
    kind = geometry.get("type")
    if kind == "Polygon":
        return [_rings(geometry["coordinates"])]
    if kind == "MultiPolygon":
        return [_rings(polygon) for polygon in geometry["coordinates"]]
    if kind == "GeometryCollection":
        return [rings for part in geometry["geometries"] for rings in geometry_polygons(part)]
    return []


def _rings(coordinates: Sequence[Sequence[Sequence[float]]]) -> PolygonRings:
    return [np.asarray(ring, dtype=np.float64)[:, :2] for ring in coordinates if len(ring) >= 3]


def rasterise_polygons(
    polygons: list[PolygonRings], shape: tuple[int, int], offset_yx: tuple[float, float] = (0, 0)
) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Pixels of ``shape`` (Y, X) whose centres lie inside the polygons (even-odd rule).

    Vertices are ``[x, y]`` in pixels minus ``offset_yx``. Returns the window and its bool mask,
    or None when no pixel is covered. A scanline fill: every side of every ring crosses the
    rows whose centre line ``y = row + 0.5`` it spans (half-open, so a vertex on the line counts
    once), and a pixel is inside when an odd number of crossings lie left of its centre.
    """
    rings = [ring - (offset_yx[1], offset_yx[0]) for rings in polygons for ring in rings]
    if not rings:
        return None
    starts = np.concatenate(rings)
    ends = np.concatenate([np.roll(ring, -1, axis=0) for ring in rings])
    top = max(0, math.floor(starts[:, 1].min()))
    left = max(0, math.floor(starts[:, 0].min()))
    bottom = min(shape[0], math.ceil(starts[:, 1].max()))
    right = min(shape[1], math.ceil(starts[:, 0].max()))
    if bottom <= top or right <= left:
        return None
    low = np.minimum(starts[:, 1], ends[:, 1])
    high = np.maximum(starts[:, 1], ends[:, 1])
    first_row = np.ceil(low - 0.5).astype(np.int64)
    counts = np.maximum(np.ceil(high - 0.5).astype(np.int64) - first_row, 0)
    side = np.repeat(np.arange(len(starts)), counts)
    rows = first_row[side] + np.arange(len(side)) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = (rows >= top) & (rows < bottom)
    side, rows = side[keep], rows[keep]
    (x0, y0), (x1, y1) = starts[side].T, ends[side].T
    crossing = x0 + (rows + 0.5 - y0) * (x1 - x0) / (y1 - y0)
    column = np.clip(np.floor(crossing - 0.5).astype(np.int64) + 1 - left, 0, right - left)
    width = right - left + 1
    toggles = np.bincount((rows - top) * width + column, minlength=(bottom - top) * width)
    mask = (np.cumsum(toggles.reshape(bottom - top, width), axis=1)[:, :-1] & 1).astype(bool)
    if not mask.any():
        return None
    return (slice(top, bottom), slice(left, right)), mask


# --------------------------------------------------------------------------- writing


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
) -> dict[str, Any]:
    """The QuPath GeoJSON FeatureCollection (a JSON-ready dict) of a labels image and its table.

    Arguments as in :func:`write_geojson`.
    """
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
    image_key = image_sha256 or "labels-sha256:" + hashlib.sha256(labels.tobytes()).hexdigest()

    present = np.unique(labels)
    present = present[present > 0]
    table_labels = table["label"].to_numpy(dtype=np.int64)
    unmeasured = np.setdiff1d(present, table_labels)
    without_pixels = np.setdiff1d(table_labels, present)
    classes = cell_classes(table)
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
                measurements,
                strings,
            )
        )
    areas = np.bincount(labels.ravel(), minlength=int(present.max(initial=0)) + 1)
    for label in unmeasured:
        label = int(label)
        measurements = {"label": label, "area_px": int(areas[label])}
        features.append(
            _feature(
                object_uuid(image_key, label, offset),
                geometries[label],
                nuclei.get(label),
                object_type,
                UNMEASURED,
                measurements,
                {},
            )
        )

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
        "columns": [list(spec) for spec in specs],
        "class_names": {qupath_class_name(name): name for name in canonical},
        "unmeasured_labels": unmeasured.tolist(),
        "rows_without_pixels": without_pixels.tolist(),
        "slide_call": call,
        "provenance": jsonable(provenance or {}, "provenance"),
        **jsonable(metadata or {}, "metadata"),
    }
    return {"type": "FeatureCollection", METADATA_KEY: info, "features": features}


def _feature(
    identifier: str,
    geometry: dict[str, Any] | None,
    nucleus: dict[str, Any] | None,
    object_type: str,
    class_name: str,
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
            "color": list(class_colour(class_name)),
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
            "classification": {"name": qupath_class_name(name), "color": list(class_colour(name))},
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


# --------------------------------------------------------------------------- reading


def read_geojson(path: str | Path) -> tuple[np.ndarray, pd.DataFrame, dict[str, Any]]:
    """Read a GeoJSON file of objects into (labels, cells, metadata).

    ``labels`` (Y, X) int32: each detection or cell feature rasterised (pixel centres inside the
    geometry; holes and MultiPolygons honoured; a later feature wins where two overlap), or the
    annotations when the file has no detections. The shape comes from blastscope's metadata, else
    from the objects' extent. Label ids are the features' ``label`` measurements when every
    object has a distinct one, else 1, 2, ... in file order.

    ``cells``: for blastscope's own files, the exported table (same columns and dtypes); for
    other files (e.g. QuPath's exports) ``label``, ``object_type``, ``classification``, ``name``,
    ``object_id``, ``area_px`` (rasterised) and one float column per measurement.

    ``metadata``: ``source`` ("blastscope" or "geojson"), ``image_shape``, ``offset_yx``,
    ``pixel_size_um``, ``image_sha256``, ``slide_call``, ``provenance``, ``class_names``,
    ``annotations`` (names of annotations not rasterised), ``nucleus_labels`` (a labels array
    with the same ids, when features carry a ``nucleusGeometry``) and blastscope's own entries.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"No GeoJSON file at {path}: check the path.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExportError(
            f"{path.name} is not valid JSON ({error}); give a GeoJSON file (for example one "
            "exported from QuPath with File > Export objects as GeoJSON)."
        ) from error
    features = _features(document, path.name)
    info = document.get(METADATA_KEY) if isinstance(document, dict) else None
    ours = isinstance(info, dict) and info.get("format") == FORMAT_NAME
    info = dict(info) if ours else {}

    slide_calls = [feature for feature in features if _kind(feature) == SLIDE_CALL_KIND]
    objects = [feature for feature in features if _object_type(feature) in ("detection", "cell")]
    annotations = [
        feature
        for feature in features
        if _object_type(feature) == "annotation" and _kind(feature) != SLIDE_CALL_KIND
    ]
    if not objects:
        objects, annotations = annotations, []
    polygons = [geometry_polygons(feature.get("geometry") or {}) for feature in objects]
    offset = tuple(info.get("offset_yx") or (0, 0))
    shape = _image_shape(info, polygons, offset, path.name)
    measurements = [_measurements(feature) for feature in objects]
    ids = _label_ids(measurements)

    labels = np.zeros(shape, dtype=np.int32)
    nucleus_labels = None
    for label, feature, rings in zip(ids, objects, polygons, strict=True):
        covered = rasterise_polygons(rings, shape, offset)
        if covered is not None:
            window, mask = covered
            labels[window][mask] = label
        nucleus = feature.get("nucleusGeometry")
        if nucleus:
            if nucleus_labels is None:
                nucleus_labels = np.zeros(shape, dtype=np.int32)
            covered = rasterise_polygons(geometry_polygons(nucleus), shape, offset)
            if covered is not None:
                window, mask = covered
                nucleus_labels[window][mask] = label

    if ours:
        cells = _our_table(info["columns"], objects, measurements)
    else:
        cells = _foreign_table(ids, objects, measurements, labels)
    metadata: dict[str, Any] = {
        **info,
        "source": "blastscope" if ours else "geojson",
        "image_shape": list(shape),
        "offset_yx": list(offset),
        "pixel_size_um": info.get("pixel_size_um"),
        "image_sha256": info.get("image_sha256"),
        "slide_call": info.get("slide_call") if ours else _foreign_slide_call(slide_calls),
        "provenance": info.get("provenance", {}),
        "class_names": info.get("class_names", {}),
        "annotations": [_annotation_name(feature) for feature in annotations],
    }
    if nucleus_labels is not None:
        metadata["nucleus_labels"] = nucleus_labels
    return labels, cells, metadata


def _features(document: Any, name: str) -> list[dict[str, Any]]:
    if isinstance(document, list):
        candidates = document
    elif isinstance(document, dict) and document.get("type") == "FeatureCollection":
        candidates = document.get("features") or []
    elif isinstance(document, dict) and document.get("type") == "Feature":
        candidates = [document]
    else:
        raise ExportError(
            f"{name} holds no GeoJSON features: expected a FeatureCollection, a Feature or a "
            "list of features (QuPath: File > Export objects as GeoJSON)."
        )
    features = [item for item in candidates if isinstance(item, dict) and "geometry" in item]
    if len(features) != len(candidates):
        raise ExportError(
            f"{name}: {len(candidates) - len(features)} of {len(candidates)} entries are not "
            "GeoJSON features (objects with a 'geometry'); fix or remove them."
        )
    return features


def _properties(feature: Mapping[str, Any]) -> dict[str, Any]:
    properties = feature.get("properties")
    return properties if isinstance(properties, dict) else {}


def _object_type(feature: Mapping[str, Any]) -> str:
    """QuPath's rule: objectType (or object_type / type); missing or unknown is an annotation."""
    properties = _properties(feature)
    kind = properties.get("objectType", properties.get("object_type", properties.get("type")))
    kind = str(kind) if kind is not None else "annotation"
    legacy = {"PathDetectionObject": "detection", "PathCellObject": "cell", "tile": "detection"}
    kind = legacy.get(kind, kind)
    return kind if kind in ("detection", "cell", "annotation") else "annotation"


def _kind(feature: Mapping[str, Any]) -> str | None:
    metadata = _properties(feature).get("metadata")
    return metadata.get("blastscope_kind") if isinstance(metadata, dict) else None


def _class_name(feature: Mapping[str, Any]) -> str:
    properties = _properties(feature)
    metadata = properties.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("blastscope_class"), str):
        return metadata["blastscope_class"]
    classification = properties.get("classification")
    if isinstance(classification, dict):
        name = classification.get("name")
        if name is None and isinstance(classification.get("names"), list):
            name = ": ".join(str(part) for part in classification["names"])
        return "" if name is None else str(name)
    return "" if classification is None else str(classification)


def _measurements(feature: Mapping[str, Any]) -> dict[str, float | int]:
    """A feature's measurements (an object, or QuPath 0.2's list of {name, value})."""
    raw = _properties(feature).get("measurements")
    if isinstance(raw, list):
        raw = {item.get("name"): item.get("value") for item in raw if isinstance(item, dict)}
    if not isinstance(raw, dict):
        return {}
    return {
        str(name): value
        for name, value in raw.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def _label_ids(measurements: list[dict[str, float | int]]) -> list[int]:
    labels = [values.get("label") for values in measurements]
    usable = all(
        isinstance(label, (int, float)) and float(label).is_integer() and label > 0
        for label in labels
    )
    if usable and len(set(labels)) == len(labels):
        return [int(label) for label in labels]
    return list(range(1, len(measurements) + 1))


def _image_shape(
    info: Mapping[str, Any],
    polygons: list[list[PolygonRings]],
    offset: Sequence[float],
    name: str,
) -> tuple[int, int]:
    if info.get("image_shape"):
        height, width = (int(side) for side in info["image_shape"])
    else:
        points = [ring for rings in polygons for polygon in rings for ring in polygon]
        if not points:
            return (0, 0)
        extent = np.concatenate(points).max(axis=0)
        height = max(0, math.ceil(extent[1] - offset[0]))
        width = max(0, math.ceil(extent[0] - offset[1]))
    if height * width > MAX_READ_PIXELS:
        raise ExportError(
            f"{name}: the objects span {height} x {width} pixels, more than the "
            f"{MAX_READ_PIXELS:,} a labels image may hold here; export a region of the slide "
            "(in QuPath, the objects of one annotation) instead."
        )
    return height, width


def _our_table(
    columns: list[list[str]],
    objects: list[dict[str, Any]],
    measurements: list[dict[str, float | int]],
) -> pd.DataFrame:
    strings = [_properties(feature).get("metadata") or {} for feature in objects]
    restored = {}
    for name, dtype in columns:
        numeric = pd.api.types.is_numeric_dtype(pd.api.types.pandas_dtype(dtype))
        numeric |= pd.api.types.is_bool_dtype(pd.api.types.pandas_dtype(dtype))
        source = measurements if numeric else strings
        values = [values.get(name) for values in source]
        restored[name] = restore_column(name, values, dtype)
    return pd.DataFrame(restored, columns=[name for name, _ in columns])


def _foreign_table(
    ids: list[int],
    objects: list[dict[str, Any]],
    measurements: list[dict[str, float | int]],
    labels: np.ndarray,
) -> pd.DataFrame:
    areas = np.bincount(labels.ravel(), minlength=max(ids, default=0) + 1)
    table = pd.DataFrame(
        {
            "label": np.array(ids, dtype=np.int64),
            "object_type": [_object_type(feature) for feature in objects],
            "classification": [_class_name(feature) for feature in objects],
            "name": [str(_properties(feature).get("name") or "") for feature in objects],
            "object_id": [str(feature.get("id") or "") for feature in objects],
            "area_px": areas[np.array(ids, dtype=np.int64)] if ids else np.zeros(0, np.int64),
        }
    )
    names = list(dict.fromkeys(name for values in measurements for name in values))
    extra = {
        name: np.array([values.get(name, np.nan) for values in measurements], dtype=np.float64)
        for name in names
        if name not in table
    }
    return pd.concat([table, pd.DataFrame(extra, index=table.index)], axis=1)


def _foreign_slide_call(slide_calls: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A slide call from its annotation alone (a file QuPath re-exported): class and numbers."""
    if not slide_calls:
        return None
    name = _class_name(slide_calls[0])
    return {
        "call": None if name == NO_CALL else name,
        "measurements": _measurements(slide_calls[0]),
    }


def _annotation_name(feature: Mapping[str, Any]) -> str:
    properties = _properties(feature)
    return str(properties.get("name") or _class_name(feature) or "annotation")
