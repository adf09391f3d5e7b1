"""Rendering the cells of one type into patches of optical density: red cells, platelets and the
nucleated cells (cytoplasm, nucleus, granules, rods) shaped by their type's shaper."""

from __future__ import annotations

import math

import numpy as np

from blastscope.synthetic.blasts import _shape_blast
from blastscope.synthetic.cell_parts import _Nucleated
from blastscope.synthetic.layout import _Cells
from blastscope.synthetic.look import _SlideLook
from blastscope.synthetic.patches import (
    _FAR,
    _TEX,
    _body_alpha,
    _cover,
    _disk_stamps,
    _ellipse_sd,
    _gather_textures,
    _grid,
    _pale_map,
    _Patches,
    _segment_stamps,
    _splat,
)
from blastscope.synthetic.presets import SmearPreset
from blastscope.synthetic.white_cells import (
    _shape_eosinophil,
    _shape_lymphocyte,
    _shape_monocyte,
    _shape_neutrophil,
)


def _render_erythrocytes(
    rng: np.random.Generator, preset: SmearPreset, look: _SlideLook, cells: _Cells
) -> _Patches:
    """Red cells: pale pink discs with central pallor; a few crenated or pale ones."""
    n = len(cells.radius_px)
    radius = cells.radius_px.astype(np.float32)
    crenated = rng.uniform(size=n) < preset.crenated_rbc_fraction
    pale = ~crenated & (rng.uniform(size=n) < preset.pale_rbc_fraction)
    outline = np.zeros((n, 6), dtype=np.float32)
    outline[:, 0:2] = rng.normal(0, 0.035, (n, 2))
    outline[:, 2:4] = rng.normal(0, 0.015, (n, 2))
    phase = rng.uniform(0, 2 * np.pi, n)
    outline[:, 4] = np.where(crenated, 0.035 * np.cos(phase), 0)
    outline[:, 5] = np.where(crenated, 0.035 * np.sin(phase), 0)
    density = rng.uniform(0.85, 1.15, n)
    pallor = rng.uniform(0.55, 0.8, n)
    pallor_radius = rng.uniform(0.38, 0.5, n) * radius
    density = np.where(crenated, density * 1.15, np.where(pale, density * 0.55, density))
    pallor = np.where(crenated, 0.1, np.where(pale, 0.75, pallor))

    grid = _grid(math.ceil(float(radius.max()) * 1.08) + 1)
    body = _body_alpha(grid, radius, outline)
    scale = (-1.0 / (pallor_radius * pallor_radius)).astype(np.float32)[:, None, None]
    profile = np.exp(grid.r2 * scale)
    profile *= -pallor.astype(np.float32)[:, None, None]
    profile += 1
    profile *= density.astype(np.float32)[:, None, None]
    profile *= body
    return _Patches(
        cells, body >= 0.5, np.zeros(n, dtype=np.int64), density=profile, colour=look.stain["rbc"]
    )


def _render_platelets(
    rng: np.random.Generator, look: _SlideLook, cells: _Cells, tile: np.ndarray
) -> _Patches:
    """Platelets: small irregular granular purple fragments."""
    n = len(cells.radius_px)
    radius = cells.radius_px.astype(np.float32)
    outline = np.zeros((n, 6), dtype=np.float32)
    outline[:, 0:2] = rng.normal(0, 0.12, (n, 2))
    outline[:, 2:4] = rng.normal(0, 0.08, (n, 2))
    grid = _grid(math.ceil(float(radius.max()) * 1.45) + 2)
    body = _body_alpha(grid, radius, outline)
    granules = _gather_textures(tile, rng, n, 2 * grid.half + 1)[:, _TEX["granule_fine"]]
    density = rng.uniform(0.7, 1.2, n).astype(np.float32)[:, None, None]
    dens = body * density * (0.55 + 0.45 * np.clip(granules, 0, 2))
    return _Patches(
        cells, body >= 0.5, np.zeros(n, dtype=np.int64), density=dens, colour=look.stain["platelet"]
    )


_SHAPERS = {
    "neutrophil": _shape_neutrophil,
    "eosinophil": _shape_eosinophil,
    "lymphocyte": _shape_lymphocyte,
    "monocyte": _shape_monocyte,
    "blast": _shape_blast,
}


def _render_nucleated(
    rng: np.random.Generator,
    preset: SmearPreset,
    look: _SlideLook,
    cells: _Cells,
    tile: np.ndarray,
    px_per_um: float,
) -> _Patches:
    """Nucleated cells of one type: cytoplasm, nucleus, granules and Auer rods."""
    parts = _Nucleated.empty(cells.radius_px)
    n = len(parts.radius)
    parts.outline[:, 0:2] = rng.normal(0, 0.035, (n, 2))
    parts.outline[:, 2:4] = rng.normal(0, 0.02, (n, 2))
    _SHAPERS[cells.cell_type](rng, parts, cells, look, preset, px_per_um)
    # Per-cell stain variation.
    parts.nucleus_od *= rng.normal(1.0, 0.04, (n, 1)).astype(np.float32)
    parts.cyto_od *= rng.normal(1.0, 0.06, (n, 1)).astype(np.float32)

    grid = _grid(math.ceil(float(parts.radius.max()) * 1.12) + 2)
    half, size = grid.half, 2 * grid.half + 1
    body = _body_alpha(grid, parts.radius, parts.outline)
    tex = _gather_textures(tile, rng, n, size)

    def column(values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float32)[:, None, None]

    # Nucleus: union of lobes and bridges, minus folds, as a signed distance (px).
    sd = np.full((n, size, size), _FAR, dtype=np.float32)
    _ellipse_sd(parts.lobes.rows(), half, sd)
    bridges = parts.bridges.rows()
    if len(bridges):
        iy, ix, dist, s_half = _segment_stamps(bridges, half)
        width = bridges[:, 5].astype(np.float32)[:, None, None]
        _splat(sd, bridges[:, 0], iy, ix, dist - width, s_half, np.minimum)
    folds = parts.folds.rows()
    if len(folds):
        iy, ix, dist, s_half = _disk_stamps(folds, half)
        radius = folds[:, 3].astype(np.float32)[:, None, None]
        _splat(sd, folds[:, 0], iy, ix, radius - dist, s_half, np.maximum)
    sd += column(parts.nucleus_wobble) * tex[:, _TEX["smooth"]]
    nucleus = np.clip(0.5 - sd, 0, 1)
    nucleus *= body
    chromatin = 1 + column(parts.chromatin_fine) * tex[:, _TEX["chromatin_fine"]]
    chromatin += column(parts.chromatin_coarse) * tex[:, _TEX["chromatin_coarse"]]
    np.clip(chromatin, 0.15, None, out=chromatin)
    nucleus *= chromatin * column(parts.nucleus_density)
    pale = _pale_map(parts.pale_nucleus.rows(), half, n, size)
    if pale is not None:
        nucleus *= 1 - pale

    cyto = body * column(parts.cyto_density)
    cyto *= 1 + column(parts.cyto_texture) * tex[:, _TEX["smooth"]]
    hof = _pale_map(parts.pale_cytoplasm.rows(), half, n, size)
    if hof is not None:
        cyto *= 1 - hof
    if parts.vacuoles.any():
        vacuole = _cover(-tex[:, _TEX["granule_large"]], parts.vacuoles)
        cyto *= 1 - 0.85 * vacuole

    densities = [cyto, nucleus]
    colours = [parts.cyto_od, parts.nucleus_od]
    granule_textures = ("granule_fine", "granule_coarse", "granule_large")
    for k, name in enumerate(granule_textures):
        if parts.granule_amount[:, k].any():
            densities.append(body * _cover(tex[:, _TEX[name]], parts.granule_amount[:, k]))
            colours.append(parts.granule_od[:, k])
    rods = parts.rods.rows()
    rod_counts = np.bincount(rods[:, 0].astype(np.int64), minlength=n) if len(rods) else None
    if len(rods):
        iy, ix, dist, s_half = _segment_stamps(rods, half)
        width = rods[:, 5].astype(np.float32)[:, None, None]
        alpha = np.clip(width - dist + 0.5, 0, 1) * rods[:, 6].astype(np.float32)[:, None, None]
        rod_density = np.zeros((n, size, size), dtype=np.float32)
        _splat(rod_density, rods[:, 0], iy, ix, alpha, s_half, np.add)
        densities.append(rod_density * body)
        colours.append(np.broadcast_to(look.stain["auer"], (n, 3)))
    stacked = np.stack(densities, axis=1).reshape(n, len(densities), size * size)
    colour_matrix = np.stack(colours, axis=2).astype(np.float32)  # (N, 3, components)
    od = np.matmul(colour_matrix, stacked).reshape(n, 3, size, size)
    if rod_counts is None:
        rod_counts = np.zeros(n, dtype=np.int64)
    return _Patches(cells, body >= 0.5, rod_counts, od=od)
