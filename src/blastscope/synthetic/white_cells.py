"""The shapers of the non-blast white cells: neutrophils, eosinophils (with CBFB::MYH11's
abnormal ones), lymphocytes and monocytes, and their blast look-alikes."""

from __future__ import annotations

import numpy as np

from blastscope.synthetic.cell_parts import (
    _add_nucleoli,
    _blast_likeness,
    _feature_strength,
    _lerp,
    _mix,
    _polar,
    _single_nucleus,
)


def _shape_neutrophil(rng, parts, cells, look, preset, px_per_um) -> None:
    n = len(parts.radius)
    radius = parts.radius
    n_lobes = rng.choice([3, 4, 5], n, p=[0.35, 0.45, 0.2])
    arc = 0.36 * radius * rng.uniform(0.85, 1.15, n)
    start = rng.uniform(0, 2 * np.pi, n)
    step = rng.uniform(0.75, 1.05, n) * rng.choice([-1, 1], n)
    lobe_a = 0.28 * radius * rng.uniform(0.85, 1.15, n)
    previous = None
    for k in range(5):
        angle = start + step * (k - (n_lobes - 1) / 2)
        y, x = _polar(arc, angle)
        present = np.flatnonzero(k < n_lobes)
        a = lobe_a * rng.uniform(0.9, 1.1, n)
        b = a * rng.uniform(0.62, 0.85, n)
        tilt = angle + np.pi / 2 + rng.normal(0, 0.35, n)
        parts.lobes.add(present, y[present], x[present], a[present], b[present], tilt[present])
        if previous is not None:
            py, px = previous
            mid_y, mid_x = (y + py) / 2, (x + px) / 2
            length = np.hypot(y - py, x - px) / 2
            bridge_angle = np.arctan2(y - py, x - px)
            width = max(0.2 * px_per_um, 0.6)
            parts.bridges.add(
                present,
                mid_y[present],
                mid_x[present],
                length[present],
                bridge_angle[present],
                width,
            )
        previous = (y, x)
    parts.nucleus_od[:] = look.stain["nucleus"]
    parts.nucleus_density[:] = rng.uniform(1.0, 1.25, n)
    parts.chromatin_fine[:] = 0.12
    parts.chromatin_coarse[:] = 0.28
    parts.nucleus_wobble[:] = 0.25 * px_per_um
    parts.cyto_od[:] = look.stain["neutro_cyto"]
    parts.cyto_density[:] = rng.uniform(0.8, 1.2, n)
    parts.cyto_texture[:] = 0.15
    parts.granule_amount[:, 0] = rng.uniform(0.2, 0.4, n)
    parts.granule_od[:, 0] = look.stain["neutro_granule"]


def _shape_eosinophil(rng, parts, cells, look, preset, px_per_um) -> None:
    n = len(parts.radius)
    radius = parts.radius
    axis = rng.uniform(0, 2 * np.pi, n)
    spread = 0.3 * radius * rng.uniform(0.85, 1.15, n)
    everyone = np.arange(n)
    for side in (-1, 1):
        y, x = _polar(side * spread, axis)
        a = 0.3 * radius * rng.uniform(0.9, 1.1, n)
        b = a * rng.uniform(0.7, 0.9, n)
        parts.lobes.add(everyone, y, x, a, b, axis + np.pi / 2 + rng.normal(0, 0.3, n))
    parts.bridges.add(everyone, 0.0, 0.0, spread, axis, max(0.25 * px_per_um, 0.6))
    parts.nucleus_od[:] = look.stain["nucleus"]
    parts.nucleus_density[:] = rng.uniform(0.9, 1.15, n)
    parts.chromatin_fine[:] = 0.1
    parts.chromatin_coarse[:] = 0.22
    parts.nucleus_wobble[:] = 0.2 * px_per_um
    parts.cyto_od[:] = 0.5 * look.stain["neutro_cyto"] + 0.3 * look.stain["eos_granule"]
    parts.cyto_density[:] = 1.0
    parts.cyto_texture[:] = 0.1
    parts.granule_amount[:, 1] = rng.uniform(0.25, 0.35, n)
    parts.granule_od[:, 1] = look.stain["eos_granule"]
    # CBFB::MYH11 fields: abnormal eosinophils with large dark purple granules among the orange.
    strength = _feature_strength(rng, preset, n, absent=0.0)
    abnormal = cells.large
    cells.strength = np.where(abnormal, strength, 0.0)
    parts.granule_amount[:, 2] = np.where(abnormal, 0.05 + 0.12 * strength, 0.0)
    parts.granule_od[:, 2] = look.stain["dark_granule"]


def _shape_lymphocyte(rng, parts, cells, look, preset, px_per_um) -> None:
    """Small lymphocytes (dense round nucleus, thin sky-blue rim) and large ones (paler, more
    cytoplasm); blast-like large ones drift towards a blast's look."""
    n = len(parts.radius)
    large = cells.large
    like = _blast_likeness(rng, preset, large)
    grow = 1 + 0.12 * like
    parts.radius *= grow.astype(np.float32)
    cells.radius_px = cells.radius_px * grow
    cells.diameter_um = cells.diameter_um * grow
    ratio = np.where(
        large,
        _lerp(rng.uniform(0.66, 0.78, n), rng.uniform(0.74, 0.84, n), like),
        rng.uniform(0.84, 0.92, n),
    )
    y, x, a, b, _ = _single_nucleus(rng, parts, np.arange(n), ratio, (0.3, 1.0), (1.0, 1.08))
    parts.lobes.add(np.arange(n), y, x, a, b, rng.uniform(0, np.pi, n))
    parts.nucleus_od[:] = _mix(look.stain["nucleus"], look.stain["blast_nucleus"], 0.7 * like)
    parts.nucleus_density[:] = np.where(
        large,
        _lerp(rng.uniform(0.95, 1.15, n), rng.uniform(0.74, 0.86, n), like),
        rng.uniform(1.2, 1.45, n),
    )
    parts.chromatin_fine[:] = np.where(large, _lerp(0.16, 0.24, like), 0.1)
    parts.chromatin_coarse[:] = np.where(large, _lerp(0.22, 0.17, like), 0.35)
    parts.nucleus_wobble[:] = 0.18 * px_per_um
    parts.cyto_od[:] = _mix(look.stain["lymph_cyto"], look.stain["basophilic"], like)
    parts.cyto_density[:] = np.where(
        large,
        _lerp(rng.uniform(0.65, 0.95, n), rng.uniform(0.9, 1.2, n), like),
        rng.uniform(0.85, 1.15, n),
    )
    parts.cyto_texture[:] = 0.1
    azurophil = large & (rng.uniform(size=n) < 0.35)
    parts.granule_amount[:, 0] = np.where(azurophil, 0.03, 0.0)
    parts.granule_od[:, 0] = look.stain["azurophil"]
    nucleoli = large & (rng.uniform(size=n) < _lerp(0.15, 0.6, like))
    _add_nucleoli(rng, parts, nucleoli, y, x, b, _lerp(0.18, 0.45, like), px_per_um)


def _shape_monocyte(rng, parts, cells, look, preset, px_per_um) -> None:
    """Monocytes: folded / kidney nucleus with lacy chromatin, grey-blue vacuolated cytoplasm;
    the round (blast-like) ones drift towards a blast's look."""
    n = len(parts.radius)
    round_ = cells.large
    like = _blast_likeness(rng, preset, round_)
    ratio = np.where(
        round_,
        _lerp(rng.uniform(0.68, 0.78, n), rng.uniform(0.74, 0.84, n), like),
        rng.uniform(0.6, 0.7, n),
    )
    y, x, a, b, direction = _single_nucleus(
        rng, parts, np.arange(n), ratio, (0.2, 0.8), (1.0, 1.15)
    )
    parts.lobes.add(np.arange(n), y, x, a, b, rng.uniform(0, np.pi, n))
    folded = np.flatnonzero(~round_ & (rng.uniform(size=n) < 0.85))
    fold_angle = direction + np.pi + rng.normal(0, 0.5, n)
    depth = a * rng.uniform(0.2, 0.45, n)
    fy, fx = _polar(1.75 * a - depth, fold_angle)
    parts.folds.add(folded, (y + fy)[folded], (x + fx)[folded], (0.75 * a)[folded])
    parts.nucleus_od[:] = _mix(look.stain["nucleus"], look.stain["blast_nucleus"], 0.7 * like)
    parts.nucleus_density[:] = np.where(
        round_,
        _lerp(rng.uniform(0.72, 0.88, n), rng.uniform(0.74, 0.86, n), like),
        rng.uniform(0.78, 0.92, n),
    )
    parts.chromatin_fine[:] = np.where(round_, _lerp(0.22, 0.24, like), 0.26)
    parts.chromatin_coarse[:] = np.where(round_, _lerp(0.1, 0.17, like), 0.15)
    parts.nucleus_wobble[:] = _lerp(0.35, 0.15, like) * px_per_um
    blue = np.where(round_, 0.3 + 0.7 * like, 0.0)
    parts.cyto_od[:] = _mix(look.stain["mono_cyto"], look.stain["basophilic"], blue)
    parts.cyto_density[:] = rng.uniform(0.85, 1.15, n)
    parts.cyto_texture[:] = 0.15
    parts.vacuoles[:] = np.where(round_, 0.03 * (1 - like), rng.uniform(0.04, 0.12, n))
    parts.granule_amount[:, 0] = 0.08 * (1 - like)
    parts.granule_od[:, 0] = look.stain["neutro_granule"]
    nucleoli = round_ & (rng.uniform(size=n) < 0.6 * like)
    _add_nucleoli(rng, parts, nucleoli, y, x, b, _lerp(0.18, 0.45, like), px_per_um)
