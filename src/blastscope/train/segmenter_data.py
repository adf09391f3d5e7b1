"""The segmenter's training data: BCCD and synthetic fields at the network's pixel size, with
labels, per-pixel loss weights and Cellpose's flow targets (see
:mod:`blastscope.train.segmenter`)."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from blastscope.progress import Progress
from blastscope.resample import resize_image, resize_labels, scaled_shape
from blastscope.samples import BCCD_PIXEL_SIZE_UM
from blastscope.train.bccd_masks import bccd_root, derive_masks, read_fields, read_split

if TYPE_CHECKING:
    from blastscope.train.segmenter import SegmenterTrainingConfig

SYNTHETIC_PRESETS = ("default", "blood")


@dataclass
class TrainingImage:
    """One training image at the network's pixel size: (Y, X, 3) uint8, labels, loss weight."""

    source: str
    image: np.ndarray
    labels: np.ndarray
    weight: np.ndarray


def training_images(
    config: SegmenterTrainingConfig,
) -> Generator[Progress, None, list[TrainingImage]]:
    """The BCCD training fields (masks derived from their boxes) and the synthetic fields of
    :data:`SYNTHETIC_PRESETS`, resampled to the network's pixel size; yields a Progress per
    field. Images without any cell are left out."""
    from blastscope.synthetic import generate_field

    root = bccd_root(config.bccd)
    if config.bccd_list is not None:
        field_ids = Path(config.bccd_list).read_text(encoding="utf-8").split()
    else:
        field_ids = read_split(root, "train")
    if config.bccd_fields is not None:
        field_ids = field_ids[: config.bccd_fields]
    total = len(field_ids) + config.synthetic_fields * len(SYNTHETIC_PRESETS)
    images: list[TrainingImage] = []
    done = 0
    for bccd_field in read_fields(root, field_ids):
        labels, weight = derive_masks(bccd_field.image, bccd_field.boxes)
        factor = BCCD_PIXEL_SIZE_UM / config.net_pixel_size_um
        images.append(
            TrainingImage(
                f"bccd:{bccd_field.field_id}",
                _rescale_image(bccd_field.image, factor),
                _rescale_labels(labels, factor),
                _rescale_image(weight, factor),
            )
        )
        done += 1
        yield Progress("data", done, total, bccd_field.field_id)
    side = config.synthetic_size_px
    for preset_index, preset in enumerate(SYNTHETIC_PRESETS):
        for index in range(config.synthetic_fields):
            seed = config.seed * 10_000 + preset_index * 1_000 + index
            synthetic = generate_field(seed, preset, shape=(side, side))
            factor = synthetic.pixel_size_um / config.net_pixel_size_um
            labels = _rescale_labels(synthetic.labels, factor)
            images.append(
                TrainingImage(
                    f"synthetic:{preset}:{seed}",
                    _rescale_image(synthetic.image, factor),
                    labels,
                    np.ones(labels.shape, np.float32),
                )
            )
            done += 1
            yield Progress("data", done, total, f"synthetic {preset} {seed}")
    return [item for item in images if item.labels.max() > 0]


def _rescale_image(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` (Y, X[, C]) resized by ``factor`` (area averaging when shrinking)."""
    return resize_image(image, scaled_shape(image.shape, factor))


def _rescale_labels(labels: np.ndarray, factor: float) -> np.ndarray:
    """Labels (Y, X) resized by ``factor`` (nearest neighbour, aligned with
    :func:`_rescale_image`), as int32."""
    return resize_labels(labels, scaled_shape(labels.shape, factor)).astype(np.int32)


def median_diameter(labels: np.ndarray) -> float:
    """Cellpose's diameter: the median over masks of 2 sqrt(area / pi) (pixels)."""
    counts = np.bincount(labels.ravel())[1:]
    counts = counts[counts > 0]
    return float(np.median(np.sqrt(counts)) / (np.sqrt(np.pi) / 2)) if len(counts) else 0.0


def flow_targets(images: list[TrainingImage], device: torch.device) -> list[np.ndarray]:
    """Per image (4, Y, X): cell mask, loss weight, Y flow, X flow (Cellpose's flow targets)."""
    from cellpose import dynamics

    flows = dynamics.labels_to_flows([item.labels.copy() for item in images], device=device)
    return [
        np.stack([flow[1], item.weight, flow[2], flow[3]]).astype(np.float32)
        for flow, item in zip(flows, images, strict=True)
    ]
