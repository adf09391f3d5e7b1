"""The cell diameter (pixels) and pixel size of a run: the pixel size used and where it came
from, the diameter trials of an image of unknown pixel size, and the cap on the enlargement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from blastscope.segment.backend import SegmenterBackend
from blastscope.segment.masks import MASKS_BY_BACKEND, _masks_at_scale
from blastscope.segment.params import SegmentationParams

ASSUMED_PIXEL_SIZE_UM = 0.1
"""µm per pixel assumed for a plain Cellpose model and an image without a pixel size (a 100x
oil objective on a common camera); bundles record their own default."""
DIAMETER_CANDIDATES = (0.5, 2.0, 0.25, 4.0)
"""Multiples of the default diameter tried when a trial at the default finds too few cells."""
ESTIMATE_NETWORK_PX = 512
"""Side (pixels at the network's scale) of the central crop a diameter trial runs on."""
TRIAL_NITER = 60
"""Flow iterations of a trial's masks: enough for their sizes (the segmentation's own masks
use the full count)."""
MAX_TRIALS = 4
"""Most trials at an estimate before the last estimate is taken as it is."""
AGREEMENT = 1.15
"""An estimate within this factor of its trial's diameter agrees with it (cells within 15% of
the network's size segment alike; quick masks measure real cells a few per cent small)."""
MAX_RESCALE = 4.0
"""Largest enlargement of an image for the network (``diam_mean`` / cell diameter in pixels)."""


def _pixel_size(backend: SegmenterBackend, pixel_size_um: float | None) -> tuple[float, str]:
    if pixel_size_um is not None:
        return float(pixel_size_um), "given"
    if backend.default_pixel_size_um is not None:
        return float(backend.default_pixel_size_um), "model's default pixel size"
    return ASSUMED_PIXEL_SIZE_UM, "assumed pixel size"


NetworkOutputs = tuple[np.ndarray, np.ndarray]
"""Flows (2, Y, X) and cell probability (Y, X) of one network pass."""


def _estimate_diameter(
    backend: SegmenterBackend,
    channels: np.ndarray,
    params: SegmentationParams,
    pixel_size_um: float,
) -> tuple[float, NetworkOutputs | None]:
    """Median cell diameter (pixels) of an image of unknown pixel size, and the network's
    outputs for the whole image at that diameter when a trial already made them (else None).

    Each trial runs the network at a trial diameter on a central crop of at most
    :data:`ESTIMATE_NETWORK_PX` network pixels a side (at most one tile) and computes quick
    masks (:data:`TRIAL_NITER` iterations, no flow check, which would drop the cells of a
    trial at the wrong scale); their median diameter times ``diam_mean / diam_labels`` (the
    network's size over the median mask size it saw in training) is the trial's estimate.
    The first trial runs at the model's default diameter (then at :data:`DIAMETER_CANDIDATES`
    until one finds cells). Cells shown smaller than the network's size are measured well, so
    an estimate at most :data:`AGREEMENT` times its trial's diameter is taken; a larger one
    (the network splits cells shown too large) is tried in turn, up to :data:`MAX_TRIALS`
    trials. An estimate that agrees with a whole-image trial keeps that trial's diameter.
    """
    default = _default_diameter(backend, pixel_size_um)
    trial = None
    for factor in (1.0, *DIAMETER_CANDIDATES):
        trial = _diameter_trial(backend, channels, params, default * factor)
        if trial is not None:
            break
    if trial is None:
        return float(default), None
    for _ in range(MAX_TRIALS - 1):
        if trial.estimate <= trial.diameter_px * AGREEMENT:
            break
        trial = _diameter_trial(backend, channels, params, trial.estimate) or trial
    if trial.whole_image and trial.inconsistency <= math.log(AGREEMENT):
        return trial.diameter_px, trial.outputs
    return trial.estimate, None


@dataclass
class _Trial:
    diameter_px: float
    estimate: float
    whole_image: bool
    outputs: NetworkOutputs

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
    quick = replace(params, flow_threshold=0.0)
    labels = _masks_at_scale(
        compute, tile_dP, tile_prob, quick, mask_scale, TRIAL_NITER, backend.device
    )
    sizes = np.bincount(labels.ravel())[1:] / (labels.shape[0] / height) ** 2
    sizes = sizes[(sizes > 0) & (sizes >= params.min_size_px)]
    if len(sizes) < 3:
        return None
    median = float(np.median(np.sqrt(sizes))) / (math.sqrt(math.pi) / 2)
    return _Trial(
        diameter_px=float(diameter_px),
        estimate=median * backend.diam_mean / backend.diam_labels,
        whole_image=(crop_height, crop_width) == (height, width),
        outputs=(tile_dP, tile_prob),
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
