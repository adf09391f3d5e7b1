"""Polygon rings back to pixels: a scanline fill bounded by the image the labels belong to.

A pixel ``(row, col)`` is inside when its centre ``(col + 0.5, row + 0.5)`` lies inside the
rings (even-odd rule), which gives back exactly the pixels an outline traced on pixel corners
came from (see :mod:`blastscope.export.outlines`). The work is planned before any pixel is
touched: :func:`plan_fills` clips every side to the image, so its cost (:attr:`FillPlan.pixels`,
:attr:`FillPlan.crossings`) is known, and bounded by the image, whatever the coordinates;
:func:`fill` then needs one byte per pixel of the object's window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from blastscope.export.outlines import PolygonRings

CROSSINGS_PER_CHUNK = 1 << 20
"""Side crossings computed at a time (bounds the fill's temporary memory to about 80 MB)."""

Window = tuple[slice, slice]


@dataclass(slots=True)
class FillPlan:
    """The sides of some polygons, clipped to the image rows they cross.

    ``bounds`` (min x, min y, max x, max y) are the vertices' extent in image pixels (offset
    removed, not clipped); ``window`` the (rows, columns) of the image the polygons can cover,
    None when they lie outside it; ``starts`` / ``ends`` (N, 2) the ends ``[x, y]`` of the sides
    that cross a row's centre line within the window, ``first_row`` the first row each crosses
    and ``counts`` how many; ``crossings`` their sum.
    """

    bounds: tuple[float, float, float, float]
    window: Window | None
    starts: np.ndarray
    ends: np.ndarray
    first_row: np.ndarray
    counts: np.ndarray
    crossings: int

    @property
    def pixels(self) -> int:
        """Pixels of the window (what the fill visits)."""
        if self.window is None:
            return 0
        rows, columns = self.window
        return (rows.stop - rows.start) * (columns.stop - columns.start)


def plan_fill(
    polygons: Sequence[PolygonRings],
    shape: tuple[int, int],
    offset_yx: tuple[float, float] = (0, 0),
) -> FillPlan | None:
    """The fill of ``polygons`` (rings of ``[x, y]`` pixels, finite) in an image of ``shape``
    (Y, X) whose top-left pixel is at ``offset_yx``; None when there are no rings."""
    return plan_fills([polygons], shape, offset_yx)[0]


def plan_fills(
    objects: Sequence[Sequence[PolygonRings]],
    shape: tuple[int, int],
    offset_yx: tuple[float, float] = (0, 0),
) -> list[FillPlan | None]:
    """:func:`plan_fill` of each object's polygons, computed for all objects at once (a file of
    many small cells costs a few array operations, not a few per cell)."""
    rings = []
    owners = []
    for index, polygons in enumerate(objects):
        for polygon in polygons:
            rings.extend(polygon)
            owners.extend([index] * len(polygon))
    plans: list[FillPlan | None] = [None] * len(objects)
    if not rings:
        return plans
    starts = np.concatenate(rings)
    ends = np.concatenate([part for ring in rings for part in (ring[1:], ring[:1])])
    if offset_yx[0] or offset_yx[1]:
        starts = starts - (offset_yx[1], offset_yx[0])
        ends = ends - (offset_yx[1], offset_yx[0])
    # Each object's vertices are one run: where the runs start, and their extents.
    lengths = np.array([len(ring) for ring in rings])
    owner = np.repeat(np.array(owners), lengths)
    present = np.flatnonzero(np.diff(owner, prepend=-1))
    low = np.minimum.reduceat(starts, present, axis=0)
    high = np.maximum.reduceat(starts, present, axis=0)
    top, bottom = _clipped(low[:, 1], high[:, 1], shape[0])
    left, right = _clipped(low[:, 0], high[:, 0], shape[1])
    bottom = np.where(right > left, bottom, top)  # no columns: no rows either
    # A side crosses the centre line y = row + 0.5 of the rows in [ceil(low - 0.5),
    # ceil(high - 0.5)): half-open, so a vertex on a centre line counts once. Rows are clipped
    # to the object's window first, so that a side's cost is bounded by the image.
    run = np.repeat(np.arange(len(present)), np.diff(present, append=len(owner)))
    side_low = np.minimum(starts[:, 1], ends[:, 1])
    side_high = np.maximum(starts[:, 1], ends[:, 1])
    first_row = np.minimum(np.maximum(np.ceil(side_low - 0.5), top[run]), bottom[run])
    last_row = np.minimum(np.maximum(np.ceil(side_high - 0.5), top[run]), bottom[run])
    counts = (last_row - first_row).astype(np.int64)
    crossing = counts > 0
    starts, ends = starts[crossing], ends[crossing]
    first_row, counts = first_row[crossing].astype(np.int64), counts[crossing]
    kept = np.concatenate([[0], np.cumsum(crossing)])[np.append(present, len(owner))]
    totals = np.concatenate([[0], np.cumsum(counts)])[kept]
    for number, index in enumerate(owner[present].tolist()):
        bounds = (*low[number].tolist(), *high[number].tolist())
        sides = slice(kept[number], kept[number + 1])
        window = None
        if bottom[number] > top[number]:
            window = (
                slice(int(top[number]), int(bottom[number])),
                slice(int(left[number]), int(right[number])),
            )
        plans[index] = FillPlan(
            bounds,
            window,
            starts[sides],
            ends[sides],
            first_row[sides],
            counts[sides],
            int(totals[number + 1] - totals[number]),
        )
    return plans


def _clipped(low: np.ndarray, high: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The pixels ``[start, stop)`` of an axis of ``size`` that each ``[low, high]`` can
    cover (int64 arrays)."""
    start = np.clip(np.floor(low), 0, size).astype(np.int64)
    stop = np.maximum(np.clip(np.ceil(high), 0, size).astype(np.int64), start)
    return start, stop


def fill(plan: FillPlan) -> np.ndarray | None:
    """The window's bool mask of pixels whose centres lie inside the plan's polygons, or None
    when none does. Memory: one byte per window pixel plus a bounded chunk of crossings."""
    if plan.window is None:
        return None
    rows, columns = plan.window
    height, width = rows.stop - rows.start, columns.stop - columns.start
    toggles = np.zeros(height * width, dtype=np.uint8)
    for sides in _chunks(plan.counts):
        _toggle(plan, sides, toggles, rows.start, columns.start, width)
    # A pixel is inside when an odd number of crossings lie left of its centre; the running sum
    # wraps at 256, which keeps its parity.
    inside = toggles.reshape(height, width)
    np.cumsum(inside, axis=1, dtype=np.uint8, out=inside)
    inside &= 1
    mask = inside.view(bool)
    return mask if mask.any() else None


def _chunks(counts: np.ndarray) -> list[slice]:
    """Consecutive runs of sides with at most :data:`CROSSINGS_PER_CHUNK` crossings each (a
    side with more is a run of its own)."""
    totals = np.cumsum(counts)
    if not len(totals) or totals[-1] <= CROSSINGS_PER_CHUNK:
        return [slice(None)]
    runs = []
    begin = 0
    while begin < len(totals):
        limit = (totals[begin - 1] if begin else 0) + CROSSINGS_PER_CHUNK
        end = max(int(np.searchsorted(totals, limit, side="right")), begin + 1)
        runs.append(slice(begin, end))
        begin = end
    return runs


def _toggle(
    plan: FillPlan, sides: slice, toggles: np.ndarray, top: int, left: int, width: int
) -> None:
    """Count each crossing of the plan's ``sides`` at the first pixel right of it (mod 256)."""
    counts = plan.counts[sides]
    side = np.repeat(np.arange(len(counts)), counts)
    step = np.arange(len(side)) - np.repeat(np.cumsum(counts) - counts, counts)
    rows = plan.first_row[sides][side] + step
    (x0, y0), (x1, y1) = plan.starts[sides][side].T, plan.ends[sides][side].T
    crossing = x0 + (rows + 0.5 - y0) * (x1 - x0) / (y1 - y0)
    # The first pixel whose centre lies right of the crossing, clipped to the window's columns
    # (one past its right edge: a crossing there toggles no pixel of it).
    edge = np.minimum(np.maximum(crossing - 0.5, left - 1), left + width)
    column = np.floor(edge).astype(np.int64) + 1 - left
    keep = column < width
    np.add.at(toggles, (rows[keep] - top) * width + column[keep], 1)


def rasterise_polygons(
    polygons: Sequence[PolygonRings],
    shape: tuple[int, int],
    offset_yx: tuple[float, float] = (0, 0),
) -> tuple[Window, np.ndarray] | None:
    """Pixels of ``shape`` (Y, X) whose centres lie inside the polygons (even-odd rule).

    Vertices are ``[x, y]`` in pixels minus ``offset_yx``. Returns the window and its bool mask,
    or None when no pixel is covered.
    """
    plan = plan_fill(polygons, shape, offset_yx)
    mask = fill(plan) if plan is not None else None
    if mask is None:
        return None
    return plan.window, mask
