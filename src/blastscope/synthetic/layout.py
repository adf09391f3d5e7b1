"""Where the cells of a field go: the smear's thickness, the cells' counts, types and sizes, and
the dart throwing that places them (nucleated cells first, red cells around them, platelets)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from blastscope.synthetic.look import _SlideLook
from blastscope.synthetic.presets import _WHITE_TYPES, SmearPreset


@dataclass
class _Cells:
    """Cells of one type (or one drawing group) before rendering: centres in field pixels."""

    cell_type: str
    centre_y: np.ndarray  # (N,) int
    centre_x: np.ndarray  # (N,) int
    radius_px: np.ndarray  # (N,) float
    diameter_um: np.ndarray  # (N,) float
    is_blast: np.ndarray  # (N,) bool
    strength: np.ndarray  # (N,) float, mutation features shown
    large: np.ndarray  # (N,) bool, large lymphocyte / blast-like monocyte / abnormal eosinophil


def _thickness_grid(
    rng: np.random.Generator, shape: tuple[int, int], pixel_size_um: float
) -> np.ndarray:
    """Smear thickness on a coarse grid (one node per ~40 µm), values in (0, 1)."""
    nodes = [math.ceil(side * pixel_size_um / 40.0) + 3 for side in shape]
    z = ndi.gaussian_filter(rng.standard_normal(nodes), 0.8, mode="wrap")
    z = (z - z.mean()) / (z.std() + 1e-6)
    return 1.0 / (1.0 + np.exp(-2.0 * z))


def _thickness_at(thickness: np.ndarray, shape: tuple[int, int], yx: np.ndarray) -> np.ndarray:
    coords = [
        np.clip(
            (yx[:, axis] / max(shape[axis], 1)) * (thickness.shape[axis] - 3) + 1,
            0,
            thickness.shape[axis] - 1,
        )
        for axis in range(2)
    ]
    return ndi.map_coordinates(thickness, coords, order=1)


def _truncated_normal(
    rng: np.random.Generator, mean: float, sd: float, n: int, spread: float = 2.2
) -> np.ndarray:
    return np.clip(rng.normal(mean, sd, n), mean - spread * sd, mean + spread * sd)


def _layout(
    rng: np.random.Generator,
    preset: SmearPreset,
    look: _SlideLook,
    shape: tuple[int, int],
    thickness: np.ndarray,
) -> tuple[list[_Cells], _Cells, _Cells]:
    """Place nucleated cells, then red cells around them, then platelets."""
    ps = look.pixel_size_um
    area_um2 = shape[0] * shape[1] * ps * ps

    # Nucleated cells: count, types, sizes.
    n_nucleated = rng.poisson(rng.uniform(*preset.nucleated_per_10k_um2) * area_um2 / 1e4)
    n_blasts = rng.binomial(n_nucleated, look.blast_fraction)
    mix = dict(preset.white_cell_mix)
    if look.mutation == "CBFB::MYH11" and "eosinophil" in mix:
        mix["eosinophil"] *= preset.cbfb_eosinophil_boost
    weights = np.array([mix.get(t, 0.0) for t in _WHITE_TYPES])
    white_types = rng.choice(len(_WHITE_TYPES), n_nucleated - n_blasts, p=weights / weights.sum())
    type_index = np.concatenate([white_types, np.full(n_blasts, len(_WHITE_TYPES))])
    nucleated_types = (*_WHITE_TYPES, "blast")
    diameters = np.empty(n_nucleated)
    large = np.zeros(n_nucleated, dtype=bool)
    for index, name in enumerate(nucleated_types):
        members = np.flatnonzero(type_index == index)
        mean, sd = preset.diameter_um[name]
        diameters[members] = _truncated_normal(rng, mean, sd, len(members))
        if name == "lymphocyte":
            is_large = rng.uniform(size=len(members)) < preset.large_lymphocyte_fraction
            big_mean, big_sd = preset.large_lymphocyte_diameter_um
            diameters[members[is_large]] = _truncated_normal(rng, big_mean, big_sd, is_large.sum())
            large[members] = is_large
        elif name == "monocyte":
            large[members] = rng.uniform(size=len(members)) < preset.blastlike_monocyte_fraction
        elif name == "eosinophil":
            abnormal = rng.uniform(size=len(members)) < preset.abnormal_eosinophil_fraction
            large[members] = abnormal & (look.mutation == "CBFB::MYH11")
    radii = diameters * look.cell_scale / 2 / ps

    centres, kept = _scatter_discs(rng, radii, shape, margin=0.35, factor=np.full(n_nucleated, 0.9))
    nucleated: list[_Cells] = []
    for index, name in enumerate(nucleated_types):
        members = kept[type_index[kept] == index]
        rows = np.flatnonzero(type_index[kept] == index)
        nucleated.append(
            _Cells(
                cell_type=name,
                centre_y=np.round(centres[rows, 0]).astype(np.int64),
                centre_x=np.round(centres[rows, 1]).astype(np.int64),
                radius_px=radii[members],
                diameter_um=diameters[members] * look.cell_scale,
                is_blast=np.full(len(members), name == "blast"),
                strength=np.zeros(len(members)),
                large=large[members],
            )
        )
    fixed_centres, fixed_radii = centres, radii[kept]

    # Red cells: fill the field, gathering and overlapping in thick areas.
    mean_d, sd_d = preset.diameter_um["erythrocyte"]
    rbc_area = math.pi * (mean_d / 2) ** 2
    n_rbc = rng.poisson(rng.uniform(*preset.rbc_coverage) * area_um2 / rbc_area * 1.15)
    rbc_d = _truncated_normal(rng, mean_d, sd_d, n_rbc)
    rbc_r = rbc_d * look.cell_scale / 2 / ps
    variation = preset.thickness_variation

    def accept(yx: np.ndarray) -> np.ndarray:
        return (1 - variation) + variation * _thickness_at(thickness, shape, yx) ** 2

    def separation(yx: np.ndarray) -> np.ndarray:
        thick = _thickness_at(thickness, shape, yx) * variation
        return 0.97 - (0.97 - (1.0 - preset.rbc_overlap)) * np.clip(thick * 1.6 - 0.3, 0, 1)

    rbc_centres, rbc_kept = _scatter_discs(
        rng,
        rbc_r,
        shape,
        margin=0.5,
        factor_fn=separation,
        accept_fn=accept,
        fixed_centres=fixed_centres,
        fixed_radii=fixed_radii,
        fixed_factor=0.82,
    )
    rbcs = _Cells(
        cell_type="erythrocyte",
        centre_y=np.round(rbc_centres[:, 0]).astype(np.int64),
        centre_x=np.round(rbc_centres[:, 1]).astype(np.int64),
        radius_px=rbc_r[rbc_kept],
        diameter_um=rbc_d[rbc_kept] * look.cell_scale,
        is_blast=np.zeros(len(rbc_kept), dtype=bool),
        strength=np.zeros(len(rbc_kept)),
        large=np.zeros(len(rbc_kept), dtype=bool),
    )

    # Platelets: anywhere but under the white cells.
    mean_p, sd_p = preset.diameter_um["platelet"]
    n_platelets = rng.poisson(rng.uniform(*preset.platelets_per_10k_um2) * area_um2 / 1e4)
    platelet_d = _truncated_normal(rng, mean_p, sd_p, n_platelets)
    platelet_r = platelet_d * look.cell_scale / 2 / ps
    platelet_centres, platelet_kept = _scatter_discs(
        rng,
        platelet_r,
        shape,
        margin=0.0,
        factor=np.full(n_platelets, 1.2),
        fixed_centres=fixed_centres,
        fixed_radii=fixed_radii,
        fixed_factor=1.0,
        rounds=2,
    )
    platelets = _Cells(
        cell_type="platelet",
        centre_y=np.round(platelet_centres[:, 0]).astype(np.int64),
        centre_x=np.round(platelet_centres[:, 1]).astype(np.int64),
        radius_px=platelet_r[platelet_kept],
        diameter_um=platelet_d[platelet_kept] * look.cell_scale,
        is_blast=np.zeros(len(platelet_kept), dtype=bool),
        strength=np.zeros(len(platelet_kept)),
        large=np.zeros(len(platelet_kept), dtype=bool),
    )
    return nucleated, rbcs, platelets


def _scatter_discs(
    rng: np.random.Generator,
    radii: np.ndarray,
    shape: tuple[int, int],
    *,
    margin: float,
    factor: np.ndarray | None = None,
    factor_fn=None,
    accept_fn=None,
    fixed_centres: np.ndarray | None = None,
    fixed_radii: np.ndarray | None = None,
    fixed_factor: float = 1.0,
    rounds: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Dart throwing in vectorised rounds: discs of ``radii`` (px) that keep apart.

    Two discs i, j keep a centre distance of at least ``max(f_i, f_j) · (r_i + r_j)`` (f < 1
    lets them overlap). A disc's centre lies within ``margin · r`` outside the field at most, so
    cut cells show at least part of themselves. ``accept_fn(yx)`` thins proposals (0..1).
    Returns the centres (M, 2) float and the indices into ``radii`` of the discs placed.
    """
    n = len(radii)
    placed_yx = np.zeros((0, 2))
    placed_r = np.zeros(0)
    placed_f = np.zeros(0)
    placed_index = np.zeros(0, dtype=np.int64)
    if fixed_centres is not None and len(fixed_centres):
        placed_yx, placed_r = fixed_centres.astype(float), fixed_radii.astype(float)
        placed_f = np.full(len(placed_r), fixed_factor)
    n_fixed = len(placed_r)
    pending = np.arange(n)
    for _ in range(rounds):
        if not len(pending):
            break
        r = radii[pending]
        low, high = -margin * r, np.asarray(shape)[None, :] + (margin * r)[:, None]
        yx = low[:, None] + rng.uniform(size=(len(pending), 2)) * (high - low[:, None])
        f = factor[pending] if factor_fn is None else factor_fn(yx)
        ok = np.ones(len(pending), dtype=bool)
        if accept_fn is not None:
            ok &= rng.uniform(size=len(pending)) < accept_fn(yx)
        if len(placed_r):
            reach = float(np.max(f) if len(f) else 1.0) * (r.max() + placed_r.max())
            k = min(16, len(placed_r))
            distance, neighbour = cKDTree(placed_yx).query(yx, k=k, distance_upper_bound=reach)
            distance = distance.reshape(len(yx), k)
            neighbour = neighbour.reshape(len(yx), k)
            valid = neighbour < len(placed_r)
            safe = np.where(valid, neighbour, 0)
            needed = np.maximum(f[:, None], placed_f[safe]) * (r[:, None] + placed_r[safe])
            ok &= ~np.any(valid & (distance < needed), axis=1)
        candidates = np.flatnonzero(ok)
        if len(candidates) > 1:
            reach = float(np.max(f[candidates])) * 2 * r[candidates].max()
            pairs = cKDTree(yx[candidates]).query_pairs(reach, output_type="ndarray")
            if len(pairs):
                a, b = candidates[pairs[:, 0]], candidates[pairs[:, 1]]
                gap = np.linalg.norm(yx[a] - yx[b], axis=1)
                clash = gap < np.maximum(f[a], f[b]) * (r[a] + r[b])
                ok[np.maximum(a, b)[clash]] = False
        placed_yx = np.concatenate([placed_yx, yx[ok]])
        placed_r = np.concatenate([placed_r, r[ok]])
        placed_f = np.concatenate([placed_f, f[ok]])
        placed_index = np.concatenate([placed_index, pending[ok]])
        pending = pending[~ok]
    return placed_yx[n_fixed:], placed_index
