"""The drawing parameters of nucleated cells (:class:`_Nucleated`) and the small helpers the
shapers share: nucleus placement, colour mixing, nucleoli, blast likeness and feature strength."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from blastscope.synthetic.patches import _Stamps
from blastscope.synthetic.presets import SmearPreset


@dataclass
class _Nucleated:
    """Drawing parameters of N nucleated cells (px, radians; colours are OD vectors (N, 3))."""

    radius: np.ndarray
    outline: np.ndarray
    nucleus_od: np.ndarray
    nucleus_density: np.ndarray
    chromatin_fine: np.ndarray
    chromatin_coarse: np.ndarray
    nucleus_wobble: np.ndarray
    cyto_od: np.ndarray
    cyto_density: np.ndarray
    cyto_texture: np.ndarray
    vacuoles: np.ndarray
    granule_amount: np.ndarray  # (N, 3): fine, coarse, large granule cover (0..1)
    granule_od: np.ndarray  # (N, 3, 3)
    lobes: _Stamps = field(default_factory=lambda: _Stamps(3))  # a, b, angle
    bridges: _Stamps = field(default_factory=lambda: _Stamps(3))  # half_length, angle, width
    folds: _Stamps = field(default_factory=lambda: _Stamps(1))  # r: cut out of the nucleus
    pale_nucleus: _Stamps = field(default_factory=lambda: _Stamps(2))  # r, strength
    pale_cytoplasm: _Stamps = field(default_factory=lambda: _Stamps(2))  # r, strength (hof)
    rods: _Stamps = field(default_factory=lambda: _Stamps(4))  # half_length, angle, width, dark

    @classmethod
    def empty(cls, radius: np.ndarray) -> _Nucleated:
        n = len(radius)
        zeros = np.zeros(n, dtype=np.float32)
        return cls(
            radius=radius.astype(np.float32),
            outline=np.zeros((n, 6), dtype=np.float32),
            nucleus_od=np.zeros((n, 3), dtype=np.float32),
            nucleus_density=zeros.copy(),
            chromatin_fine=zeros.copy(),
            chromatin_coarse=zeros.copy(),
            nucleus_wobble=zeros.copy(),
            cyto_od=np.zeros((n, 3), dtype=np.float32),
            cyto_density=zeros.copy(),
            cyto_texture=zeros.copy(),
            vacuoles=zeros.copy(),
            granule_amount=np.zeros((n, 3), dtype=np.float32),
            granule_od=np.zeros((n, 3, 3), dtype=np.float32),
        )


def _polar(distance: np.ndarray, angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) of a point at ``distance`` px in direction ``angle`` (radians)."""
    return distance * np.sin(angle), distance * np.cos(angle)


def _mix(first: np.ndarray, second: np.ndarray, share: np.ndarray) -> np.ndarray:
    """Per-cell colours (N, 3): ``first`` blended towards ``second`` by ``share`` (N,)."""
    share = np.asarray(share, dtype=np.float32)[:, None]
    return (1 - share) * first[None, :] + share * second[None, :]


def _single_nucleus(
    rng: np.random.Generator,
    parts: _Nucleated,
    members: np.ndarray,
    ratio: np.ndarray,
    offset_share: tuple[float, float],
    aspect: tuple[float, float] = (1.0, 1.12),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One oval nucleus per cell in ``members``; returns its centre (y, x), semi-axes, direction."""
    radius = parts.radius[members]
    a = ratio * radius * rng.uniform(*aspect, len(members))
    b = ratio * radius * rng.uniform(2 - aspect[1], 1.0, len(members))
    direction = rng.uniform(0, 2 * np.pi, len(members))
    offset = np.clip(radius - a, 0, None) * rng.uniform(*offset_share, len(members))
    y, x = _polar(offset, direction)
    return y, x, a, b, direction


def _lerp(low, high, share):
    """``low`` + ``share`` · (``high`` - ``low``), element-wise."""
    return low + share * (np.asarray(high) - low)


def _add_nucleoli(rng, parts, shown, y, x, b, strength, px_per_um) -> None:
    """1-4 pale nucleoli (0.5-0.9 µm radius) within half the nucleus of the ``shown`` cells."""
    n = len(shown)
    count = np.where(shown, rng.integers(1, 5, n), 0)
    for k in range(4):
        spot = np.flatnonzero(k < count)
        sy, sx = _polar(0.5 * b * np.sqrt(rng.uniform(size=n)), rng.uniform(0, 2 * np.pi, n))
        radius = rng.uniform(0.5, 0.9, n) * px_per_um
        parts.pale_nucleus.add(spot, (y + sy)[spot], (x + sx)[spot], radius[spot], strength[spot])


def _blast_likeness(rng, preset, flagged):
    """How blast-like each look-alike cell is (0 for the ordinary ones), 0..1."""
    n = len(flagged)
    return np.where(flagged, preset.lookalike_similarity * rng.uniform(0.5, 1.0, n), 0.0)


def _feature_strength(
    rng: np.random.Generator, preset: SmearPreset, n: int, absent: float | None = None
) -> np.ndarray:
    """Per-cell strength (N,) 0..1 of the mutation morphology."""
    absent = preset.feature_absent_fraction if absent is None else absent
    shown = rng.uniform(size=n) >= absent
    strength = preset.feature_strength * rng.beta(*preset.feature_strength_beta, n)
    return np.where(shown, np.clip(strength, 0.0, 1.0), 0.0)
