"""Patch geometry shared by every cell renderer: noise textures, the polar grid of cell outlines,
small stamps (lobes, folds, nucleoli, rods) splatted into per-cell patches, and texture covers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.special import ndtri

from blastscope.synthetic.layout import _Cells

# Noise texture channels (all unit standard deviation) and their smoothing scale in µm.
_TEXTURES = {
    "chromatin_fine": 0.22,
    "chromatin_coarse": 0.55,
    "granule_fine": 0.16,
    "granule_coarse": 0.24,
    "granule_large": 0.55,
    "smooth": 1.3,
}


_TEX = {name: index for index, name in enumerate(_TEXTURES)}


_TEXTURE_TILE_PX = 512


_FAR = 1.0e3  # signed distance (px) meaning "far outside"


def _texture_tile(rng: np.random.Generator, pixel_size_um: float, min_size: int) -> np.ndarray:
    """Noise textures (C, T, T) float32, unit sd, smoothed at the µm scales of ``_TEXTURES``.

    ``T`` is at least ``min_size`` (the largest patch cut from it).
    """
    size = max(_TEXTURE_TILE_PX, min_size)
    tile = rng.standard_normal((len(_TEXTURES), size, size), dtype=np.float32)
    for index, scale_um in enumerate(_TEXTURES.values()):
        sigma = max(scale_um / pixel_size_um, 0.5)
        channel = cv2.GaussianBlur(tile[index], (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        channel -= channel.mean()
        channel /= channel.std() + 1e-6
        tile[index] = channel
    return tile


@dataclass
class _Patches:
    """Rendered cells of one group, each in a (P, P) patch centred on its (integer) centre.

    Either ``od`` (N, 3, P, P) per-channel optical density, or ``density`` (N, P, P) of the one
    stain colour ``colour`` (3,). ``mask`` (N, P, P) is the cell's own pixels, ``rods`` (N,) the
    Auer rods drawn in each cell.
    """

    cells: _Cells
    mask: np.ndarray
    rods: np.ndarray
    od: np.ndarray | None = None
    density: np.ndarray | None = None
    colour: np.ndarray | None = None


@dataclass(frozen=True)
class _Grid:
    """Pixel offsets (P, P) from a patch centre, and the angular basis of cell outlines."""

    half: int
    yy: np.ndarray
    xx: np.ndarray
    r2: np.ndarray
    r: np.ndarray
    basis: np.ndarray  # (6, P*P): cos/sin of 2θ, 3θ and 12θ


def _grid(half: int) -> _Grid:
    offsets = np.arange(-half, half + 1, dtype=np.float32)
    yy, xx = np.meshgrid(offsets, offsets, indexing="ij")
    r2 = yy * yy + xx * xx
    theta = np.arctan2(yy, xx).ravel()
    basis = np.stack([f(k * theta) for k in (2, 3, 12) for f in (np.cos, np.sin)]).astype(
        np.float32
    )
    return _Grid(half, yy, xx, r2, np.sqrt(r2), basis)


def _body_alpha(grid: _Grid, radius: np.ndarray, outline: np.ndarray) -> np.ndarray:
    """Anti-aliased cell body (N, P, P) in [0, 1]: radius (N,) px, perturbed by outline (N, 6)."""
    boundary = radius[:, None].astype(np.float32) * (1 + outline.astype(np.float32) @ grid.basis)
    alpha = boundary - grid.r.ravel() + 0.5
    np.clip(alpha, 0, 1, out=alpha)
    return alpha.reshape(len(radius), *grid.r.shape)


class _Stamps:
    """Small shapes (lobes, folds, nucleoli, rods) of many cells, collected then splatted.

    Each row: the owning cell, the centre (y, x) in patch pixels relative to the patch centre,
    and shape parameters (px or radians).
    """

    def __init__(self, n_params: int) -> None:
        self.n_params = n_params
        self.parts: list[np.ndarray] = []

    def add(self, owner: np.ndarray, y: np.ndarray, x: np.ndarray, *params) -> None:
        owner = np.asarray(owner)
        if owner.size == 0:
            return
        columns = np.broadcast_arrays(owner, y, x, *params)
        self.parts.append(np.stack([np.asarray(c, dtype=np.float64) for c in columns], axis=1))

    def rows(self) -> np.ndarray:
        if not self.parts:
            return np.zeros((0, 3 + self.n_params))
        return np.concatenate(self.parts)


def _stamp_frame(rows: np.ndarray, half: int, reach: np.ndarray):
    """Integer stamp centres (patch px), sub-pixel offsets (D, S, S) and the stamp half size."""
    size_half = math.ceil(float(reach.max())) + 2
    offsets = np.arange(-size_half, size_half + 1, dtype=np.float32)
    iy = np.round(rows[:, 1]).astype(np.int64)
    ix = np.round(rows[:, 2]).astype(np.int64)
    dy = offsets[None, :, None] - (rows[:, 1] - iy).astype(np.float32)[:, None, None]
    dx = offsets[None, None, :] - (rows[:, 2] - ix).astype(np.float32)[:, None, None]
    return iy + half, ix + half, dy, dx, size_half


def _splat(
    target: np.ndarray, owner: np.ndarray, iy, ix, stamps: np.ndarray, size_half: int, op
) -> None:
    """Combine ``stamps`` (D, S, S) into ``target`` (N, P, P) at integer centres with ``op``."""
    p = target.shape[1]
    y0, x0 = iy - size_half, ix - size_half
    ty0, tx0 = np.clip(y0, 0, p), np.clip(x0, 0, p)
    ty1, tx1 = np.clip(y0 + stamps.shape[1], 0, p), np.clip(x0 + stamps.shape[2], 0, p)
    for d, o, a0, a1, b0, b1, s0, u0 in zip(
        range(len(owner)),
        owner.astype(np.int64).tolist(),
        ty0.tolist(),
        ty1.tolist(),
        tx0.tolist(),
        tx1.tolist(),
        y0.tolist(),
        x0.tolist(),
        strict=True,
    ):
        if a1 <= a0 or b1 <= b0:
            continue
        view = target[o, a0:a1, b0:b1]
        op(view, stamps[d, a0 - s0 : a1 - s0, b0 - u0 : b1 - u0], out=view)


def _ellipse_sd(rows: np.ndarray, half: int, target: np.ndarray) -> None:
    """Min-combine ellipses (rows: owner, y, x, a, b, angle) as signed distances (px)."""
    if not len(rows):
        return
    a, b, angle = (rows[:, k].astype(np.float32)[:, None, None] for k in (3, 4, 5))
    iy, ix, dy, dx, size_half = _stamp_frame(rows, half, rows[:, 3:5].max(axis=1) + 1.5)
    cos, sin = np.cos(angle), np.sin(angle)
    u = dy * cos + dx * sin
    v = dx * cos - dy * sin
    sd = (np.sqrt((u / a) ** 2 + (v / b) ** 2) - 1) * np.sqrt(a * b)
    _splat(target, rows[:, 0], iy, ix, sd, size_half, np.minimum)


def _disk_stamps(rows: np.ndarray, half: int):
    """Distances (D, S, S) px from disk centres (rows: owner, y, x, r, ...)."""
    iy, ix, dy, dx, size_half = _stamp_frame(rows, half, rows[:, 3] + 1.5)
    return iy, ix, np.sqrt(dy * dy + dx * dx), size_half


def _segment_stamps(rows: np.ndarray, half: int):
    """Distances (D, S, S) px from segments (rows: owner, y, x, half_length, angle, ...)."""
    half_length = rows[:, 3].astype(np.float32)[:, None, None]
    angle = rows[:, 4].astype(np.float32)[:, None, None]
    iy, ix, dy, dx, size_half = _stamp_frame(rows, half, rows[:, 3] + 2.0)
    along = dy * np.sin(angle) + dx * np.cos(angle)
    across = dx * np.sin(angle) - dy * np.cos(angle)
    excess = np.clip(np.abs(along) - half_length, 0, None)
    return iy, ix, np.sqrt(excess * excess + across * across), size_half


def _gather_textures(tile: np.ndarray, rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Random windows (N, C, size, size) of the texture tile (C, T, T)."""
    limit = tile.shape[1] - size
    oy = rng.integers(0, limit + 1, n).tolist()
    ox = rng.integers(0, limit + 1, n).tolist()
    return np.stack([tile[:, y : y + size, x : x + size] for y, x in zip(oy, ox, strict=True)])


def _cover(texture: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Blobs (N, P, P) in [0, 1] where a unit-sd texture exceeds the quantile for ``amount``."""
    amount = np.asarray(amount, dtype=np.float64)
    level = np.where(amount > 0, ndtri(1 - np.clip(amount, 1e-6, 1 - 1e-6)), _FAR)
    blobs = texture - level.astype(np.float32)[:, None, None]
    blobs *= 2.0
    return np.clip(blobs, 0, 1, out=blobs)


def _pale_map(rows: np.ndarray, half: int, n: int, size: int) -> np.ndarray | None:
    """Paleness (N, P, P) in [0, 0.9] from soft disks (rows: owner, y, x, r, strength)."""
    if not len(rows):
        return None
    iy, ix, dist, s_half = _disk_stamps(rows, half)
    radius = rows[:, 3].astype(np.float32)[:, None, None]
    strength = rows[:, 4].astype(np.float32)[:, None, None]
    alpha = np.clip(radius - dist + 0.5, 0, 1) * strength
    pale = np.zeros((n, size, size), dtype=np.float32)
    _splat(pale, rows[:, 0], iy, ix, alpha, s_half, np.add)
    return np.clip(pale, 0, 0.9, out=pale)
