"""Outlines of labelled objects: a mask traced to polygon rings, and rings to GeoJSON geometry.

Outlines run on pixel corners (every vertex an integer), so pixel ``(row, col)`` covers the square
``[col, col+1] x [row, row+1]`` and a polygon's area equals its pixel count. Pixels that touch only
at a corner are separate pieces (4-connectivity), so every ring is simple: a cell in several
pieces is a MultiPolygon, background enclosed by a cell is an interior ring (a hole), and rings
meet at most at single corner points (valid in the OGC sense). Shells run counter-clockwise and
holes clockwise in the x-right, y-up sense of the shoelace formula (RFC 7946).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

# Directions of boundary edges: east, south, west, north (y grows downwards).
_DY = (0, 1, 0, -1)
_DX = (1, 0, -1, 0)

Ring = np.ndarray  # (N, 2) float or int vertices [x, y], not repeating the first
PolygonRings = list[Ring]  # shell first, then holes


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


SPARSE_IDS_ABOVE = 2**20
"""Ids above this (a whole slide's tile x 2**20 + local id) are windowed through their ranks."""


def label_windows(labels: np.ndarray) -> dict[int, tuple[slice, ...]]:
    """The bounding window of every label present in ``labels`` (0 is background). Memory
    follows the labels present, not the largest id: a whole slide's tile holds ids in the
    hundreds of millions (``scipy.ndimage.find_objects`` would allocate per id)."""
    if labels.size == 0 or int(labels.max(initial=0)) <= SPARSE_IDS_ABOVE:
        return {
            index + 1: window
            for index, window in enumerate(ndi.find_objects(labels))
            if window is not None
        }
    present = np.unique(labels)
    present = present[present > 0]
    ranks = np.searchsorted(present, labels) + 1
    ranks[labels <= 0] = 0
    windows = ndi.find_objects(ranks)
    return {int(label): window for label, window in zip(present, windows, strict=True)}


def labels_geometries(
    labels: np.ndarray, label_ids: Sequence[int], offset_yx: tuple[int, int] = (0, 0)
) -> dict[int, dict[str, Any] | None]:
    """GeoJSON geometry of each label in ``label_ids`` (None when it has no pixels).

    ``labels`` is (Y, X) integers; coordinates are ``[x, y]`` pixel corners plus ``offset_yx``.
    """
    windows = label_windows(labels)
    geometries: dict[int, dict[str, Any] | None] = {}
    for label in label_ids:
        window = windows.get(int(label))
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


def _rings_of(geometry: dict[str, Any]) -> list[list[np.ndarray]]:
    """A Polygon's or MultiPolygon's rings as arrays of [x, y], per polygon (shell, holes)."""
    polygons = geometry["coordinates"]
    if geometry["type"] == "Polygon":
        polygons = [polygons]
    return [[np.asarray(ring, dtype=np.float64) for ring in rings] for rings in polygons]


def geometry_centroid(geometry: dict[str, Any]) -> tuple[float, float]:
    """The area centroid ``(x, y)`` of a Polygon or MultiPolygon (holes subtracted): for an
    outline on pixel corners, the mean of its pixels' centres."""
    total, moment_x, moment_y = 0.0, 0.0, 0.0
    for rings in _rings_of(geometry):
        for ring in rings:
            x, y = ring[:-1, 0], ring[:-1, 1]
            x_next, y_next = ring[1:, 0], ring[1:, 1]
            cross = x * y_next - x_next * y
            total += cross.sum() / 2
            moment_x += ((x + x_next) * cross).sum() / 6
            moment_y += ((y + y_next) * cross).sum() / 6
    if total == 0:
        first = _rings_of(geometry)[0][0]
        return float(first[:, 0].mean()), float(first[:, 1].mean())
    return moment_x / total, moment_y / total


def simplified_geometry(geometry: dict[str, Any], tolerance_px: float) -> dict[str, Any]:
    """A Polygon or MultiPolygon with each ring thinned by Douglas-Peucker to the vertices that
    keep it within ``tolerance_px`` of the outline (a subset: corners stay integers); a hole
    that would collapse is dropped, a shell keeps at least its first 3 distinct vertices."""
    import cv2

    polygons = []
    for rings in _rings_of(geometry):
        kept = []
        for position, ring in enumerate(rings):
            open_ring = ring[:-1].astype(np.float32).reshape(-1, 1, 2)
            thinned = cv2.approxPolyDP(open_ring, tolerance_px, closed=True).reshape(-1, 2)
            if len(thinned) < 3:
                if position:  # a hole smaller than the tolerance
                    continue
                thinned = ring[:3]
            kept.append(_closed(thinned.astype(np.int64) if _integral(ring) else thinned))
        polygons.append(kept)
    if geometry["type"] == "Polygon":
        return {"type": "Polygon", "coordinates": polygons[0]}
    return {"type": "MultiPolygon", "coordinates": polygons}


def _integral(ring: np.ndarray) -> bool:
    return bool(np.all(ring == np.round(ring)))
