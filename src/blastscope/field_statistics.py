"""Whole-image statistics taken once and given to every piece of an image analysed in pieces.

A field is analysed in one piece, and three of its steps look at the whole field: the
segmenter's per-channel intensity percentiles (:func:`blastscope.segment.normalize_channels`),
the background colour that optical densities are measured against
(:func:`blastscope.cells.background_rgb`) and the colour a crop is padded with outside the image
(:func:`blastscope.crops.background_fill`). A whole slide is analysed tile by tile; were these
taken per tile, a tile of dense marrow and a tile of thin film would be normalised apart, and a
cell would measure differently by the tile it fell in. So they are taken once, from full-
resolution patches of the slide (:func:`blastscope.wholeslide.survey_slide`), and every tile uses
the same :class:`FieldStatistics`. (Classifiers trained with ``stain_normalisation="cells"``
scale densities by the median density of the piece's own cells, which stays per tile.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from blastscope.cells import background_rgb

MAX_REFERENCE_PIXELS = 500_000
"""The reference is thinned evenly to at most this many pixels (the percentiles need no more)."""
MIN_GLASS_PIXELS = 1_000
"""Fewer pale pixels than this in the reference: the fill is the median of all of it."""


@dataclass(frozen=True)
class FieldStatistics:
    """The whole-image statistics of an image analysed in pieces.

    ``reference`` (N, 3) uint8: pixels that stand for the whole image (a low pyramid level,
    thinned), which the segmenter's intensity percentiles are taken from; ``background`` (3,)
    the background colour (:func:`blastscope.cells.background_rgb` of the reference);
    ``fill`` (3,) the crop padding colour, the median of the reference's glass pixels.
    """

    reference: np.ndarray
    background: np.ndarray
    fill: np.ndarray

    def reference_image(self) -> np.ndarray:
        """The reference as a (N, 1, 3) image, for functions that take (Y, X, 3) pixels."""
        return self.reference[:, None, :]


def stained_pixels(rgb: np.ndarray) -> np.ndarray:
    """Which pixels of ``rgb`` (..., 3) uint8 hold stain: not the pale grey of empty glass and
    not the near black of a scanner's padding (a bool array of the leading shape)."""
    pixels = rgb[..., :3].astype(np.int16)
    spread = pixels.max(axis=-1) - pixels.min(axis=-1)
    mean = pixels.mean(axis=-1)
    return (spread > 18) | ((mean < 170) & (mean > 30))


def field_statistics(reference: np.ndarray) -> FieldStatistics:
    """The :class:`FieldStatistics` of ``reference`` ((Y, X, 3) or (N, 3) uint8 pixels standing
    for the whole image: a slide's low pyramid level, or the smear part of it)."""
    pixels = np.asarray(reference, dtype=np.uint8).reshape(-1, 3)
    if len(pixels) == 0:
        raise ValueError("Whole-image statistics need at least one reference pixel.")
    if len(pixels) > MAX_REFERENCE_PIXELS:
        pixels = pixels[:: -(-len(pixels) // MAX_REFERENCE_PIXELS)]
    pixels = np.ascontiguousarray(pixels)
    background = background_rgb(pixels[:, None, :])
    near_black = pixels.astype(np.int16).mean(axis=-1) <= 30
    glass = ~stained_pixels(pixels) & ~near_black
    fill_from = pixels[glass] if glass.sum() >= MIN_GLASS_PIXELS else pixels
    fill = np.median(fill_from, axis=0).astype(np.float32)
    return FieldStatistics(reference=pixels, background=background, fill=fill)
