"""Stain normalisation of a field against its own cells.

Romanowsky stains differ between labs, batches and scanners: a red cell is pink on one slide and
mauve on the next, a nucleus blue or purple. A model trained on one look misreads another (a
nucleated-cell classifier trained on pink red cells calls mauve ones white cells). Most of a
smear's objects are red cells, whatever the lab, so a field can be brought to one look by its
own objects:

1. optical density per channel relative to the field's background, ``OD_c = ln(I0_c / I_c)``
   (``I0`` the background colour, :func:`blastscope.cells.background_rgb`);
2. each object's mean optical density per channel, and the median of those over the objects
   (each object counts once, so one large white cell does not outweigh ten red cells);
3. every pixel's optical density scaled per channel so that this median becomes
   :data:`REFERENCE_CELL_OD`, and the field rendered back on a white background.

Stronger or weaker staining, a colour cast of the stain and of the lamp are removed; what stays
is how each object differs from the field's typical cell, which is what separates a nucleus
from a red cell. Fields with fewer than :data:`MIN_OBJECTS` objects are left as they are.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from blastscope.cells import background_rgb

REFERENCE_CELL_OD = np.array([0.35, 0.55, 0.30], dtype=np.float32)
"""Optical density (R, G, B) the field's median object is brought to: a pink red cell."""
MIN_OBJECTS = 3
STAIN_NORMALISATIONS = ("none", "cells")
_MIN_MEDIAN_OD = 0.02


def normalise_to_cells(
    image: np.ndarray, labels: np.ndarray, background: np.ndarray | None = None
) -> np.ndarray:
    """``image`` (Y, X, 3) uint8 with its stain normalised against its objects ``labels`` (Y, X)
    (see the module docstring); a copy, uint8. ``background`` (3,): the background colour
    (default :func:`~blastscope.cells.background_rgb` of ``image``)."""
    if image.ndim != 3 or image.shape[-1] != 3 or labels.shape != image.shape[:2]:
        raise ValueError(
            f"normalise_to_cells needs an RGB image (Y, X, 3) and labels of the same (Y, X), got "
            f"{image.shape} and {labels.shape}."
        )
    ids = np.unique(labels)
    ids = ids[ids > 0]
    if len(ids) < MIN_OBJECTS:
        return image.copy()
    if background is None:
        background = background_rgb(image)
    density = np.log(background / np.maximum(image.astype(np.float32), 1.0)).clip(0.0, None)
    per_object = np.stack(
        [ndi.mean(density[..., channel], labels, ids) for channel in range(3)], axis=1
    )
    typical = np.median(per_object, axis=0).clip(_MIN_MEDIAN_OD, None).astype(np.float32)
    density *= REFERENCE_CELL_OD / typical
    return (255.0 * np.exp(-density)).clip(0.0, 255.0).round().astype(np.uint8)
