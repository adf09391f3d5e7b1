"""Reading GeoJSON objects (QuPath's exports, blastscope's own) back into a labels image.

The reader trusts nothing in the file. Every geometry is checked, and anything malformed is one
:class:`GeoJSONError` naming the file, the feature (its number, id and name) and what is wrong.
Features without an area (points, lines) are skipped and counted in a notice. The labels image is
the image the objects belong to: the shape the caller passes, else the one blastscope's exporter
recorded, else the objects' extent, at most :data:`MAX_READ_PIXELS`. Objects far outside it are
refused, and the fill is planned, clipped to the image and bounded (:data:`MAX_FILL_PIXELS`,
:data:`MAX_CROSSINGS`) before a pixel is touched, so a small file cannot take much memory or time.
"""

from __future__ import annotations

import json
import math
import numbers
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from blastscope.export._atomic import ExportError
from blastscope.export._columns import column_kind, restore_column
from blastscope.export._style import NO_CALL
from blastscope.export.geojson_writer import FORMAT_NAME, METADATA_KEY, SLIDE_CALL_KIND
from blastscope.export.outlines import PolygonRings
from blastscope.export.rasterise import FillPlan, fill, plan_fills

MAX_READ_PIXELS = 100_000_000
"""Largest labels image (pixels) :func:`read_geojson` builds: 400 MB as int32, e.g. 10,000 x
10,000 pixels (filling one object over all of it takes about 200 MB more)."""
MAX_FILL_PIXELS = 3_000_000_000
"""Most pixels the fill may visit: the objects' bounding boxes within the image, summed (a few
seconds). Only heavily overlapping large objects come near it."""
MAX_CROSSINGS = 100_000_000
"""Most crossings of pixel rows by the objects' sides within the image, summed."""

AREA_TYPES = ("Polygon", "MultiPolygon", "GeometryCollection")
NO_AREA_TYPES = ("Point", "MultiPoint", "LineString", "MultiLineString")
NO_GEOMETRY = "without geometry"
_INT32_MAX = int(np.iinfo(np.int32).max)


class GeoJSONError(ExportError):
    """A GeoJSON file that cannot be read; the message names the file, the feature and the fix."""


@dataclass(frozen=True)
class _Parsed:
    """One feature's checked geometry: its polygons (none without an area), the nucleus's
    polygons (None when it has no ``nucleusGeometry``) and its geometry type."""

    feature: dict[str, Any]
    index: int
    total: int
    polygons: list[PolygonRings]
    nucleus: list[PolygonRings] | None
    kind: str

    @property
    def where(self) -> str:
        """The feature as a user finds it in the file (see :func:`_describe`)."""
        return _describe(self.feature, self.index, self.total)


# --------------------------------------------------------------------------- geometry


def geometry_polygons(geometry: Any) -> list[PolygonRings]:
    """The polygons of a GeoJSON Polygon, MultiPolygon or GeometryCollection as float rings.

    Points and lines have no area and give no polygon. A geometry that is not well-formed
    (missing or non-finite coordinates, ragged rings, rings of fewer than 3 positions, unknown
    types) raises a :class:`GeoJSONError` saying what is wrong. Nested collections are walked
    without recursion.
    """
    polygons: list[PolygonRings] = []
    pending = [geometry]
    while pending:
        part = pending.pop()
        if not isinstance(part, Mapping):
            raise GeoJSONError(f"is {_type_name(part)}, not a GeoJSON geometry object")
        kind = part.get("type")
        if kind == "GeometryCollection":
            parts = part.get("geometries")
            if not isinstance(parts, list):
                raise GeoJSONError("is a GeometryCollection without a 'geometries' list")
            pending.extend(reversed(parts))
            continue
        if kind in NO_AREA_TYPES:
            continue
        if kind not in AREA_TYPES:
            raise GeoJSONError(
                f"has type {str(kind)!r:.60}, not a GeoJSON geometry type "
                f"({', '.join(AREA_TYPES + NO_AREA_TYPES)})"
            )
        if "coordinates" not in part:
            raise GeoJSONError(f"is a {kind} with no 'coordinates'")
        coordinates = part["coordinates"]
        members = [coordinates] if kind == "Polygon" else coordinates
        if not isinstance(members, list):
            raise GeoJSONError(f"is a {kind} whose coordinates are not a list of polygons")
        for number, polygon in enumerate(members, start=1):
            where = "" if kind == "Polygon" else f"polygon {number}: "
            rings = _rings(polygon, where)
            if rings:
                polygons.append(rings)
    return polygons


def _rings(polygon: Any, where: str) -> PolygonRings:
    """A polygon's rings as (N, 2) float arrays of ``[x, y]``, checked."""
    if not isinstance(polygon, list):
        raise GeoJSONError(f"{where}is not a list of rings (lists of [x, y] positions)")
    rings = []
    for number, ring in enumerate(polygon, start=1):
        try:
            array = np.asarray(ring, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            array = None
        if array is None or array.ndim != 2 or array.shape[1] < 2:
            raise GeoJSONError(f"{where}ring {number} is not a list of [x, y] numbers")
        if len(array) < 3:
            raise GeoJSONError(
                f"{where}ring {number} has {len(array)} positions; a ring needs at least 3 "
                "positions (4 with the first repeated last)"
            )
        array = array[:, :2]
        if not np.isfinite(array).all():
            raise GeoJSONError(
                f"{where}ring {number} has coordinates that are not finite numbers "
                "(NaN, Infinity or null)"
            )
        rings.append(array)
    return rings


def _type_name(value: Any) -> str:
    return "null" if value is None else f"a {type(value).__name__}"


# --------------------------------------------------------------------------- reading


def read_geojson(
    path: str | Path, image_shape: tuple[int, int] | None = None
) -> tuple[np.ndarray, pd.DataFrame, dict[str, Any]]:
    """Read a GeoJSON file of objects into (labels, cells, metadata).

    ``labels`` (Y, X) int32: each detection or cell feature rasterised (pixel centres inside the
    geometry; holes and MultiPolygons honoured; a later feature wins where two overlap), or the
    annotations when the file has no detections. Its shape is ``image_shape`` (Y, X pixels, the
    image the objects belong to) when given, else blastscope's recorded image shape, else the
    objects' extent; at most :data:`MAX_READ_PIXELS`. Label ids are the features' ``label``
    measurements when every object has a distinct one, else 1, 2, ... in file order. Points and
    lines are skipped (counted in ``metadata["notices"]``).

    ``cells``: for blastscope's own files, the exported table (same columns and dtypes); for
    other files (e.g. QuPath's exports) ``label``, ``object_type``, ``classification``, ``name``,
    ``object_id``, ``area_px`` (rasterised) and one float column per measurement.

    ``metadata``: ``source`` ("blastscope" or "geojson"), ``image_shape``, ``offset_yx``,
    ``pixel_size_um``, ``image_sha256``, ``slide_call``, ``provenance``, ``class_names``,
    ``annotations`` (names of annotations not rasterised), ``notices`` (what was skipped),
    ``nucleus_labels`` (a labels array with the same ids, when features carry a
    ``nucleusGeometry``) and blastscope's own entries.

    Raises :class:`GeoJSONError` (an :class:`ExportError`) for a file that is not GeoJSON, holds
    nothing with an area, holds a malformed geometry, or objects far outside the image or too
    many to fill; the message names the file, the feature and the fix.
    """
    path = Path(path)
    name = path.name
    document = _load(path)
    features = _features(document, name)
    recorded = _our_info(document, name)
    ours = recorded is not None
    info = recorded or {}
    parsed = [_parse(feature, index, len(features), name) for index, feature in enumerate(features)]

    slide_calls = [feature for feature in features if _kind(feature) == SLIDE_CALL_KIND]
    objects, annotations, notices = _choose_objects(features, parsed, name)

    offset = tuple(info.get("offset_yx") or (0, 0))
    shape = _labels_shape(image_shape, info, [parsed[index] for index in objects], offset, name)
    if shape is None:
        raise GeoJSONError(
            f"{name} holds no features: there are no cells to open. Export the cells again "
            "(blastscope's Export, or in QuPath: File > Export objects as GeoJSON)."
            if not features
            else f"{name} holds no cells to draw, only a slide call; open the file the "
            "cells were exported to."
        )
    plans = _fill_plans([parsed[index] for index in objects], shape, offset, name)

    measurements = [_measurements(features[index]) for index in objects]
    ids = _label_ids(measurements)
    labels = np.zeros(shape, dtype=np.int32)
    nucleus_labels = None
    for label, (cell, nucleus) in zip(ids, plans, strict=True):
        _paint(labels, cell, label)
        if nucleus is not None:
            if nucleus_labels is None:
                nucleus_labels = np.zeros(shape, dtype=np.int32)
            _paint(nucleus_labels, nucleus, label)

    rasterised = [features[index] for index in objects]
    if ours:
        cells = _our_table(info["columns"], rasterised, measurements, name)
    else:
        cells = _foreign_table(ids, rasterised, measurements, labels)
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
        "notices": notices,
    }
    if nucleus_labels is not None:
        metadata["nucleus_labels"] = nucleus_labels
    return labels, cells, metadata


def _choose_objects(
    features: list[dict[str, Any]], parsed: list[_Parsed], name: str
) -> tuple[list[int], list[dict[str, Any]], list[str]]:
    """(indices of the features to rasterise, annotations left out, notices): the detections
    and cells with an area, else the annotations with one (not the slide call). Features
    without an area are counted in a notice, or refused when nothing else is left."""
    with_area = [index for index, item in enumerate(parsed) if item.polygons]
    objects = [index for index in with_area if _object_type(features[index]) != "annotation"]
    if not objects:
        objects = [index for index in with_area if _kind(features[index]) != SLIDE_CALL_KIND]
    chosen = set(objects)
    annotations = [
        feature
        for index, feature in enumerate(features)
        if index not in chosen
        and _object_type(feature) == "annotation"
        and _kind(feature) != SLIDE_CALL_KIND
    ]
    without_area = Counter(item.kind for item in parsed if not item.polygons)
    if not without_area:
        return objects, annotations, []
    counts = ", ".join(f"{count} {kind}" for kind, count in sorted(without_area.items()))
    skipped = sum(without_area.values())
    summary = f"{skipped} of {len(features)} features have no area ({counts})"
    if not objects:
        raise GeoJSONError(
            f"{name}: {summary} and none is a Polygon or MultiPolygon, so there are no cells to "
            "draw; blastscope reads cell outlines: export the cells as polygons (in QuPath: "
            "detections or cells, File > Export objects as GeoJSON), or draw them as area "
            "annotations."
        )
    notice = (
        f"{name}: {summary} and were skipped: blastscope reads Polygon and MultiPolygon outlines."
    )
    return objects, annotations, [notice]


def _load(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GeoJSONError(f"No GeoJSON file at {path}: check the path.") from None
    except UnicodeDecodeError as error:
        raise GeoJSONError(
            f"{path.name} is not valid JSON ({error}); give a GeoJSON file (for example one "
            "exported from QuPath with File > Export objects as GeoJSON)."
        ) from error
    except OSError as error:
        raise GeoJSONError(f"Cannot read {path}: {error.strerror}.") from error
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise GeoJSONError(
            f"{path.name} is not valid JSON ({error}); give a GeoJSON file (for example one "
            "exported from QuPath with File > Export objects as GeoJSON)."
        ) from error
    except RecursionError:
        raise GeoJSONError(
            f"{path.name}: its JSON is nested too deeply to read (beyond Python's limit of "
            f"about {sys.getrecursionlimit()} levels; GeoJSON cells need 6): the file is "
            "damaged or not GeoJSON."
        ) from None


def _features(document: Any, name: str) -> list[dict[str, Any]]:
    if isinstance(document, list):
        candidates = document
    elif isinstance(document, dict) and document.get("type") == "FeatureCollection":
        candidates = document.get("features") or []
    elif isinstance(document, dict) and document.get("type") == "Feature":
        candidates = [document]
    else:
        raise GeoJSONError(
            f"{name} holds no GeoJSON features: expected a FeatureCollection, a Feature or a "
            "list of features (QuPath: File > Export objects as GeoJSON)."
        )
    if not isinstance(candidates, list):
        raise GeoJSONError(f"{name}: its 'features' is not a list; fix or re-export the file.")
    features = [item for item in candidates if isinstance(item, dict) and "geometry" in item]
    if len(features) != len(candidates):
        raise GeoJSONError(
            f"{name}: {len(candidates) - len(features)} of {len(candidates)} entries are not "
            "GeoJSON features (objects with a 'geometry'); fix or remove them."
        )
    return features


def _our_info(document: Any, name: str) -> dict[str, Any] | None:
    """blastscope's ``blastscope`` member, checked; None for other files."""
    info = document.get(METADATA_KEY) if isinstance(document, dict) else None
    if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
        return None
    info = dict(info)

    def damaged(key: str, expected: str) -> GeoJSONError:
        return GeoJSONError(
            f"{name}: its '{METADATA_KEY}' member is damaged: '{key}' must be {expected}, got "
            f"{info.get(key)!r:.80}; export the file again, or remove the '{METADATA_KEY}' "
            "member to read it as plain GeoJSON."
        )

    shape = info.get("image_shape")
    if shape is not None and _whole_pair(shape, minimum=1) is None:
        raise damaged("image_shape", "two positive whole numbers (rows, columns)")
    offset = info.get("offset_yx")
    if offset is not None and _whole_pair(offset, minimum=None) is None:
        raise damaged("offset_yx", "two whole numbers of pixels (rows, columns)")
    pixel_size = info.get("pixel_size_um")
    if pixel_size is not None and not (_is_number(pixel_size) and 0 < pixel_size < math.inf):
        raise damaged("pixel_size_um", "a positive number of µm per pixel, or null")
    columns = info.get("columns")
    try:
        usable = isinstance(columns, list) and all(
            isinstance(column, list)
            and len(column) == 2
            and all(isinstance(part, str) for part in column)
            and column_kind(*column)
            for column in columns
        )
    except (TypeError, ValueError):
        usable = False
    if not usable:
        raise damaged("columns", "a list of [name, dtype] pairs of the cells table")
    return info


def _whole_pair(value: Any, minimum: int | None) -> tuple[int, int] | None:
    """``value`` as two whole numbers (each at least ``minimum``), or None when it is not."""
    if not isinstance(value, (list, tuple, np.ndarray)) or len(value) != 2:
        return None
    if not all(_is_number(part) and math.isfinite(part) and part == int(part) for part in value):
        return None
    pair = (int(value[0]), int(value[1]))
    if minimum is not None and min(pair) < minimum:
        return None
    return pair


def _is_number(value: Any) -> bool:
    """A real number that is not a boolean (JSON's numbers, numpy's too)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _parse(feature: dict[str, Any], index: int, total: int, name: str) -> _Parsed:
    """A feature's geometry and nucleus, checked; errors name the file and the feature."""
    geometry = feature.get("geometry")
    try:
        part = "geometry"
        polygons = [] if geometry is None else geometry_polygons(geometry)
        nucleus = None
        if feature.get("nucleusGeometry") is not None:
            part = "nucleusGeometry"
            nucleus = geometry_polygons(feature["nucleusGeometry"])
    except GeoJSONError as error:
        raise GeoJSONError(
            f"{name}: {_describe(feature, index, total)}: its {part} {error}; fix or remove "
            "this feature."
        ) from None
    kind = NO_GEOMETRY if geometry is None else str(geometry.get("type"))
    return _Parsed(feature, index, total, polygons, nucleus, kind)


def _describe(feature: Mapping[str, Any], index: int, total: int) -> str:
    """``feature 3 of 10 (id '…', name '…')``: the feature as a user finds it in the file."""
    details = []
    if feature.get("id") is not None:
        details.append(f"id {str(feature['id'])[:60]!r}")
    if _properties(feature).get("name") is not None:
        details.append(f"name {str(_properties(feature)['name'])[:60]!r}")
    text = f"feature {index + 1} of {total}"
    return f"{text} ({', '.join(details)})" if details else text


def _labels_shape(
    requested: Sequence[int] | None,
    info: Mapping[str, Any],
    objects: list[_Parsed],
    offset: Sequence[float],
    name: str,
) -> tuple[int, int] | None:
    """The labels image's (Y, X): the caller's, the recorded one, else the objects' extent;
    None when there is neither a shape nor an object."""
    if requested is not None:
        shape = _whole_pair(requested, minimum=1)
        if shape is None:
            raise GeoJSONError(
                f"image_shape must be two positive whole numbers (rows, columns), got "
                f"{requested!r}."
            )
    elif info.get("image_shape"):
        shape = _whole_pair(info["image_shape"], minimum=1)
    else:
        rings = [ring for item in objects for polygon in item.polygons for ring in polygon]
        if not rings:
            return None
        extent_x = max(float(ring[:, 0].max()) for ring in rings) - offset[1]
        extent_y = max(float(ring[:, 1].max()) for ring in rings) - offset[0]
        shape = (max(1, math.ceil(extent_y)), max(1, math.ceil(extent_x)))
    height, width = shape
    if height * width > MAX_READ_PIXELS:
        raise GeoJSONError(
            f"{name}: the labels image would be {height} x {width} pixels "
            f"({height * width:,}), more than the {MAX_READ_PIXELS:,} a labels image may hold "
            "here; export a region of the slide (in QuPath, the objects of one annotation) "
            "instead."
        )
    return height, width


def _fill_plans(
    objects: list[_Parsed], shape: tuple[int, int], offset: Sequence[float], name: str
) -> list[tuple[FillPlan | None, FillPlan | None]]:
    """Each object's (cell, nucleus) fill, checked to lie near the image and to fit the
    budgets before any pixel is touched."""
    height, width = shape
    reach = max(height, width)
    cells = plan_fills([item.polygons for item in objects], shape, offset)
    nuclei = plan_fills([item.nucleus or [] for item in objects], shape, offset)
    pixels = crossings = 0
    for item, cell, nucleus in zip(objects, cells, nuclei, strict=True):
        for part, plan in (("geometry", cell), ("nucleusGeometry", nucleus)):
            if plan is None:
                continue
            low_x, low_y, high_x, high_y = plan.bounds
            if min(low_x, low_y) < -reach or high_x > width + reach or high_y > height + reach:
                raise GeoJSONError(
                    f"{name}: {item.where}: its {part} spans x {low_x + offset[1]:g} to "
                    f"{high_x + offset[1]:g} and y {low_y + offset[0]:g} to "
                    f"{high_y + offset[0]:g}, far outside the {height} x {width} pixel image "
                    "the objects belong to (coordinates are pixels, x = column, y = row): the "
                    "file's coordinates belong to another image or are not in pixels. Fix or "
                    "remove the feature, or read the file with the shape of its image."
                )
            pixels += plan.pixels
            crossings += plan.crossings
    if pixels > MAX_FILL_PIXELS or crossings > MAX_CROSSINGS:
        figure = (
            f"visit {pixels:,} pixels (the objects' bounding boxes within the image, summed; "
            f"at most {MAX_FILL_PIXELS:,})"
            if pixels > MAX_FILL_PIXELS
            else f"cross {crossings:,} pixel rows (at most {MAX_CROSSINGS:,})"
        )
        raise GeoJSONError(
            f"{name}: drawing its {len(objects)} objects in the {height} x {width} pixel image "
            f"would {figure}: the objects are large and overlap many times over. Keep the "
            "cells (detections) and remove the overlapping large annotations, or export a "
            "smaller region."
        )
    return list(zip(cells, nuclei, strict=True))


def _paint(labels: np.ndarray, plan: FillPlan | None, label: int) -> None:
    """Set the plan's pixels of ``labels`` to ``label`` (later objects paint over earlier)."""
    mask = fill(plan) if plan is not None else None
    if mask is not None:
        np.copyto(labels[plan.window], label, where=mask)


# --------------------------------------------------------------------------- properties


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
    """A feature's measurements (an object, or QuPath 0.2's list of {name, value}); numbers
    only (NaN kept, integers beyond int64 left out)."""
    raw = _properties(feature).get("measurements")
    if isinstance(raw, list):
        raw = {item.get("name"): item.get("value") for item in raw if isinstance(item, dict)}
    if not isinstance(raw, dict):
        return {}
    return {
        str(name): value
        for name, value in raw.items()
        if _is_number(value) and (isinstance(value, float) or abs(value) < 2**63)
    }


def _label_ids(measurements: list[dict[str, float | int]]) -> list[int]:
    labels = [values.get("label") for values in measurements]
    usable = all(
        _is_number(label) and float(label).is_integer() and 0 < label <= _INT32_MAX
        for label in labels
    )
    if usable and len(set(labels)) == len(labels):
        return [int(label) for label in labels]
    return list(range(1, len(measurements) + 1))


# --------------------------------------------------------------------------- tables


def _our_table(
    columns: list[list[str]],
    objects: list[dict[str, Any]],
    measurements: list[dict[str, float | int]],
    name: str,
) -> pd.DataFrame:
    strings = [_properties(feature).get("metadata") or {} for feature in objects]
    restored = {}
    for column, dtype in columns:
        numeric = pd.api.types.is_numeric_dtype(pd.api.types.pandas_dtype(dtype))
        numeric |= pd.api.types.is_bool_dtype(pd.api.types.pandas_dtype(dtype))
        source = measurements if numeric else strings
        values = [values.get(column) for values in source]
        try:
            restored[column] = restore_column(column, values, dtype)
        except (TypeError, ValueError, OverflowError) as error:
            raise GeoJSONError(
                f"{name}: the values of column {column!r} cannot be read back as {dtype} "
                f"({error}); export the file again, or remove its '{METADATA_KEY}' member to "
                "read it as plain GeoJSON."
            ) from None
    return pd.DataFrame(restored, columns=[column for column, _ in columns])


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
