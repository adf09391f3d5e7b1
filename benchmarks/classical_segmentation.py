"""A competent classical smear segmenter: the baseline the shipped Cellpose model must beat.

1. Foreground: the summed optical density (relative to the field's background) above its Li
   threshold, small holes (red-cell pallor) filled.
2. Nuclei: the haematoxylin channel of a colour deconvolution (``skimage.color.rgb2hed``) above
   its Otsu threshold inside the foreground, closed over 1.5 µm so a lobed nucleus is one marker,
   components under 6 µm² dropped.
3. Red-cell markers: peaks of the foreground's distance transform (at least 0.35 red-cell
   radii deep and 0.6 radii apart) outside the nuclei.
4. Marker-controlled watershed of the negated distance transform within the foreground (nuclei
   seeded at their full extent, so white cells grow from their nuclei); masks under 15 pixels
   dropped.

All sizes are physical, converted with the field's pixel size (µm per pixel).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.color import rgb2hed
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_li, threshold_otsu
from skimage.morphology import disk, remove_small_holes, remove_small_objects
from skimage.segmentation import watershed

from blastscope.cells import optical_density

RED_CELL_DIAMETER_UM = 7.5


def classical_segment(image: np.ndarray, pixel_size_um: float) -> np.ndarray:
    """Instance labels (Y, X) int32 of an RGB smear field (Y, X, 3) uint8."""
    radius_px = RED_CELL_DIAMETER_UM / pixel_size_um / 2
    red_cell_area = np.pi * radius_px**2
    density = gaussian(optical_density(image).sum(axis=-1), sigma=max(1.0, 0.15 / pixel_size_um))
    foreground = density > threshold_li(density)
    foreground = remove_small_holes(foreground, max_size=int(0.4 * red_cell_area))
    foreground = ndi.binary_opening(foreground, structure=disk(max(1, round(0.3 / pixel_size_um))))

    haematoxylin = gaussian(rgb2hed(image)[..., 0], sigma=max(1.0, 0.2 / pixel_size_um))
    inside = haematoxylin[foreground]
    nuclei = np.zeros_like(foreground)
    if inside.size:
        nuclei = (haematoxylin > threshold_otsu(inside)) & foreground
    nuclei = ndi.binary_closing(nuclei, structure=disk(max(1, round(1.5 / pixel_size_um))))
    nuclei = remove_small_objects(nuclei, max_size=int(6.0 / pixel_size_um**2))
    markers, n_nuclei = ndi.label(nuclei)

    distance = ndi.distance_transform_edt(foreground)
    peaks = peak_local_max(
        distance,
        min_distance=max(1, int(0.6 * radius_px)),
        threshold_abs=0.35 * radius_px,
        labels=(foreground & ~ndi.binary_dilation(nuclei, iterations=3)).astype(np.int32),
        exclude_border=False,
    )
    for index, (row, col) in enumerate(peaks, start=n_nuclei + 1):
        markers[row, col] = index
    labels = watershed(-distance, markers, mask=foreground)
    sizes = np.bincount(labels.ravel())
    small = sizes < 15
    small[0] = False
    labels[small[labels]] = 0
    present = np.unique(labels)
    lookup = np.zeros(int(labels.max()) + 1, np.int32)
    lookup[present[present > 0]] = np.arange(1, (present > 0).sum() + 1, dtype=np.int32)
    return lookup[labels]
