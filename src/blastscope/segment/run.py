"""The stage: :func:`segment_steps` (and its blocking form :func:`segment`), which runs the
network tile by tile, and :func:`recompute_masks`, which redoes the masks from the stored
network outputs; their result, :class:`Segmentation`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from blastscope.devices import resolve_device
from blastscope.field_statistics import FieldStatistics
from blastscope.io import check_pixel_size, to_rgb_uint8
from blastscope.progress import Progress, run_steps
from blastscope.segment import loading
from blastscope.segment.backend import normalize_channels
from blastscope.segment.diameter import (
    MAX_RESCALE,
    _default_diameter,
    _estimate_diameter,
    _network_diameter,
    _pixel_size,
)
from blastscope.segment.masks import DEFAULT_NITER, MASKS_BY_BACKEND, _in_background, _masks
from blastscope.segment.memory import _check_memory
from blastscope.segment.params import SegmentationParams
from blastscope.segment.tiling import (
    _expand,
    _finish_labels,
    _halo,
    _inner,
    _paste_core_objects,
    _tile_grid,
)


@dataclass
class Segmentation:
    """The result of segmenting one image (Y, X).

    ``labels`` (Y, X) int32 (0 = background, cells 1..N); ``dP`` (2, Y, X) float16 flows and
    ``cellprob`` (Y, X) float16 logits, kept for :func:`recompute_masks`; ``diameter_px`` the
    diameter used (pixels); ``pixel_size_um`` the pixel size used (µm per pixel);
    ``model_info`` the model's provenance; ``notices`` what was converted or assumed.
    """

    labels: np.ndarray
    dP: np.ndarray
    cellprob: np.ndarray
    diameter_px: float
    pixel_size_um: float
    params: SegmentationParams
    model_info: dict[str, Any]
    notices: list[str] = field(default_factory=list)


def segment_steps(
    image: np.ndarray,
    pixel_size_um: float | None,
    params: SegmentationParams,
    *,
    statistics: FieldStatistics | None = None,
) -> Generator[Progress, None, Segmentation]:
    """Segment every cell of ``image`` (Y, X, 3); yields ``Progress("segment", ...)`` per tile.

    ``pixel_size_um`` is µm per pixel, a number or numeric string in the light-microscope range
    (:func:`blastscope.io.check_pixel_size`; ``None``: unknown, the diameter is then estimated).
    Returns a :class:`Segmentation`. Closing the generator stops after the current tile.
    ``statistics``: the whole image's, when ``image`` is a piece of it (the intensity percentiles
    are then taken from its reference pixels). Raises :class:`SegmentationError` before any work
    when the run would need more memory than is available (:func:`estimate_memory_bytes`).
    """
    params.validate()
    if pixel_size_um is not None:
        pixel_size_um = check_pixel_size(pixel_size_um)
    rgb, notices = to_rgb_uint8(image)
    backend = loading.load_segmenter(params.model, params.device)
    pixel_size_used, pixel_size_source = _pixel_size(backend, pixel_size_um)
    tiles = _tile_grid(rgb.shape[:2], params.tile_size)
    estimating = params.diameter is None and (pixel_size_um is None or backend.diameter_um is None)
    total = len(tiles) + (1 if estimating else 0)
    reused = None
    if params.diameter is not None:
        diameter_px, diameter_source = float(params.diameter), "given"
    elif not estimating:
        diameter_px, diameter_source = backend.diameter_um / pixel_size_um, "pixel size"
    else:
        diameter_px, diameter_source = _default_diameter(backend, pixel_size_used), "estimated"
    _check_memory(rgb.shape[:2], backend, diameter_px, params, len(tiles), pixel_size_used)
    reference = None if statistics is None else backend.prepare(statistics.reference_image())
    channels = normalize_channels(backend.prepare(rgb), params.normalize_percentiles, reference)
    if estimating:
        diameter_px, reused = _estimate_diameter(backend, channels, params, pixel_size_used)
        if pixel_size_um is None and backend.diameter_um is not None:
            pixel_size_used = backend.diameter_um / diameter_px
            pixel_size_source = "pixel size estimated from the cell size"
        _check_memory(rgb.shape[:2], backend, diameter_px, params, len(tiles), pixel_size_used)
        yield Progress("segment", 1, total, f"estimated cell diameter {diameter_px:.1f} px")
    network_diameter = _network_diameter(backend, diameter_px)
    if network_diameter > diameter_px:
        notices.append(
            f"Cells are about {diameter_px:.1f} pixels across (at {pixel_size_used:g} µm per "
            f"pixel); the network expects {backend.diam_mean:g}, which would need the image "
            f"enlarged {backend.diam_mean / diameter_px:.0f}x. It was enlarged {MAX_RESCALE:g}x "
            "(the most, for memory), and cells this small segment poorly: check the pixel size "
            "(--pixel-size, or pixel_size_um in Python) or scan at a finer one."
        )
    halo = _halo(params, diameter_px) if len(tiles) > 1 else 0
    mask_scale = min(1.0, backend.diam_mean / diameter_px)
    niter = params.niter or DEFAULT_NITER
    compute = MASKS_BY_BACKEND[backend.backend]
    height, width = rgb.shape[:2]
    dP = np.zeros((2, height, width), np.float16)
    cellprob = np.zeros((height, width), np.float16)
    labels = np.zeros((height, width), np.int32)
    done = total - len(tiles)
    for index, core in enumerate(tiles):
        region = _expand(core, halo, (height, width))
        where = f"tile {index + 1} of {len(tiles)}"
        if reused is not None:  # the whole image, from the diameter trial
            tile_dP, tile_prob = reused
        else:
            network = backend.network_output_steps(
                channels[region], network_diameter, params.batch_size
            )
            while True:
                try:
                    batches_done, batches = next(network)
                except StopIteration as stop:
                    tile_dP, tile_prob = stop.value
                    break
                yield Progress("segment", done, total, f"{where}: network {batches_done}/{batches}")
        masks = Progress("segment", done, total, f"{where}: masks")
        tile_labels = yield from _in_background(
            masks,
            _masks,
            compute,
            tile_dP,
            tile_prob,
            params,
            mask_scale,
            niter,
            backend.device,
        )
        inner = _inner(core, region)
        dP[(slice(None), *core)] = tile_dP[(slice(None), *inner)]
        cellprob[core] = tile_prob[inner]
        _paste_core_objects(labels, tile_labels, core, region)
        done += 1
        yield Progress("segment", done, total, f"tile {index + 1} of {len(tiles)}")
    labels = _finish_labels(labels, params.exclude_on_edges)
    model_info = {
        **backend.info,
        "backend": backend.backend,
        "diameter_source": diameter_source,
        "pixel_size_source": pixel_size_source,
        "tiles": len(tiles),
        "network_diameter_px": network_diameter,
        "halo_px": halo,
        "mask_scale": mask_scale,
        "niter": niter,
    }
    if pixel_size_source != "given":
        notices.append(
            f"No pixel size: µm measures use the {pixel_size_source} of {pixel_size_used:g} µm "
            "per pixel."
        )
    return Segmentation(
        labels=labels,
        dP=dP,
        cellprob=cellprob,
        diameter_px=float(diameter_px),
        pixel_size_um=float(pixel_size_used),
        params=params,
        model_info=model_info,
        notices=notices,
    )


def segment(
    image: np.ndarray,
    pixel_size_um: float | None = None,
    params: SegmentationParams | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> Segmentation:
    """Blocking form of :func:`segment_steps` (for scripts, the CLI and tests)."""
    return run_steps(
        segment_steps(image, pixel_size_um, params or SegmentationParams()), on_progress
    )


def recompute_masks(
    segmentation: Segmentation,
    *,
    flow_threshold: float | None = None,
    cellprob_threshold: float | None = None,
    min_size_px: int | None = None,
) -> Segmentation:
    """New masks from the stored flows and cell probability, without running the network.

    Thresholds left ``None`` keep their previous values. Uses the same tiles, halo and mask
    scale as the original run, so large images are stitched the same way.
    """
    changes = {
        name: value
        for name, value in (
            ("flow_threshold", flow_threshold),
            ("cellprob_threshold", cellprob_threshold),
            ("min_size_px", min_size_px),
        )
        if value is not None
    }
    params = replace(segmentation.params, **changes)
    params.validate()
    info = segmentation.model_info
    device = resolve_device(params.device)
    compute = MASKS_BY_BACKEND[info["backend"]]
    height, width = segmentation.labels.shape
    labels = np.zeros((height, width), np.int32)
    for core in _tile_grid((height, width), params.tile_size):
        region = _expand(core, int(info["halo_px"]), (height, width))
        tile_labels = _masks(
            compute,
            segmentation.dP[(slice(None), *region)],
            segmentation.cellprob[region],
            params,
            float(info["mask_scale"]),
            int(info["niter"]),
            device,
        )
        _paste_core_objects(labels, tile_labels, core, region)
    labels = _finish_labels(labels, params.exclude_on_edges)
    return replace(segmentation, labels=labels, params=params)
