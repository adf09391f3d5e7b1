"""Per-cell colours as two Image layers whose cost of a threshold change does not grow with cells.

- The **colour layer** holds one value per pixel, looked up once from the labels: the cell's
  ``p_blast`` (colormap viridis over 0..1, with napari's colour bar as the legend), or, in the
  mutation view, the index of the cell's top mutation class (a categorical colormap). Pixels
  outside nucleated cells are NaN, drawn transparent.
- The **threshold veil** holds the cell's ``p_blast`` (+2 where the user marked the cell a blast,
  -2 where they marked it a non-blast). Its colormap is fixed, a step at the middle: below it a
  pale veil that dims the cell, above it nothing. Its contrast limits are ``(t - 1, t + 1)``,
  which puts the threshold ``t`` exactly at the step; a threshold change sets two numbers (a
  shader uniform), so it costs the same for 100 or 100,000 cells and is exact (``p >= t`` is
  above the step, to float32 precision).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from napari.utils.colormaps import Colormap, ensure_colormap

from blastscope.palette import P_BLAST_COLORMAP, mutation_class_colours

TRANSPARENT = (0.0, 0.0, 0.0, 0.0)
VEIL_RGBA = (1.0, 1.0, 1.0, 0.62)
"""Colour laid over cells below the threshold: a pale wash that dims them."""
FORCED_BLAST = 2.0
FORCED_NON_BLAST = -2.0
"""Veil values of cells the user marked: outside any threshold's (t - 1, t + 1) window."""


def p_blast_colormap() -> Colormap:
    """The palette's p_blast colormap (viridis) over 0..1, NaN transparent."""
    base = ensure_colormap(P_BLAST_COLORMAP)
    return Colormap(
        colors=base.colors,
        controls=base.controls,
        name="blastscope p_blast",
        display_name=f"p_blast ({P_BLAST_COLORMAP})",
        nan_color=TRANSPARENT,
    )


def class_colours(classes: Sequence[str]) -> list[tuple[float, float, float]]:
    """The RGB colour (0..1) of each mutation class (the palette's, by name)."""
    return [tuple(value / 255 for value in rgb) for rgb in mutation_class_colours(classes)]


def class_colormap(classes: Sequence[str]) -> Colormap:
    """One flat colour per class: class ``k`` is drawn for values in ``[k, k + 1)`` with
    contrast limits ``(0, len(classes))``; NaN transparent."""
    count = len(classes)
    colours = [(*colour, 1.0) for colour in class_colours(classes)]
    return Colormap(
        colors=colours,
        controls=np.linspace(0.0, 1.0, count + 1),
        interpolation="zero",
        name=f"blastscope classes {'/'.join(classes)}",
        display_name="top mutation class",
        nan_color=TRANSPARENT,
    )


def veil_colormap() -> Colormap:
    """The threshold veil: :data:`VEIL_RGBA` below the middle, transparent from it on."""
    return Colormap(
        colors=[VEIL_RGBA, TRANSPARENT],
        controls=[0.0, 0.5, 1.0],
        interpolation="zero",
        name="blastscope threshold veil",
        display_name="below threshold: dimmed",
        nan_color=TRANSPARENT,
    )


def veil_limits(threshold: float) -> tuple[float, float]:
    """Contrast limits of the veil that put ``threshold`` at the colormap's step."""
    return (float(threshold) - 1.0, float(threshold) + 1.0)


DENSE_LOOKUP_MAX = 2**24
"""Label ids up to this are looked up in a dense table; larger ones (a whole slide's tile x
2**20 + local id) through the sorted ids."""


def per_pixel(labels: np.ndarray, label_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A float32 image (Y, X) holding ``values[k]`` on the pixels of label ``label_ids[k]`` and
    NaN elsewhere (background, labels without a value); one lookup over the labels."""
    ids = np.asarray(label_ids, dtype=np.int64)
    top = int(max(labels.max(initial=0), ids.max(initial=0)))
    if top <= DENSE_LOOKUP_MAX:
        lookup = np.full(top + 1, np.nan, np.float32)
        lookup[ids] = values
        return lookup[labels]
    order = np.argsort(ids)
    ids, values = ids[order], np.asarray(values, dtype=np.float32)[order]
    index = np.clip(np.searchsorted(ids, labels), 0, len(ids) - 1)
    return np.where(ids[index] == labels, values[index], np.float32(np.nan))


def veil_values(p_blast: np.ndarray, override: np.ndarray) -> np.ndarray:
    """Per-cell veil values: ``p_blast``; :data:`FORCED_BLAST` / :data:`FORCED_NON_BLAST` where
    ``override`` (int8: 1 blast, 0 non-blast, -1 none) is set; NaN stays NaN (not classified)."""
    values = np.asarray(p_blast, dtype=np.float32).copy()
    values[override == 1] = FORCED_BLAST
    values[override == 0] = FORCED_NON_BLAST
    return values


def top_class_values(probabilities: np.ndarray) -> np.ndarray:
    """Per-cell values for :func:`class_colormap`: ``k + 0.5`` for the top class ``k`` of each
    row of ``probabilities`` (N, K); NaN for rows without probabilities."""
    values = np.full(len(probabilities), np.nan, np.float32)
    scored = np.isfinite(probabilities).all(axis=1)
    if scored.any():
        values[scored] = probabilities[scored].argmax(axis=1) + 0.5
    return values
