"""Masks from the network's outputs: Cellpose 3's flow dynamics (:func:`cellpose3_masks`,
one entry of :data:`MASKS_BY_BACKEND` per backend), the mask scale and size filter of a
tile (``_masks``) and the worker thread a stage waits in for them (``_in_background``).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import torch
from skimage.segmentation import expand_labels, relabel_sequential

from blastscope.progress import Progress
from blastscope.resample import resize_image, resize_labels
from blastscope.segment.params import SegmentationParams

T = TypeVar("T")

DEFAULT_NITER = 200


def cellpose3_masks(
    dP: np.ndarray,
    cellprob: np.ndarray,
    *,
    flow_threshold: float,
    cellprob_threshold: float,
    niter: int,
    device: torch.device,
) -> np.ndarray:
    """Cellpose 3's flow dynamics: flows (2, Y, X), logits (Y, X) -> labels (Y, X) int32.

    Holes are filled; small masks are left to the caller. Cellpose's quality check (drop a
    mask whose own flows differ from the network's by more than ``flow_threshold``) spares
    masks that touch the array's border: the network points a cut cell's flows at the centre
    of the whole cell, outside the array, so the check would drop every cell cut by the edge.
    """
    from cellpose import dynamics, metrics

    dP = dP.astype(np.float32)
    seeds_logger = logging.getLogger(dynamics.__name__)
    with warnings.catch_warnings(), _without(seeds_logger, NO_SEEDS_MESSAGE):
        # torch warns on every sparse tensor Cellpose builds; nothing for a user to act on.
        warnings.filterwarnings("ignore", message="Sparse invariant checks")
        labels = dynamics.resize_and_compute_masks(
            dP,
            cellprob.astype(np.float32),
            niter=niter,
            cellprob_threshold=cellprob_threshold,
            flow_threshold=0.0,
            interp=True,
            min_size=-1,
            max_size_fraction=0.4,
            device=device,
        ).astype(np.int32)
        if flow_threshold > 0 and labels.any():
            # flow_error averages over ids 1..max: a gap in the ids (a mask dropped by size)
            # would divide by zero.
            labels = relabel_sequential(labels)[0]
            errors, _ = metrics.flow_error(labels, dP, device=device)
            bad = np.zeros(labels.max() + 1, dtype=bool)
            bad[1:] = errors > flow_threshold
            border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
            bad[np.unique(border)] = False
            if bad.any():
                labels = relabel_sequential(np.where(bad[labels], 0, labels))[0]
    return labels


NO_SEEDS_MESSAGE = "no seeds found"
"""Cellpose logs it for every tile or field without a cell (background tiles of a field that has
cells too); blastscope reports the cells it found instead."""


class _DropMessages(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


@contextmanager
def _without(logger: logging.Logger, text: str) -> Iterator[None]:
    """``logger`` without the records whose message contains ``text``, for the duration."""
    dropping = _DropMessages(text)
    logger.addFilter(dropping)
    try:
        yield
    finally:
        logger.removeFilter(dropping)


MASKS_BY_BACKEND = {"cellpose3": cellpose3_masks}
"""Mask computation of each backend, for :func:`recompute_masks` (no network needed)."""


MASKS_POLL_S = 0.1
"""How often a stage waiting for its masks yields (and so how soon a Cancel is seen)."""


def _in_background(
    waiting: Progress, function: Callable[..., T], *args: Any
) -> Generator[Progress, None, T]:
    """``function(*args)`` in a worker thread, yielding ``waiting`` every :data:`MASKS_POLL_S`
    until it is done; closing the generator returns at once and leaves the thread to finish
    alone, its result dropped. For the steps that are one opaque call (Cellpose's masks)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blastscope-masks")
    try:
        future = pool.submit(function, *args)
        yield waiting
        while True:
            try:
                return future.result(timeout=MASKS_POLL_S)
            except FutureTimeout:
                yield waiting
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _masks(
    compute: Callable[..., np.ndarray],
    dP: np.ndarray,
    cellprob: np.ndarray,
    params: SegmentationParams,
    mask_scale: float,
    niter: int,
    device: torch.device,
) -> np.ndarray:
    """Labels (Y, X) from network outputs, computed at the network's scale when it is coarser.

    Following the flows costs pixels x iterations, so for an image finer than the network's
    scale the outputs are shrunk by ``mask_scale`` (as Cellpose does with ``resample=False``),
    the masks computed there with ``niter`` iterations and enlarged back (outlines redrawn on
    the full-resolution cell probability); masks under ``min_size_px`` image pixels are then
    dropped.
    """
    labels = _masks_at_scale(compute, dP, cellprob, params, mask_scale, niter, device)
    if labels.shape != cellprob.shape:
        labels = _smooth_enlarge(labels, cellprob, params.cellprob_threshold, mask_scale)
    if params.min_size_px > 0 and labels.any():
        sizes = np.bincount(labels.ravel())
        small_ids = sizes < params.min_size_px
        small_ids[0] = False
        labels = np.where(small_ids[labels], 0, labels)
    return labels


def _masks_at_scale(
    compute: Callable[..., np.ndarray],
    dP: np.ndarray,
    cellprob: np.ndarray,
    params: SegmentationParams,
    mask_scale: float,
    niter: int,
    device: torch.device,
) -> np.ndarray:
    """Labels from network outputs shrunk by ``mask_scale`` (the network's scale when it is
    coarser than the image), not enlarged back."""
    height, width = cellprob.shape
    small = (max(1, round(height * mask_scale)), max(1, round(width * mask_scale)))
    if small != (height, width):
        dP = np.stack([resize_image(channel, small) for channel in dP.astype(np.float32)])
        cellprob = resize_image(cellprob.astype(np.float32), small)
    return compute(
        dP,
        cellprob,
        flow_threshold=params.flow_threshold,
        cellprob_threshold=params.cellprob_threshold,
        niter=niter,
        device=device,
    )


def _smooth_enlarge(
    labels: np.ndarray, cellprob: np.ndarray, cellprob_threshold: float, mask_scale: float
) -> np.ndarray:
    """Enlarge labels computed at the network's scale to ``cellprob``'s (Y, X) shape.

    Nearest-neighbour enlargement gives blocky outlines, so each cell's outer edge is redrawn
    along the full-resolution cell probability: pixels below ``cellprob_threshold`` are cleared
    and pixels above it within one enlarged block of a cell join that cell.
    """
    enlarged = resize_labels(labels, cellprob.shape)
    foreground = cellprob.astype(np.float32) > cellprob_threshold
    enlarged[~foreground] = 0
    grown = expand_labels(enlarged, distance=math.ceil(1.0 / mask_scale))
    return np.where(foreground & (enlarged == 0), grown, enlarged)
