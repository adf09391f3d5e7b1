"""Augmentations for stained-smear crops, applied in torch to whole batches.

Crops are float tensors (N, 3, h, w) in [0, 1] (RGB, square). Every random draw comes from the
``torch.Generator`` passed in, so a seeded generator gives the same batch again (training resumes
exactly). Draws are made on the CPU and moved to the crops' device.

What each step models:

- flips and 90-degree rotations: a smear has no up or down;
- stain jitter in HED space (Tellez et al. 2018): haematoxylin, eosin and residual optical
  densities are each scaled by ``1 ± hed_scale`` and shifted by ``± hed_shift``: differences
  in staining between labs and batches;
- brightness (``± brightness``, added) and contrast (``1 ± contrast``, about the crop's mean):
  illumination and camera settings;
- Gaussian blur with sigma uniform in [0, ``blur_sigma_px``] on a share ``blur_probability`` of
  the crops: focus;
- scale jitter ``1 ± scale`` (a zoom about the centre, edges replicated): small errors in the
  pixel size. Kept small because cell size is one of the signs of a blast.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

# Ruifrok & Johnston's stain vectors (rows: haematoxylin, eosin, DAB) as in scikit-image.
RGB_FROM_HED = torch.tensor(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float32
)
HED_FROM_RGB = torch.linalg.inv(RGB_FROM_HED)
_MIN_INTENSITY = 1e-3  # optical density is capped at -log(1e-3) ≈ 6.9


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of each augmentation (0 turns one off); see the module docstring."""

    flips: bool = True
    rotations: bool = True
    hed_scale: float = 0.05
    hed_shift: float = 0.05
    brightness: float = 0.05
    contrast: float = 0.1
    blur_sigma_px: float = 1.0
    blur_probability: float = 0.3
    scale: float = 0.05

    def describe(self) -> dict[str, float | bool]:
        """A JSON-ready copy of the settings."""
        return asdict(self)


STRONG_AUGMENTATION = AugmentConfig(
    hed_scale=0.25,
    hed_shift=0.08,
    brightness=0.12,
    contrast=0.25,
    blur_sigma_px=1.5,
    blur_probability=0.5,
)
"""Stain, colour and focus jitter wide enough to span labs and scanners (for models that must
hold on real smears they were not trained on)."""

AUGMENTATIONS = {"standard": AugmentConfig(), "strong": STRONG_AUGMENTATION}

NO_AUGMENTATION = AugmentConfig(
    flips=False,
    rotations=False,
    hed_scale=0.0,
    hed_shift=0.0,
    brightness=0.0,
    contrast=0.0,
    blur_sigma_px=0.0,
    blur_probability=0.0,
    scale=0.0,
)


def _uniform(n: int, half_width: float, generator: torch.Generator, *shape: int) -> torch.Tensor:
    """Values uniform in [-half_width, half_width], shape (n, *shape), on the CPU."""
    return (torch.rand((n, *shape), generator=generator) * 2.0 - 1.0) * half_width


def random_flip(crops: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each crop left-right with probability 1/2."""
    flip = (torch.rand(crops.shape[0], generator=generator) < 0.5).to(crops.device)
    return torch.where(flip[:, None, None, None], crops.flip(-1), crops)


def random_rotation(crops: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rotate each (square) crop by k * 90 degrees, k uniform in 0..3."""
    turns = torch.randint(0, 4, (crops.shape[0],), generator=generator).to(crops.device)
    rotated = crops.clone()
    for k in (1, 2, 3):
        chosen = turns == k
        if chosen.any():
            rotated[chosen] = torch.rot90(crops[chosen], k, dims=(-2, -1))
    return rotated


def hed_jitter(
    crops: torch.Tensor, generator: torch.Generator, scale: float, shift: float
) -> torch.Tensor:
    """Scale and shift each crop's stain optical densities in HED space."""
    n = crops.shape[0]
    device = crops.device
    density = -torch.log(crops.clamp_min(_MIN_INTENSITY))  # (N, 3, h, w)
    stains = torch.einsum("nchw,cs->nshw", density, HED_FROM_RGB.to(device))
    factor = (1.0 + _uniform(n, scale, generator, 3)).to(device)
    offset = _uniform(n, shift, generator, 3).to(device)
    stains = stains * factor[:, :, None, None] + offset[:, :, None, None]
    density = torch.einsum("nshw,sc->nchw", stains, RGB_FROM_HED.to(device))
    return torch.exp(-density).clamp(0.0, 1.0)


def brightness_contrast(
    crops: torch.Tensor, generator: torch.Generator, brightness: float, contrast: float
) -> torch.Tensor:
    """Add ``± brightness`` and scale the contrast by ``1 ± contrast`` about each crop's mean."""
    n = crops.shape[0]
    shift = _uniform(n, brightness, generator).to(crops.device)[:, None, None, None]
    factor = (1.0 + _uniform(n, contrast, generator)).to(crops.device)[:, None, None, None]
    mean = crops.mean(dim=(1, 2, 3), keepdim=True)
    return ((crops - mean) * factor + mean + shift).clamp(0.0, 1.0)


def gaussian_blur(
    crops: torch.Tensor, generator: torch.Generator, max_sigma_px: float, probability: float
) -> torch.Tensor:
    """Blur a share ``probability`` of the crops with sigma uniform in [0, max_sigma_px] px."""
    n, channels = crops.shape[:2]
    sigma = torch.rand(n, generator=generator) * max_sigma_px
    sigma = torch.where(torch.rand(n, generator=generator) < probability, sigma, 0.0)
    radius = max(1, math.ceil(3.0 * max_sigma_px))
    positions = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernels = torch.exp(-0.5 * (positions[None] / sigma.clamp_min(1e-3)[:, None]) ** 2)
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).to(crops.device)  # (N, k)
    weights = kernels.repeat_interleave(channels, dim=0)[:, None]  # (N*C, 1, k)
    flat = crops.reshape(1, n * channels, *crops.shape[2:])
    flat = F.pad(flat, (radius, radius, radius, radius), mode="replicate")
    flat = F.conv2d(flat, weights[:, :, :, None], groups=n * channels)
    flat = F.conv2d(flat, weights[:, :, None, :], groups=n * channels)
    return flat.reshape(crops.shape)


def scale_jitter(crops: torch.Tensor, generator: torch.Generator, scale: float) -> torch.Tensor:
    """Zoom each crop about its centre by ``1 ± scale`` (bilinear, edges replicated)."""
    n = crops.shape[0]
    zoom = (1.0 + _uniform(n, scale, generator)).to(crops.device)
    theta = torch.zeros((n, 2, 3), dtype=crops.dtype, device=crops.device)
    theta[:, 0, 0] = 1.0 / zoom
    theta[:, 1, 1] = 1.0 / zoom
    grid = F.affine_grid(theta, list(crops.shape), align_corners=False)
    return F.grid_sample(crops, grid, mode="bilinear", padding_mode="border", align_corners=False)


def augment_batch(
    crops: torch.Tensor, generator: torch.Generator, config: AugmentConfig = AugmentConfig()
) -> torch.Tensor:
    """Apply every augmentation ``config`` turns on to crops (N, 3, h, w) in [0, 1]."""
    if crops.ndim != 4 or crops.shape[1] != 3 or crops.shape[2] != crops.shape[3]:
        raise ValueError(f"Expected square RGB crops (N, 3, h, h), got {tuple(crops.shape)}.")
    if config.flips:
        crops = random_flip(crops, generator)
    if config.rotations:
        crops = random_rotation(crops, generator)
    if config.hed_scale or config.hed_shift:
        crops = hed_jitter(crops, generator, config.hed_scale, config.hed_shift)
    if config.brightness or config.contrast:
        crops = brightness_contrast(crops, generator, config.brightness, config.contrast)
    if config.blur_sigma_px and config.blur_probability:
        crops = gaussian_blur(crops, generator, config.blur_sigma_px, config.blur_probability)
    if config.scale:
        crops = scale_jitter(crops, generator, config.scale)
    return crops
