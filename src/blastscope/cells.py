"""The cells table: one row per segmented cell, with size, position and the nuclear-stain measure.

The stain measure behind ``is_nucleated``
-----------------------------------------
Romanowsky stains (Wright, Giemsa, May-Grünwald-Giemsa) colour nuclei (and basophilic cytoplasm)
with azure / methylene blue, which absorbs red light, and red cells and eosinophil granules with
eosin, which absorbs green and blue. Per pixel we compute the optical density of each channel
relative to the field's own background (``OD_c = ln(I0_c / I_c)``, ``I0`` = the median colour
of the brightest 3% of pixels, so the measure follows the lamp, the camera and the slide), and
the **nuclear-stain index**

    ``nuclear_index = OD_red - 0.5 * OD_blue``

which is high for purple-blue (nuclear) pixels, near 0 for background and pale cytoplasm, and
negative for pink red cells and orange granules. Subtracting the blue term removes the eosin
that overlaps a nucleus (eosinophils); a weight of 1 lost the nuclei of eosinophils under their
granules, 0 let overlapping red cells count as purple (measured on synthetic truth and on BCCD
cells, below). Both terms scale with the stain's strength, so a paler or darker stain moves the
index less than it moves the raw colours.

Per cell the table carries

- ``nuclear_fraction``: the share of the cell's pixels whose nuclear index exceeds
  :data:`NUCLEAR_INDEX_LEVEL` (a purple pixel);
- ``nuclear_index_mean``: the mean nuclear index over the cell;
- ``mean_od``: the mean optical density (sum of the three channels) over the cell.

``is_nucleated`` (white cells and blasts) is ``nuclear_fraction >= NUCLEATED_MIN_FRACTION`` and
``area_um2 >= NUCLEATED_MIN_AREA_UM2``: red cells carry almost no purple pixels, and platelets,
though purple, are smaller than any white cell (2-3 µm across versus 7 µm for the smallest
lymphocyte). Cells cut by the image border need only ``NUCLEATED_MIN_AREA_AT_BORDER_UM2`` (their
visible part can be small). Checked against the synthetic generator's truth and the BCCD
white-cell boxes in tests/test_cells.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

NUCLEAR_INDEX_LEVEL = 0.2
"""Nuclear-stain index (natural-log OD units) above which a pixel counts as purple."""

BLUE_WEIGHT = 0.5
"""Weight of OD_blue subtracted from OD_red in the nuclear-stain index."""

NUCLEATED_MIN_FRACTION = 0.1
"""Share of a cell's pixels that must be purple for the cell to count as nucleated."""

NUCLEATED_MIN_AREA_UM2 = 20.0
"""Smallest area (µm²) of a nucleated cell; purple objects below it are platelets."""

NUCLEATED_MIN_AREA_AT_BORDER_UM2 = 8.0
"""The same for a cell cut by the image border (a whole platelet is under 8 µm²)."""

BACKGROUND_BRIGHTEST_SHARE = 0.03

COLUMNS = (
    "label",
    "centroid_y",
    "centroid_x",
    "area_px",
    "area_um2",
    "diameter_um",
    "touches_border",
    "nuclear_fraction",
    "nuclear_index_mean",
    "mean_od",
    "is_nucleated",
)


def background_rgb(image: np.ndarray) -> np.ndarray:
    """The field's background colour (3,) float: the median of its brightest 3% of pixels.

    ``image`` is (Y, X, 3) uint8.
    """
    pixels = image.reshape(-1, 3)
    if len(pixels) > 400_000:
        pixels = pixels[:: len(pixels) // 200_000]
    luminance = pixels.sum(axis=1, dtype=np.float32)  # exact: sums of three 8-bit values
    level = np.quantile(luminance, 1.0 - BACKGROUND_BRIGHTEST_SHARE)
    return np.median(pixels[luminance >= level], axis=0).astype(np.float32).clip(1.0, None)


def optical_density(image: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
    """Per-channel optical density (Y, X, 3) float32 relative to the field's background.

    ``OD_c = ln(I0_c / I_c)``, clipped at 0 (pixels brighter than the background).
    """
    if background is None:
        background = background_rgb(image)
    intensity = np.maximum(image.astype(np.float32), 1.0)
    return np.log(background / intensity).clip(0.0, None).astype(np.float32)


def nuclear_stain_index(image: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
    """The per-pixel nuclear-stain index ``OD_red - 0.5 OD_blue`` (Y, X) float32 (module text)."""
    density = optical_density(image, background)
    return density[..., 0] - BLUE_WEIGHT * density[..., 2]


def measure_cells(
    image: np.ndarray,
    labels: np.ndarray,
    pixel_size_um: float,
    *,
    background: np.ndarray | None = None,
) -> pd.DataFrame:
    """The cells table of ``labels`` on ``image``: one row per label, in label order.

    ``image`` is (Y, X, 3) uint8 RGB, ``labels`` (Y, X) integers (0 = background), and
    ``pixel_size_um`` µm per pixel; ``background`` (3,) the colour densities are measured against
    (default :func:`background_rgb` of ``image``; a whole slide's, for its tiles). Columns:
    :data:`COLUMNS` (see the module text for the stain measures). Measured cell by cell inside each
    bounding box (``scipy.ndimage.find_objects``), so memory follows the largest cell, not the
    field.
    """
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"measure_cells needs an RGB image (Y, X, 3), got shape {image.shape}; convert it "
            "with blastscope.io.to_rgb_uint8 first."
        )
    if labels.shape != image.shape[:2]:
        raise ValueError(
            f"Labels of shape {labels.shape} do not match the image's {image.shape[:2]}; "
            "measure the labels on the image they were segmented from."
        )
    if not np.isfinite(pixel_size_um) or pixel_size_um <= 0:
        raise ValueError(
            f"Pixel size {pixel_size_um} µm is not a positive number; give µm per pixel."
        )
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        labels = labels.astype(np.int64)
    boxes = ndi.find_objects(labels)  # negative labels are skipped like 0
    ids = np.array([i + 1 for i, box in enumerate(boxes) if box is not None], np.int64)
    if len(ids) == 0:
        return _empty_table()
    if background is None:
        background = background_rgb(image)
    height, width = labels.shape
    sums = np.zeros((len(ids), 6), np.float64)  # area, rows, cols, purple, index, OD
    touches = np.zeros(len(ids), bool)
    for row, label in enumerate(ids):
        box = boxes[label - 1]
        sums[row] = _cell_sums(image[box], labels[box] == label, box, background)
        touches[row] = (
            box[0].start == 0 or box[1].start == 0 or box[0].stop == height or box[1].stop == width
        )
    area = sums[:, 0]
    centroid_y, centroid_x = sums[:, 1] / area, sums[:, 2] / area
    nuclear_fraction, index_mean, od_mean = (sums[:, 3:] / area[:, None]).T
    return cells_table(
        ids,
        area,
        (centroid_y, centroid_x),
        touches,
        (nuclear_fraction, index_mean, od_mean),
        pixel_size_um,
    )


def cells_table(
    ids: np.ndarray,
    area: np.ndarray,
    centroids: tuple[np.ndarray, np.ndarray],
    touches: np.ndarray,
    stain: tuple[np.ndarray, np.ndarray, np.ndarray],
    pixel_size_um: float,
) -> pd.DataFrame:
    """The cells table from per-cell measures: pixel ``area``, (row, column) ``centroids``,
    whether each cell ``touches`` the border, and its ``stain`` (nuclear fraction, mean
    nuclear-stain index, mean optical density); derives the µm sizes and ``is_nucleated``."""
    centroid_y, centroid_x = centroids
    nuclear_fraction, index_mean, od_mean = stain
    area_um2 = area * pixel_size_um**2
    table = pd.DataFrame(
        {
            "label": ids,
            "centroid_y": centroid_y,
            "centroid_x": centroid_x,
            "area_px": area.astype(np.int64),
            "area_um2": area_um2,
            "diameter_um": 2.0 * np.sqrt(area_um2 / np.pi),
            "touches_border": touches.astype(bool),
            "nuclear_fraction": nuclear_fraction,
            "nuclear_index_mean": index_mean,
            "mean_od": od_mean,
        }
    )
    table["is_nucleated"] = (nuclear_fraction >= NUCLEATED_MIN_FRACTION) & (
        area_um2 >= np.where(touches, NUCLEATED_MIN_AREA_AT_BORDER_UM2, NUCLEATED_MIN_AREA_UM2)
    )
    return table


def _cell_sums(
    crop: np.ndarray, mask: np.ndarray, box: tuple[slice, slice], background: np.ndarray
) -> np.ndarray:
    """Pixel count and sums of row, column, purple, nuclear index and OD over one cell (6,).

    ``crop`` (h, w, 3) is the cell's bounding box and ``mask`` (h, w) its pixels. Sums run
    pixel by pixel in row-major order, as ``ndimage.sum_labels`` does over the whole image, so
    the table is the same to the last bit as a full-image measurement.
    """
    rows, cols = np.nonzero(mask)
    density = optical_density(crop[rows, cols], background)
    index = density[:, 0] - BLUE_WEIGHT * density[:, 2]
    values = np.stack(
        [
            np.ones(len(rows)),
            rows + float(box[0].start),
            cols + float(box[1].start),
            (index > NUCLEAR_INDEX_LEVEL).astype(np.float64),
            index.astype(np.float64),
            density.sum(axis=-1).astype(np.float64),
        ]
    )
    # np.add.accumulate adds in order (np.sum would add pairwise, changing the last bits).
    return np.add.accumulate(values, axis=1)[:, -1]


def _empty_table() -> pd.DataFrame:
    dtypes = {
        "label": np.int64,
        "area_px": np.int64,
        "touches_border": bool,
        "is_nucleated": bool,
    }
    return pd.DataFrame(
        {name: pd.Series([], dtype=dtypes.get(name, np.float64)) for name in COLUMNS}
    )
