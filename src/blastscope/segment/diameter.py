"""The cell diameter (pixels) and pixel size of a run: the pixel size used and where it came
from, the diameter trials of an image of unknown pixel size, and the cap on the enlargement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from blastscope.segment.backend import SegmenterBackend
from blastscope.segment.masks import DEFAULT_NITER, MASKS_BY_BACKEND, _masks
from blastscope.segment.params import SegmentationParams

ASSUMED_PIXEL_SIZE_UM = 0.1
"""µm per pixel assumed for a plain Cellpose model and an image without a pixel size (a 100x
oil objective on a common camera); bundles record their own default."""
DIAMETER_CANDIDATES = (1.0, 0.5, 2.0, 0.25, 4.0)
"""Multiples of the default diameter tried when estimating it (first consistent one wins)."""
ESTIMATE_NETWORK_PX = 512
"""Side (pixels at the network's scale) of the central crop a diameter trial runs on."""
MAX_RESCALE = 4.0
"""Largest enlargement of an image for the network (``diam_mean`` / cell diameter in pixels)."""


def _pixel_size(backend: SegmenterBackend, pixel_size_um: float | None) -> tuple[float, str]:
    if pixel_size_um is not None:
        return float(pixel_size_um), "given"
    if backend.default_pixel_size_um is not None:
        return float(backend.default_pixel_size_um), "model's default pixel size"
    return ASSUMED_PIXEL_SIZE_UM, "assumed pixel size"


Outputs = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Flows (2, Y, X), cell probability (Y, X) and masks (Y, X) of one network pass."""


def _estimate_diameter(
    backend: SegmenterBackend,
    channels: np.ndarray,
    params: SegmentationParams,
    pixel_size_um: float,
) -> tuple[float, Outputs | None]:
    """Median cell diameter (pixels) of an image of unknown pixel size, and the outputs of the
    whole image at that diameter when a trial already made them (else None).

    Each trial runs the network at a trial diameter on a central crop of at most
    :data:`ESTIMATE_NETWORK_PX` network pixels a side (at most one tile); the median diameter
    of its masks times ``diam_mean / diam_labels`` (the network's size over the median mask size
    it saw in training) is that trial's estimate. Trials start at the model's default diameter
    and go through :data:`DIAMETER_CANDIDATES` until one is self-consistent (estimate within
    15% of the trial); the most consistent trial's estimate is then refined by one more pass
    when it is more than 10% off. A network shown cells far from its size finds few or wrong
    masks, hence the trials.
    """
    default = _default_diameter(backend, pixel_size_um)
    trials = []
    for factor in DIAMETER_CANDIDATES:
        trial = _diameter_trial(backend, channels, params, default * factor)
        if trial is None:
            continue
        trials.append(trial)
        if trial.inconsistency < math.log(1.15):
            break
    if not trials:
        return float(default), None
    best = min(trials, key=lambda trial: trial.inconsistency)
    if best.inconsistency > math.log(1.1):
        best = _diameter_trial(backend, channels, params, best.estimate) or best
    if best.whole_image and best.inconsistency <= math.log(1.1):
        return best.diameter_px, best.outputs
    return best.estimate, None


@dataclass
class _Trial:
    diameter_px: float
    estimate: float
    whole_image: bool
    outputs: Outputs

    @property
    def inconsistency(self) -> float:
        return abs(math.log(self.estimate / self.diameter_px))


def _diameter_trial(
    backend: SegmenterBackend, channels: np.ndarray, params: SegmentationParams, diameter_px: float
) -> _Trial | None:
    """One pass at ``diameter_px`` on a central crop; None if it finds under 3 cells."""
    height, width = channels.shape[:2]
    network_diameter = _network_diameter(backend, diameter_px)
    side = min(
        params.tile_size, math.ceil(ESTIMATE_NETWORK_PX * network_diameter / backend.diam_mean)
    )
    crop_height, crop_width = min(height, side), min(width, side)
    y0, x0 = (height - crop_height) // 2, (width - crop_width) // 2
    crop = channels[y0 : y0 + crop_height, x0 : x0 + crop_width]
    tile_dP, tile_prob = backend.network_outputs(crop, network_diameter, params.batch_size)
    mask_scale = min(1.0, backend.diam_mean / diameter_px)
    compute = MASKS_BY_BACKEND[backend.backend]
    niter = params.niter or DEFAULT_NITER
    labels = _masks(compute, tile_dP, tile_prob, params, mask_scale, niter, backend.device)
    sizes = np.bincount(labels.ravel())[1:]
    sizes = sizes[sizes > 0]
    if len(sizes) < 3:
        return None
    median = float(np.median(np.sqrt(sizes))) / (math.sqrt(math.pi) / 2)
    return _Trial(
        diameter_px=float(diameter_px),
        estimate=median * backend.diam_mean / backend.diam_labels,
        whole_image=(crop_height, crop_width) == (height, width),
        outputs=(tile_dP, tile_prob, labels),
    )


def _default_diameter(backend: SegmenterBackend, pixel_size_um: float) -> float:
    """The model's cell diameter in pixels at ``pixel_size_um`` (its ``diam_mean`` if unknown)."""
    if backend.diameter_um is not None:
        return backend.diameter_um / pixel_size_um
    return backend.diam_mean


def _network_diameter(backend: SegmenterBackend, diameter_px: float) -> float:
    """The diameter handed to the network: ``diameter_px``, but at most :data:`MAX_RESCALE`
    times smaller than the network's ``diam_mean`` (so the image is enlarged at most that)."""
    return max(float(diameter_px), backend.diam_mean / MAX_RESCALE)
