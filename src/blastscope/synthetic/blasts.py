"""The blast shaper and the mutation morphology it draws (see the package docstring): Auer rods,
granules, bilobed, cup-like and folded nuclei, salmon cytoplasm and the perinuclear hof."""

from __future__ import annotations

import numpy as np

from blastscope.synthetic.cell_parts import (
    _add_nucleoli,
    _feature_strength,
    _mix,
    _polar,
    _single_nucleus,
)


def _shape_blast(rng, parts, cells, look, preset, px_per_um) -> None:
    """Myeloblasts: large, high N:C, fine open chromatin, nucleoli, basophilic rim; + mutation."""
    n = len(parts.radius)
    everyone = np.arange(n)
    typical = rng.beta(*preset.blast_typicality, n)
    shrink = 0.8 + 0.2 * typical
    parts.radius *= shrink.astype(np.float32)
    cells.radius_px = cells.radius_px * shrink
    cells.diameter_um = cells.diameter_um * shrink
    strength = _feature_strength(rng, preset, n)
    cells.strength = strength
    mutation = look.mutation
    # Every random draw happens whatever the mutation, so fields that differ only in their
    # mutation share stain, layout and blasts and differ only in the features.
    ratio = 0.72 + 0.13 * typical + rng.uniform(-0.03, 0.03, n)
    ratio_shift = {"RUNX1::RUNX1T1": 0.1, "CBFB::MYH11": 0.05}.get(mutation, 0.0)
    ratio = ratio - ratio_shift * strength
    y, x, a, b, direction = _single_nucleus(rng, parts, everyone, ratio, (0.0, 0.7), (1.0, 1.1))
    tilt = rng.uniform(0, np.pi, n)
    wide_side = direction + np.pi + rng.normal(0, 0.4, n)
    lobe_axis = rng.uniform(0, 2 * np.pi, n)
    u_rods, u_count = rng.uniform(size=n), rng.uniform(size=(n, 3))
    rod_length_um = rng.uniform(0, 1, (n, 4))
    rod_jitter = rng.normal(0, 1, (n, 4))
    fold_depth = rng.uniform(0.15, 0.25, n)
    cup_angle = rng.uniform(0, 2 * np.pi, n)

    if mutation == "PML::RARA":
        # Bilobed (butterfly) nucleus: two overlapping lobes drifting apart with the strength.
        split = strength > 0
        separation = 0.5 * a * strength
        for side in (-1, 1):
            ly, lx = _polar(side * separation, lobe_axis)
            parts.lobes.add(
                everyone[split],
                (y + ly)[split],
                (x + lx)[split],
                (0.74 * a)[split],
                (0.8 * b)[split],
                (lobe_axis + np.pi / 2)[split],
            )
            # The waist between the lobes: a notch on either side.
            ny, nx = _polar(0.85 * b, lobe_axis + side * np.pi / 2)
            parts.folds.add(
                everyone[split], (y + ny)[split], (x + nx)[split], (0.38 * b * strength)[split]
            )
        parts.lobes.add(everyone[~split], y[~split], x[~split], a[~split], b[~split], tilt[~split])
    else:
        parts.lobes.add(everyone, y, x, a, b, tilt)

    parts.nucleus_od[:] = _mix(
        look.stain["blast_nucleus"], look.stain["nucleus"], 0.6 * (1 - typical)
    )
    parts.nucleus_density[:] = 0.84 - 0.1 * typical + rng.uniform(-0.05, 0.05, n)
    parts.chromatin_fine[:] = 0.24
    parts.chromatin_coarse[:] = 0.26 - 0.18 * typical
    parts.nucleus_wobble[:] = 0.15 * px_per_um
    # Nucleoli: 1-4 pale spots, clearer in textbook blasts.
    nucleoli = rng.uniform(size=n) < 0.25 + 0.75 * typical
    _add_nucleoli(rng, parts, nucleoli, y, x, b, 0.3 + 0.3 * typical, px_per_um)
    parts.cyto_od[:] = look.stain["basophilic"]
    parts.cyto_density[:] = rng.uniform(0.9, 1.2, n)
    parts.cyto_texture[:] = 0.1
    azurophil = rng.uniform(size=n) < 0.3
    parts.granule_amount[:, 0] = np.where(azurophil, 0.03, 0.0)
    parts.granule_od[:, 0] = look.stain["azurophil"]

    # Where the cytoplasm is widest: opposite the nucleus' offset.
    rim_inner = np.clip(b - np.hypot(y, x), 0, None)
    rod_distance = rim_inner + 0.4 * (parts.radius - rim_inner)
    if mutation == "PML::RARA":
        parts.granule_amount[:, 1] = np.where(strength > 0, 0.05 + 0.35 * strength, 0.0)
        parts.granule_od[:, 1] = look.stain["azurophil"]
        has_rods = u_rods < 1.1 * strength
        n_rods = np.where(has_rods, 1 + (u_count < 0.5 * strength[:, None]).sum(axis=1), 0)
        _add_rods(
            parts,
            n_rods,
            rod_distance,
            wide_side,
            3.0 + 2.5 * rod_length_um,
            rod_jitter,
            0.28,
            0.8 + 0.5 * strength,
            px_per_um,
        )
    elif mutation == "NPM1":
        cup = np.flatnonzero(strength > 0)
        cy, cx = _polar(0.5 * b, cup_angle)
        parts.pale_nucleus.add(
            cup, (y + cy)[cup], (x + cx)[cup], (0.45 * b)[cup], (0.75 * strength)[cup]
        )
        ey, ex = _polar(1.02 * b, cup_angle)
        parts.folds.add(cup, (y + ey)[cup], (x + ex)[cup], (0.3 * b * strength)[cup])
        parts.granule_amount[:, 0] *= 1 - strength
    elif mutation == "CBFB::MYH11":
        fold = np.flatnonzero(strength > 0)
        depth = a * (fold_depth + 0.3 * strength)
        fy, fx = _polar(1.75 * a - depth, wide_side)
        parts.folds.add(fold, (y + fy)[fold], (x + fx)[fold], (0.75 * a)[fold])
        parts.chromatin_coarse[:] += 0.1 * strength
        mix = (0.8 * strength)[:, None]
        parts.cyto_od[:] = (1 - mix) * parts.cyto_od + mix * look.stain["mono_cyto"]
        parts.granule_amount[:, 2] = np.where(strength > 0, 0.012 + 0.03 * strength, 0.0)
        parts.granule_od[:, 2] = look.stain["dark_granule"]
    elif mutation == "RUNX1::RUNX1T1":
        mix = (0.85 * strength)[:, None]
        parts.cyto_od[:] = (1 - mix) * parts.cyto_od + mix * look.stain["salmon"]
        hof = np.flatnonzero(strength > 0)
        hof_r = np.minimum(0.32 * b, np.clip(parts.radius - rim_inner, 1, None) * 0.6)
        hy, hx = _polar(b + 0.2 * hof_r, wide_side)
        parts.pale_cytoplasm.add(
            hof, (y + hy)[hof], (x + hx)[hof], hof_r[hof], (0.8 * strength)[hof]
        )
        parts.pale_nucleus.add(hof, (y + hy)[hof], (x + hx)[hof], hof_r[hof], (0.4 * strength)[hof])
        n_rods = (u_rods < 1.2 * strength).astype(np.int64)
        _add_rods(
            parts,
            n_rods,
            rod_distance,
            wide_side,
            5.5 + 3.0 * rod_length_um,
            rod_jitter,
            0.22,
            0.9 + 0.4 * strength,
            px_per_um,
        )


def _add_rods(
    parts, n_rods, distance, side, length_um, jitter, half_width_um, darkness, px_per_um
) -> None:
    """Auer rods: needles in the widest cytoplasm, laid across it; several form a bundle."""
    cy, cx = _polar(distance, side)
    across = side + np.pi / 2 + 0.5 * jitter[:, 0]
    for k in range(int(n_rods.max(initial=0))):
        has = np.flatnonzero(k < n_rods)
        shift = (k - (n_rods - 1) / 2) * 0.7 * px_per_um
        sy, sx = _polar(shift, side)
        along = 0.4 * px_per_um * jitter[:, k % 4]
        ay, ax = _polar(along, across)
        parts.rods.add(
            has,
            (cy + sy + ay)[has],
            (cx + sx + ax)[has],
            (length_um[:, k] * px_per_um / 2)[has],
            across[has],
            max(half_width_um * px_per_um, 0.45),
            darkness[has],
        )
