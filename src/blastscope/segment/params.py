"""The settings of one segmentation run (:class:`SegmentationParams`) and their validation."""

from __future__ import annotations

import math
from dataclasses import dataclass

from blastscope.errors import BlastscopeError

SHIPPED_SEGMENTER = "smear-cellpose"
SHIPPED_NUCLEATED_MODEL = "smear-nucleated"
MAX_CELLPROB_THRESHOLD = 6.0
MAX_FLOW_THRESHOLD = 3.0


class SegmentationError(BlastscopeError):
    """Segmentation cannot run as asked; the message says why and what to do."""


@dataclass
class SegmentationParams:
    """Settings of one segmentation run (units: pixels of the analysed image unless named).

    - ``model``: shipped bundle name, bundle directory, Cellpose model name or Cellpose file.
    - ``diameter``: median cell diameter in pixels; ``None`` = from the pixel size when known
      (the model's diameter in µm / pixel size), else estimated (first pass, median mask).
    - ``flow_threshold`` (0-3), ``cellprob_threshold`` (-6..6): Cellpose's mask thresholds.
      ``cellprob_threshold`` defaults to -1 (Cellpose's own default is 0): chosen for the shipped
      smear model on 80 BCCD training fields, where it gave the tightest white-cell outlines
      (box IoU >= 0.7 recall 0.93 against 0.88 at 0).
    - ``normalize_percentiles``: per-channel (low, high) percentiles mapped to 0 and 1.
    - ``min_size_px``: masks smaller than this many pixels are dropped.
    - ``exclude_on_edges``: drop masks that touch the image border.
    - ``niter``: flow-following iterations at the network's scale (``None`` = 200, Cellpose's).
    - ``device``: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    - ``batch_size``: 224-px network patches per batch.
    - ``tile_size``: images larger than this (pixels, either side) are segmented in tiles.
    - ``tile_overlap_px``: halo of context around each tile; ``None`` = 3 cell diameters.
    - ``nucleated_model``: the ``nucleated`` classifier bundle (shipped name or folder) that
      sorts every object into red cell, platelet or white cell after segmentation
      (``is_nucleated``; :func:`blastscope.pipeline.sort_cells_steps`); ``None`` keeps the stain
      heuristic of :mod:`blastscope.cells`.
    """

    model: str = SHIPPED_SEGMENTER
    diameter: float | None = None
    flow_threshold: float = 0.4
    cellprob_threshold: float = -1.0
    normalize_percentiles: tuple[float, float] = (1.0, 99.0)
    min_size_px: int = 15
    exclude_on_edges: bool = False
    niter: int | None = None
    device: str = "auto"
    batch_size: int = 8
    tile_size: int = 1024
    tile_overlap_px: int | None = None
    nucleated_model: str | None = SHIPPED_NUCLEATED_MODEL

    def validate(self) -> None:
        """Raise :class:`SegmentationError` naming the first bad setting and its valid range."""
        if not isinstance(self.model, str) or not self.model.strip():
            raise SegmentationError(
                f"model must be a model name or path, got {self.model!r}; use "
                f"{SHIPPED_SEGMENTER!r} (shipped), a Cellpose name such as 'cyto3', or a path."
            )
        if self.diameter is not None and not (math.isfinite(self.diameter) and self.diameter > 0):
            raise SegmentationError(
                f"diameter must be a positive number of pixels, got {self.diameter}; give the "
                "typical cell diameter in pixels, or None to derive it from the pixel size."
            )
        _check_range("flow_threshold", self.flow_threshold, 0.0, MAX_FLOW_THRESHOLD)
        _check_range(
            "cellprob_threshold",
            self.cellprob_threshold,
            -MAX_CELLPROB_THRESHOLD,
            MAX_CELLPROB_THRESHOLD,
        )
        low, high = self.normalize_percentiles
        if not 0.0 <= low < high <= 100.0:
            raise SegmentationError(
                f"normalize_percentiles must satisfy 0 <= low < high <= 100, got "
                f"{self.normalize_percentiles}; the default is (1.0, 99.0)."
            )
        if self.min_size_px < 0:
            raise SegmentationError(
                f"min_size_px must be 0 or more pixels, got {self.min_size_px}."
            )
        if self.niter is not None and self.niter < 1:
            raise SegmentationError(
                f"niter must be a positive number of iterations or None, got {self.niter}."
            )
        if self.batch_size < 1:
            raise SegmentationError(f"batch_size must be at least 1, got {self.batch_size}.")
        if self.tile_size < 256:
            raise SegmentationError(
                f"tile_size must be at least 256 pixels, got {self.tile_size}; tiles smaller "
                "than a few cells cut too many of them."
            )
        if self.nucleated_model is not None and (
            not isinstance(self.nucleated_model, str) or not self.nucleated_model.strip()
        ):
            raise SegmentationError(
                f"nucleated_model must be a bundle name or folder, or None for the stain "
                f"heuristic, got {self.nucleated_model!r}."
            )
        if self.tile_overlap_px is not None and self.tile_overlap_px < 0:
            raise SegmentationError(
                f"tile_overlap_px must be 0 or more pixels, got {self.tile_overlap_px}; use "
                "None to derive it from the cell diameter."
            )


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
        raise SegmentationError(
            f"{name} must be between {low:g} and {high:g}, got {value}. "
            f"Defaults: flow_threshold 0.4, cellprob_threshold -1."
        )
