"""The one palette of blastscope: the viewer, the overlay PNG, the report and the GeoJSON take
every colour from here.

Categorical colours are Okabe-Ito's (told apart with every common colour-vision deficiency);
blast probabilities are drawn with viridis (perceptually uniform, readable in grey). Mutation
classes keep one colour by name wherever they appear; classes blastscope does not know take one
of the spare colours (Paul Tol's muted set), chosen by their name among those the model's other
classes have not taken (so the classes of one model never share a colour).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

RGB = tuple[int, int, int]

ORANGE: RGB = (230, 159, 0)
SKY_BLUE: RGB = (86, 180, 233)
BLUISH_GREEN: RGB = (0, 158, 115)
YELLOW: RGB = (240, 228, 66)
BLUE: RGB = (0, 114, 178)
VERMILLION: RGB = (213, 94, 0)
REDDISH_PURPLE: RGB = (204, 121, 167)
GREY: RGB = (153, 153, 153)
DARK_GREY: RGB = (90, 90, 90)

MUTATION_COLOURS: dict[str, RGB] = {
    "PML::RARA": ORANGE,
    "NPM1": SKY_BLUE,
    "CBFB::MYH11": BLUISH_GREEN,
    "RUNX1::RUNX1T1": VERMILLION,
}
"""The four mutation classes of the shipped model."""

SPARE_COLOURS: tuple[RGB, ...] = (
    (136, 34, 85),  # wine
    (68, 170, 153),  # teal
    (153, 153, 51),  # olive
    (221, 204, 119),  # sand
    (51, 34, 136),  # indigo
    (170, 68, 153),  # purple
    (136, 204, 238),  # cyan
)
"""For classes of the user's own models (e.g. ``other AML``): Paul Tol's muted colours (also
safe with colour-vision deficiencies), none of them a known class's or a cell class's colour."""

P_BLAST_COLORMAP = "viridis"
"""Matplotlib / napari name of the colormap of p_blast over 0..1."""


def mutation_class_colour(name: str, classes: Sequence[str] = ()) -> RGB:
    """The colour (0-255) of mutation class ``name`` of a model whose classes are ``classes``
    (:func:`mutation_class_colours`); without them, a known class's own or the spare colour
    its name chooses."""
    if name in classes:
        return mutation_class_colours(classes)[list(classes).index(name)]
    return mutation_class_colours([name])[0]


def mutation_class_colours(classes: Sequence[str]) -> list[RGB]:
    """The colours of a model's mutation classes: a known class's own; each other class the
    spare colour its name chooses, or the next one its earlier classes have not taken (the
    same list gives the same colours everywhere it is drawn; up to 7 classes of the user's
    own never share one)."""
    taken = {MUTATION_COLOURS[name] for name in classes if name in MUTATION_COLOURS}
    colours = []
    for name in classes:
        if name in MUTATION_COLOURS:
            colours.append(MUTATION_COLOURS[name])
            continue
        first = hashlib.sha256(name.encode()).digest()[0] % len(SPARE_COLOURS)
        order = [
            SPARE_COLOURS[(first + step) % len(SPARE_COLOURS)] for step in range(len(SPARE_COLOURS))
        ]
        colour = next((spare for spare in order if spare not in taken), order[0])
        taken.add(colour)
        colours.append(colour)
    return colours


def p_blast_rgb(values: np.ndarray, nan_colour: RGB = GREY) -> np.ndarray:
    """(N, 3) uint8 viridis colours of probabilities in [0, 1]; ``nan_colour`` where NaN."""
    from matplotlib import colormaps

    values = np.asarray(values, dtype=np.float64)
    rgba = colormaps[P_BLAST_COLORMAP](np.nan_to_num(values, nan=0.0).clip(0.0, 1.0))
    colours = np.round(rgba[:, :3] * 255).astype(np.uint8)
    colours[np.isnan(values)] = nan_colour
    return colours
