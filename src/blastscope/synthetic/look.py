"""A slide's look, drawn once per slide: the mutation, the stain colours (optical densities per
dye, scaled and mixed), the background, illumination and optics; and the camera that turns a
field's optical density into the RGB image (illumination, blur, noise, JPEG)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from blastscope.classes import MUTATION_CLASSES
from blastscope.synthetic.presets import SmearPreset

# Stain colours: optical density (natural log) per RGB channel at unit density, and the dye that
# carries it ("eosin" = acidic, red; "azure" = basic, blue-purple). A slide scales each dye and
# mixes the channels a little (see _draw_stain).
_STAIN_OD = {
    "rbc": ((0.07, 0.40, 0.33), "eosin"),
    "nucleus": ((0.78, 1.12, 0.32), "azure"),
    "blast_nucleus": ((0.62, 0.98, 0.32), "azure"),
    "lymph_cyto": ((0.40, 0.24, 0.06), "azure"),
    "basophilic": ((0.58, 0.36, 0.08), "azure"),
    "neutro_cyto": ((0.06, 0.15, 0.09), "eosin"),
    "neutro_granule": ((0.20, 0.34, 0.12), "azure"),
    "eos_granule": ((0.04, 0.55, 0.85), "eosin"),
    "mono_cyto": ((0.27, 0.23, 0.11), "azure"),
    "salmon": ((0.02, 0.30, 0.34), "eosin"),
    "azurophil": ((0.50, 1.00, 0.38), "azure"),
    "dark_granule": ((1.30, 1.75, 0.95), "azure"),
    "auer": ((0.75, 1.55, 0.70), "azure"),
    "platelet": ((0.45, 0.75, 0.20), "azure"),
    "plasma": ((0.05, 0.07, 0.02), "azure"),
}


@dataclass
class _SlideLook:
    """What all fields of one slide share."""

    mutation: str
    blast_fraction: float
    pixel_size_um: float
    cell_scale: float
    stain: dict[str, np.ndarray]
    background: np.ndarray
    falloff: float
    light_centre: tuple[float, float]
    blur_um: float
    noise_sigma: float
    jpeg_quality: int | None


def _draw_slide_look(rng: np.random.Generator, preset: SmearPreset) -> _SlideLook:
    mutation = MUTATION_CLASSES[rng.integers(len(MUTATION_CLASSES))]
    blast_fraction = rng.uniform(*preset.blast_fraction)
    pixel_size = preset.pixel_size_um * (
        1 + rng.uniform(-preset.pixel_size_jitter, preset.pixel_size_jitter)
    )
    cell_scale = float(np.exp(rng.normal(0.0, preset.cell_scale_jitter)))
    stain = _draw_stain(rng, preset.stain_jitter)
    background = np.clip(
        np.array([0.90, 0.885, 0.90]) + rng.normal(0.0, preset.background_jitter, 3), 0.7, 0.99
    )
    falloff = rng.uniform(*preset.illumination_falloff)
    light_centre = (rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7))
    blur_um = rng.uniform(*preset.blur_sigma_um)
    noise_sigma = rng.uniform(*preset.noise_sigma)
    quality_draw = rng.uniform()
    jpeg_quality = None
    if preset.jpeg_quality is not None:
        low, high = preset.jpeg_quality
        jpeg_quality = round(low + quality_draw * (high - low))
    return _SlideLook(
        mutation=mutation,
        blast_fraction=float(blast_fraction),
        pixel_size_um=float(pixel_size),
        cell_scale=cell_scale,
        stain=stain,
        background=background.astype(np.float32),
        falloff=float(falloff),
        light_centre=light_centre,
        blur_um=float(blur_um),
        noise_sigma=float(noise_sigma),
        jpeg_quality=jpeg_quality,
    )


def _draw_stain(rng: np.random.Generator, jitter: float) -> dict[str, np.ndarray]:
    """Stain colours (OD vectors) of one slide: each dye scaled, the channels mixed a little."""
    dye_scale = {"eosin": np.exp(rng.normal(0, jitter)), "azure": np.exp(rng.normal(0, jitter))}
    mixing = np.eye(3) + rng.normal(0, jitter / 4, (3, 3))
    stain = {}
    for name, (od, dye) in _STAIN_OD.items():
        vector = mixing @ (np.asarray(od) * dye_scale[dye])
        stain[name] = np.clip(vector, 0.0, None).astype(np.float32)
    return stain


def _camera(rng: np.random.Generator, od_field: np.ndarray, look: _SlideLook) -> np.ndarray:
    """The camera's (Y, X, 3) uint8 image of ``od_field`` (3, Y, X): background · illumination ·
    exp(-OD), optical blur, camera noise (uniform, of sd ``noise_sigma``, larger where brighter)
    and JPEG compression."""
    height, width = od_field.shape[1:]
    rows = np.linspace(0, 1, height, dtype=np.float32) - look.light_centre[0]
    cols = np.linspace(0, 1, width, dtype=np.float32) - look.light_centre[1]
    corner = (
        max(look.light_centre[0], 1 - look.light_centre[0]) ** 2
        + max(look.light_centre[1], 1 - look.light_centre[1]) ** 2
    )
    illumination = 1 - (look.falloff / corner) * (rows[:, None] ** 2 + cols[None, :] ** 2)
    image = np.exp(np.negative(od_field, out=od_field), out=od_field)
    sigma = look.blur_um / look.pixel_size_um
    noise = rng.random(image.shape, dtype=np.float32)
    noise -= 0.5
    noise *= look.noise_sigma * math.sqrt(12.0)
    planes = []
    for channel in range(3):
        plane = image[channel]
        plane *= illumination * np.float32(255.0 * look.background[channel])
        if sigma > 0.25:
            plane = cv2.GaussianBlur(plane, (0, 0), sigma)
        # Shot noise grows with the signal: sd from 0.4x (dark) to 1x (full brightness).
        scale = np.sqrt(plane * np.float32(1 / 255.0))
        scale *= 0.6
        scale += 0.4
        plane += noise[channel] * scale
        plane += 0.5
        planes.append(np.clip(plane, 0, 255, out=plane).astype(np.uint8))
    if look.jpeg_quality is not None and min(height, width) >= 8:
        ok, encoded = cv2.imencode(
            ".jpg", cv2.merge(planes[::-1]), [cv2.IMWRITE_JPEG_QUALITY, look.jpeg_quality]
        )
        if ok:
            return np.ascontiguousarray(cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1])
    return cv2.merge(planes)
