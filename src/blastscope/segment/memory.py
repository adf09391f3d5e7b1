"""The memory a run needs (:func:`estimate_memory_bytes`), the memory there is
(:func:`available_memory_bytes`) and the refusal of a run that does not fit.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from blastscope.segment.backend import SegmenterBackend
from blastscope.segment.diameter import _network_diameter
from blastscope.segment.params import SegmentationError, SegmentationParams
from blastscope.segment.tiling import _halo

IMAGE_BYTES_PER_PX = 48
"""Peak bytes per field pixel of the whole-field arrays of a run (the RGB field, its channels
while they are normalised, flows, cell probability, labels): 38 measured on a 4096 x 4096 field
(peak RSS on CPU), 48 for a margin."""
NETWORK_BYTES_PER_PX = 96
"""Peak bytes per pixel of one tile at the network's scale (the enlarged tile, its 224-pixel
patches, the network's outputs, their average, the outputs resized back): about 90 measured on
a 1024 x 1024 tile enlarged 4x (1.6 GB; the estimate says 1.7)."""
MASK_BYTES_PER_PX = 64
"""Peak bytes per pixel of one tile at the mask scale (following the flows)."""


def estimate_memory_bytes(
    shape: tuple[int, int], rescale: float, *, tile_size: int, halo_px: int
) -> int:
    """Rough peak memory (bytes) of segmenting a (Y, X) field.

    ``rescale`` is the enlargement for the network (``diam_mean`` / cell diameter in pixels),
    ``tile_size`` and ``halo_px`` the tiling (pixels). The whole-field arrays cost
    :data:`IMAGE_BYTES_PER_PX` per field pixel; one tile with its halo costs
    :data:`NETWORK_BYTES_PER_PX` per pixel at the network's scale (``rescale`` squared per field
    pixel) and :data:`MASK_BYTES_PER_PX` per pixel at the mask scale (``min(1, rescale)``).
    """
    height, width = shape
    tile_height = min(height, math.ceil(height / math.ceil(height / tile_size)) + 2 * halo_px)
    tile_width = min(width, math.ceil(width / math.ceil(width / tile_size)) + 2 * halo_px)
    per_tile_px = NETWORK_BYTES_PER_PX * rescale**2 + MASK_BYTES_PER_PX * min(1.0, rescale) ** 2
    return int(IMAGE_BYTES_PER_PX * height * width + tile_height * tile_width * per_tile_px)


def available_memory_bytes() -> int | None:
    """Memory this process can still take (bytes): psutil's available memory when psutil is
    installed, else the free physical pages; bounded by a cgroup v2 limit; None if unknown."""
    available = None
    try:
        import psutil

        available = int(psutil.virtual_memory().available)
    except ImportError:
        try:
            available = int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            available = None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        current = int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return available
    if limit.isdigit():
        left = max(0, int(limit) - current)
        available = left if available is None else min(available, left)
    return available


def _check_memory(
    shape: tuple[int, int],
    backend: SegmenterBackend,
    diameter_px: float,
    params: SegmentationParams,
    n_tiles: int,
    pixel_size_um: float,
) -> None:
    """Raise :class:`SegmentationError` with the figure and the fixes when the run of a field
    of ``shape`` would need more memory than :func:`available_memory_bytes`."""
    rescale = backend.diam_mean / _network_diameter(backend, diameter_px)
    halo = _halo(params, diameter_px) if n_tiles > 1 else 0
    need = estimate_memory_bytes(shape, rescale, tile_size=params.tile_size, halo_px=halo)
    available = available_memory_bytes()
    if available is None or need <= available:
        return
    height, width = shape
    raise SegmentationError(
        f"Segmenting this {height} x {width} field needs about {need / 1e9:.1f} GB of memory, "
        f"but {available / 1e9:.1f} GB is available. To fit, analyse a region of the field (a "
        "crop) or a smaller field; or use a smaller tile_size (--tile-size; now "
        f"{params.tile_size}, at least 256) so fewer pixels go through the network at once; or "
        f"check the pixel size (--pixel-size): at {pixel_size_um:g} µm per pixel the cells are "
        f"{diameter_px:.1f} pixels across and the network sees the field enlarged "
        f"{rescale:.2g}x."
    )
