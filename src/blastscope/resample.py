"""Resizing images and label images to a shape: the one implementation of each, used by
segmentation (network scale <-> image scale) and by the segmenter's training data."""

from __future__ import annotations

import cv2
import numpy as np


def scaled_shape(shape: tuple[int, ...], factor: float) -> tuple[int, int]:
    """(Y, X) of ``shape`` scaled by ``factor``, rounded, at least 1 pixel a side."""
    return max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor))


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``image`` (Y, X) or (Y, X, C) resized to ``shape`` (Y, X): area averaging when it
    shrinks, bilinear otherwise; dtype kept (cv2: uint8 or float32)."""
    interpolation = cv2.INTER_AREA if shape[0] < image.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(image, (shape[1], shape[0]), interpolation=interpolation)


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of labels (Y, X) to ``shape`` (pixel centres map to centres, as
    :func:`resize_image` maps them); dtype kept."""
    rows = ((np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0]).astype(int)
    cols = ((np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1]).astype(int)
    rows = rows.clip(0, labels.shape[0] - 1)
    cols = cols.clip(0, labels.shape[1] - 1)
    return labels[rows[:, None], cols[None, :]]
