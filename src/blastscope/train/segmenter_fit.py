"""Fitting the segmenter: the network, the stain augmentation, the weighted Cellpose loss and the
training loop with its learning-rate schedule (see :mod:`blastscope.train.segmenter`)."""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from blastscope.progress import Progress
from blastscope.segment import normalize_channels
from blastscope.train.segmenter_data import TrainingImage

if TYPE_CHECKING:
    from blastscope.train.segmenter import SegmenterTrainingConfig

NORMALIZE_PERCENTILES = (1.0, 99.0)


def new_net(widths: tuple[int, ...], diam_mean: float, diam_labels: float) -> torch.nn.Module:
    """A fresh Cellpose 3 ``CPnet`` of ``widths`` (RGB in, flows and cell probability out) with
    its mean and label diameters (pixels at the network's pixel size) set."""
    from cellpose.resnet_torch import CPnet

    net = CPnet(list(widths), 3, sz=3, mkldnn=False, max_pool=True, diam_mean=diam_mean)
    net.diam_labels.data.fill_(diam_labels)
    return net


def augment_stain(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stain, colour, blur and noise augmentation of one RGB field (Y, X, 3) uint8 -> float32.

    In optical density (relative to the field's background): each channel scaled by
    ``U(0.75, 1.3)``, the whole stain by ``U(0.7, 1.35)``, channels mixed by ``I + N(0, 0.06)``;
    the background colour scaled per channel by ``U(0.9, 1.05)``; then a Gaussian blur
    (sigma ``U(0, 1.2)`` px, half the time) and camera noise (sd ``U(0, 4)`` in 8-bit units).
    """
    from blastscope.cells import background_rgb

    background = background_rgb(image)
    density = np.log(background / np.maximum(image.astype(np.float32), 1.0)).clip(0, None)
    mix = np.eye(3, dtype=np.float32) + rng.normal(0, 0.06, (3, 3)).astype(np.float32)
    scale = rng.uniform(0.75, 1.3, 3).astype(np.float32) * rng.uniform(0.7, 1.35)
    density = (density @ mix.T) * scale
    new_background = background * rng.uniform(0.9, 1.05, 3).astype(np.float32)
    out = np.minimum(new_background, 255.0) * np.exp(-density.clip(0, None))
    if rng.random() < 0.5:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.05, 1.2))
    out = out + rng.normal(0, rng.uniform(0, 4), out.shape).astype(np.float32)
    return out.clip(0, 255).astype(np.float32)


def weighted_cellpose_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cellpose's loss with a per-pixel weight; target (N, 4, Y, X) as in
    :func:`~blastscope.train.segmenter_data.flow_targets`.

    Flow term: mean squared error against 5x the flows, halved; cell term: BCE on the logits.
    """
    weight = target[:, 1]
    flow_error = ((prediction[:, :2] - 5.0 * target[:, 2:]) ** 2).mean(dim=1) / 2.0
    cell = F.binary_cross_entropy_with_logits(
        prediction[:, 2], (target[:, 0] > 0.5).float(), reduction="none"
    )
    return ((flow_error + cell) * weight).sum() / weight.sum().clamp(min=1.0)


def train_network(
    net: torch.nn.Module,
    images: list[TrainingImage],
    targets: list[np.ndarray],
    config: SegmenterTrainingConfig,
    device: torch.device,
) -> Generator[Progress, None, list[float]]:
    """Train ``net`` on ``images`` and their flow ``targets`` for ``config.epochs`` epochs
    (stain augmentation, then Cellpose's rotation, flip, scale and crop); yields a Progress per
    epoch and returns the mean loss of each epoch. Leaves ``net`` in eval mode."""
    from cellpose import transforms

    optimizer = torch.optim.AdamW(
        net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    batches_per_epoch = math.ceil(len(images) / config.batch_size)
    total_steps = config.epochs * batches_per_epoch
    warmup = max(1, min(10 * batches_per_epoch, total_steps // 10))
    rng = np.random.default_rng(config.seed)
    losses = []
    step = 0
    for epoch in range(config.epochs):
        # Cellpose's random_rotate_and_resize draws from numpy's global generator.
        np.random.seed(config.seed * 1000 + epoch)  # noqa: NPY002
        order = rng.permutation(len(images))
        net.train()
        epoch_loss = 0.0
        for start in range(0, len(order), config.batch_size):
            indices = order[start : start + config.batch_size]
            inputs = [
                normalize_channels(
                    augment_stain(images[i].image, rng), NORMALIZE_PERCENTILES
                ).transpose(2, 0, 1)
                for i in indices
            ]
            crops, crop_targets = transforms.random_rotate_and_resize(
                inputs,
                Y=[targets[i] for i in indices],
                scale_range=config.scale_range,
                xy=(config.crop_px, config.crop_px),
            )[:2]
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(config.learning_rate, step, warmup, total_steps)
            batch = torch.from_numpy(crops).to(device).contiguous(memory_format=torch.channels_last)
            prediction = net(batch)[0]
            loss = weighted_cellpose_loss(prediction, torch.from_numpy(crop_targets).to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item() * len(indices)
            step += 1
        losses.append(epoch_loss / len(images))
        yield Progress("train", epoch + 1, config.epochs, f"loss {losses[-1]:.3f}")
    net.eval()
    return losses


def _learning_rate(peak: float, step: int, warmup: int, total: int) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to 5% of it."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
