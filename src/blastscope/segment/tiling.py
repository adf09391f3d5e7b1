"""Tiles of a large image: the grid of cores, the halo, the core's objects pasted into the
whole image and the labels finished (edge objects dropped, relabelled 1..N).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import ndimage as ndi

from blastscope.segment.params import SegmentationParams

HALO_CELL_DIAMETERS = 3.0


def _halo(params: SegmentationParams, diameter_px: float) -> int:
    if params.tile_overlap_px is not None:
        return int(params.tile_overlap_px)
    return math.ceil(HALO_CELL_DIAMETERS * diameter_px)


Box = tuple[slice, slice]


def _tile_grid(shape: tuple[int, int], tile_size: int) -> list[Box]:
    """Tile cores that partition an image of ``shape`` into near-equal tiles <= tile_size."""
    height, width = shape
    rows = np.linspace(0, height, math.ceil(height / tile_size) + 1).round().astype(int)
    cols = np.linspace(0, width, math.ceil(width / tile_size) + 1).round().astype(int)
    return [
        (slice(int(r0), int(r1)), slice(int(c0), int(c1)))
        for r0, r1 in itertools.pairwise(rows)
        for c0, c1 in itertools.pairwise(cols)
    ]


def _expand(core: Box, halo: int, shape: tuple[int, int]) -> Box:
    rows, cols = core
    return (
        slice(max(0, rows.start - halo), min(shape[0], rows.stop + halo)),
        slice(max(0, cols.start - halo), min(shape[1], cols.stop + halo)),
    )


def _inner(core: Box, region: Box) -> Box:
    """The core's position inside its expanded region."""
    return tuple(
        slice(c.start - r.start, c.stop - r.start) for c, r in zip(core, region, strict=True)
    )


def _paste_core_objects(
    labels: np.ndarray, tile_labels: np.ndarray, core: Box, region: Box
) -> None:
    """Paste the objects of ``tile_labels`` whose centroid lies in ``core`` onto free pixels."""
    count = int(tile_labels.max())
    if count == 0:
        return
    ids = np.arange(1, count + 1)
    rows, cols = np.indices(tile_labels.shape)
    area = ndi.sum_labels(np.ones(tile_labels.shape), tile_labels, ids)
    present = area > 0
    centre_y = ndi.sum_labels(rows, tile_labels, ids)[present] / area[present] + region[0].start
    centre_x = ndi.sum_labels(cols, tile_labels, ids)[present] / area[present] + region[1].start
    inside = (
        (centre_y >= core[0].start - 0.5)
        & (centre_y < core[0].stop - 0.5)
        & (centre_x >= core[1].start - 0.5)
        & (centre_x < core[1].stop - 0.5)
    )
    keep = np.zeros(count + 1, bool)
    keep[ids[present][inside]] = True
    offset = int(labels.max())
    target = labels[region]
    mask = keep[tile_labels] & (target == 0)
    target[mask] = tile_labels[mask] + offset


def _finish_labels(labels: np.ndarray, exclude_on_edges: bool) -> np.ndarray:
    if exclude_on_edges and labels.any():
        edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        labels = np.where(np.isin(labels, edge[edge > 0]), 0, labels)
    present = np.unique(labels)
    present = present[present > 0]
    lookup = np.zeros(int(labels.max()) + 1, np.int32)
    lookup[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    return lookup[labels]
