"""The one flow from an RGB field to a :class:`~blastscope.result.SlideResult`.

Each stage is a generator of :class:`~blastscope.progress.Progress` events that returns the
updated result, so the CLI (``run_steps``), the widgets (``thread_worker``) and the tests drive
the same code. ``analyse_steps`` chains the stages; the widgets run them one at a time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from blastscope.cells import measure_cells
from blastscope.io import to_rgb_uint8
from blastscope.progress import Progress, Steps, run_steps
from blastscope.result import SlideResult, software_versions, utc_timestamp
from blastscope.segment import SegmentationParams, recompute_masks, segment_steps


@dataclass
class PipelineConfig:
    """Everything the pipeline needs besides the image; defaults are the shipped models."""

    segmentation: SegmentationParams = field(default_factory=SegmentationParams)


def segment_stage(
    image: np.ndarray,
    pixel_size_um: float | None = None,
    params: SegmentationParams | None = None,
    *,
    input_sha256: str | None = None,
) -> Steps[SlideResult]:
    """Segment every cell of ``image`` (Y, X, 3) and measure the cells table.

    ``pixel_size_um`` (µm per pixel) scales the model's cell diameter; ``None`` uses the model's
    default. Yields ``Progress("segment", ...)`` per tile.
    """
    params = params or SegmentationParams()
    rgb, notices = to_rgb_uint8(image)
    segmentation = yield from segment_steps(rgb, pixel_size_um, params)
    yield Progress("measure", 0, 1, "measuring cells")
    cells = measure_cells(rgb, segmentation.labels, segmentation.pixel_size_um)
    yield Progress("measure", 1, 1, f"{len(cells)} cells")
    if pixel_size_um is None:
        notices.append(
            f"No pixel size given: assumed the segmenter's {segmentation.pixel_size_um:g} µm/px."
        )
    if len(cells) == 0:
        notices.append("No cells were found in this image.")
    provenance = {
        "created": utc_timestamp(),
        "software": software_versions(),
        "input_sha256": input_sha256,
        "segmentation": {"params": asdict(params), "model": segmentation.model_info},
    }
    return SlideResult(
        labels=segmentation.labels,
        cells=cells,
        pixel_size_um=segmentation.pixel_size_um,
        segmentation=segmentation,
        provenance=provenance,
        notices=notices,
    )


def recompute_stage(
    image: np.ndarray,
    result: SlideResult,
    *,
    flow_threshold: float | None = None,
    cellprob_threshold: float | None = None,
) -> Steps[SlideResult]:
    """Re-derive masks from ``result``'s stored network outputs (no network) and re-measure."""
    if result.segmentation is None:
        raise ValueError("This result holds no network outputs: segment the image again.")
    rgb, _ = to_rgb_uint8(image)
    yield Progress("recompute", 0, 2, "deriving masks from the stored flows")
    segmentation = recompute_masks(
        result.segmentation,
        flow_threshold=flow_threshold,
        cellprob_threshold=cellprob_threshold,
    )
    yield Progress("recompute", 1, 2, "measuring cells")
    cells = measure_cells(rgb, segmentation.labels, segmentation.pixel_size_um)
    yield Progress("recompute", 2, 2, f"{len(cells)} cells")
    provenance = dict(result.provenance)
    provenance["segmentation"] = {
        **provenance.get("segmentation", {}),
        "params": asdict(segmentation.params),
    }
    return replace(
        result,
        labels=segmentation.labels,
        cells=cells,
        segmentation=segmentation,
        slide_call=None,
        provenance=provenance,
    )


def analyse_steps(
    image: np.ndarray,
    pixel_size_um: float | None = None,
    config: PipelineConfig | None = None,
    *,
    input_sha256: str | None = None,
) -> Steps[SlideResult]:
    """Run every stage on one field; yields progress events and returns the result."""
    config = config or PipelineConfig()
    result = yield from segment_stage(
        image, pixel_size_um, config.segmentation, input_sha256=input_sha256
    )
    return result


def analyse(
    image: np.ndarray,
    pixel_size_um: float | None = None,
    config: PipelineConfig | None = None,
    *,
    on_progress=None,
    input_sha256: str | None = None,
) -> SlideResult:
    """Blocking form of :func:`analyse_steps` for scripts and tests."""
    steps = analyse_steps(image, pixel_size_um, config, input_sha256=input_sha256)
    return run_steps(steps, on_progress)
