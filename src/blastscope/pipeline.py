"""The one flow from an RGB field to a :class:`~blastscope.result.SlideResult`.

Each stage is a generator of :class:`~blastscope.progress.Progress` events that returns the
updated result, so the CLI (``run_steps``), the widgets (``thread_worker``) and the tests drive
the same code. ``analyse_steps`` chains the stages; the widgets run them one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from blastscope.cells import measure_cells
from blastscope.field_statistics import FieldStatistics
from blastscope.io import check_pixel_size, to_rgb_uint8
from blastscope.models.classifier import Classifier, load_classifier
from blastscope.predict import (
    DEFAULT_BATCH_SIZE,
    apply_blast_threshold,
    classify_blasts_steps,
    classify_nucleated_steps,
    mutation_columns,
    predict_mutation_steps,
    refresh_mutation_calls,
)
from blastscope.progress import Progress, Steps, run_steps
from blastscope.result import SlideResult, software_versions, utc_timestamp
from blastscope.segment import SegmentationParams, recompute_masks, segment_steps
from blastscope.slide_call import (
    DEFAULT_MIN_BLASTS,
    DEFAULT_MIN_PROBABILITY,
    SlideCall,
    call_slide,
)

RED_CELL_DIAMETER_UM = (5.5, 10.0)
"""The median red-cell diameter (µm) a run accepts without a notice: normal red cells are 6-8.5
µm across and anaemias move the median by a micrometre or two; beyond, the pixel size (given,
from the file or estimated) is probably wrong."""
RED_CELL_MIN_COUNT = 10
"""Red cells (whole, non-nucleated objects) needed before their size is judged."""

DEFAULT_BLAST_MODEL = "blast-smear"
DEFAULT_MUTATION_MODEL = "mutation-demo"


@dataclass
class SlideCallSettings:
    """How blasts are pooled into the slide call (see :func:`blastscope.slide_call.call_slide`)."""

    pooling: str = "mean"
    min_blasts: int = DEFAULT_MIN_BLASTS
    min_probability: float = DEFAULT_MIN_PROBABILITY

    def call(self, cells, classes: Sequence[str], **options: Any) -> SlideCall:
        """:func:`~blastscope.slide_call.call_slide` of ``cells`` (one table or a slide's
        tables) with these settings; ``options`` are its other arguments (``n_bootstrap``...)."""
        return call_slide(
            cells,
            classes,
            pooling=self.pooling,
            min_blasts=self.min_blasts,
            min_probability=self.min_probability,
            **options,
        )


@dataclass
class PipelineConfig:
    """Everything the pipeline needs besides the image; defaults are the shipped models.

    ``blast_model`` / ``mutation_model`` are loaded classifiers, shipped bundle names or bundle
    directories; ``None`` skips that stage. Load them once (:func:`loaded`) before many images.
    ``blast_threshold`` ``None`` takes the bundle's default.
    """

    segmentation: SegmentationParams = field(default_factory=SegmentationParams)
    blast_model: Classifier | str | None = DEFAULT_BLAST_MODEL
    mutation_model: Classifier | str | None = DEFAULT_MUTATION_MODEL
    blast_threshold: float | None = None
    device: str = "auto"
    batch_size: int = DEFAULT_BATCH_SIZE
    slide_call: SlideCallSettings = field(default_factory=SlideCallSettings)


_LOADED: dict[tuple[str, str, str], Classifier] = {}


def cached_classifier(model: str, kind: str) -> Classifier:
    """The ``kind`` bundle ``model`` (name or folder), loaded once per weights hash (a bundle
    retrained into the same folder is loaded afresh)."""
    from blastscope.models.bundle import read_metadata, resolve_bundle_path

    key = (str(resolve_bundle_path(model)), kind, read_metadata(model)["weights_sha256"])
    if key not in _LOADED:
        _LOADED[key] = load_classifier(model, kind)
    return _LOADED[key]


def nucleated_classifier(model: str) -> Classifier:
    """The ``nucleated`` bundle ``model`` (name or folder), loaded once per weights hash."""
    return cached_classifier(model, "nucleated")


def recorded_classifier(result: SlideResult, kind: str) -> Classifier | None:
    """The ``blast`` or ``mutation`` classifier that made ``result``'s columns, loaded from the
    bundle its provenance names (once per weights hash); None when that stage has not run."""
    record = result.provenance.get(kind)
    if not record:
        return None
    return cached_classifier(record.get("path") or record["name"], kind)


def record_run(result: SlideResult, stage: str, **params: Any) -> SlideResult:
    """``result`` with a run's parameters, time and software versions recorded in its
    provenance under ``stage`` (next to what the stage itself recorded there)."""
    provenance = dict(result.provenance)
    run = {"params": params, "created": utc_timestamp(), "software": software_versions()}
    provenance[stage] = {**provenance.get(stage, {}), "run": run}
    return replace(result, provenance=provenance)


def labels_result_steps(
    result: SlideResult | None,
    pixels: np.ndarray,
    labels: np.ndarray,
    pixel_size_um: float,
) -> Steps[SlideResult]:
    """The result of ``labels`` on ``pixels``: ``result`` itself when its labels are these,
    else the cells measured afresh (classifier columns dropped: they described other cells),
    keeping ``result``'s other provenance."""
    if result is not None and np.array_equal(result.labels, labels):
        yield Progress("cells", 1, 1, f"{result.n_cells} cells, as analysed")
        return result
    rgb, notices = to_rgb_uint8(pixels)
    labels = np.asarray(labels).astype(np.int32, copy=False)
    cells = yield from sort_cells_steps(rgb, labels, pixel_size_um, SegmentationParams())
    provenance = {
        **(result.provenance if result is not None else {}),
        "created": utc_timestamp(),
        "software": software_versions(),
        "labels": "measured from the cells layer as it was (edited or opened)",
    }
    provenance.pop("blast", None)
    provenance.pop("mutation", None)
    return SlideResult(
        labels=labels,
        cells=cells,
        pixel_size_um=pixel_size_um,
        provenance=provenance,
        notices=notices,
    )


def sort_cells_steps(
    rgb: np.ndarray,
    labels: np.ndarray,
    pixel_size_um: float,
    params: SegmentationParams,
    *,
    only: np.ndarray | None = None,
    statistics: FieldStatistics | None = None,
) -> Steps[pd.DataFrame]:
    """The cells table of ``labels`` (:func:`blastscope.cells.measure_cells`) with every object
    sorted into red cell, platelet or white cell by ``params.nucleated_model`` (``is_nucleated``;
    the stain heuristic when it is None). ``only``: measure just these label ids (edited
    cells); the stain is still normalised against the whole field. ``statistics``: the whole
    image's, when ``rgb`` is a piece of it. Yields ``Progress("measure", ...)``."""
    yield Progress("measure", 0, 1, "measuring cells")
    measured = labels if only is None else np.where(np.isin(labels, only), labels, 0)
    background = None if statistics is None else statistics.background
    cells = measure_cells(rgb, measured, pixel_size_um, background=background)
    if params.nucleated_model is not None and len(cells):
        cells = yield from classify_nucleated_steps(
            rgb,
            labels,
            cells,
            pixel_size_um,
            nucleated_classifier(params.nucleated_model),
            device=params.device,
            statistics=statistics,
        )
    nucleated = int(cells["is_nucleated"].sum())
    yield Progress("measure", 1, 1, f"{len(cells)} cells, {nucleated} nucleated")
    return cells


def segment_stage(
    image: np.ndarray,
    pixel_size_um: float | str | None = None,
    params: SegmentationParams | None = None,
    *,
    input_sha256: str | None = None,
    statistics: FieldStatistics | None = None,
) -> Steps[SlideResult]:
    """Segment every cell of ``image`` (Y, X, 3) and measure the cells table.

    ``pixel_size_um`` (µm per pixel; a number or numeric string) scales the model's cell
    diameter; ``None`` estimates it. A pixel size outside the light-microscope range
    (:data:`blastscope.io.PIXEL_SIZE_RANGE_UM`) raises :class:`~blastscope.io.ImageInputError`
    before any work. Yields ``Progress("segment", ...)`` per tile.
    """
    if pixel_size_um is not None:
        pixel_size_um = check_pixel_size(pixel_size_um)
    params = params or SegmentationParams()
    rgb, notices = to_rgb_uint8(image)
    segmentation = yield from segment_steps(rgb, pixel_size_um, params, statistics=statistics)
    cells = yield from sort_cells_steps(
        rgb, segmentation.labels, segmentation.pixel_size_um, params, statistics=statistics
    )
    # the segmenter's notices: the pixel size it estimated or assumed, a capped enlargement
    notices.extend(notice for notice in segmentation.notices if notice not in notices)
    if len(cells) == 0:
        notices.append("No cells were found in this image.")
    elif not cells["is_nucleated"].any():
        notices.append(
            f"None of the {len(cells)} objects found is a nucleated cell: this does not look "
            f"like a stained blood or marrow smear at {segmentation.pixel_size_um:g} µm per "
            "pixel. Check the image and its pixel size (--pixel-size); no blast can be counted."
        )
    size_notice = red_cell_size_notice(
        cells, segmentation.pixel_size_um, segmentation.model_info.get("pixel_size_source")
    )
    if size_notice:
        notices.append(size_notice)
    provenance = {
        "created": utc_timestamp(),
        "software": software_versions(),
        "input_sha256": input_sha256,
        "segmentation": {"params": asdict(params), "model": segmentation.model_info},
    }
    if params.nucleated_model is not None:
        provenance["nucleated"] = _bundle_record(nucleated_classifier(params.nucleated_model))
    return SlideResult(
        labels=segmentation.labels,
        cells=cells,
        pixel_size_um=segmentation.pixel_size_um,
        segmentation=segmentation,
        provenance=provenance,
        notices=notices,
    )


def red_cell_size_notice(
    cells: pd.DataFrame, pixel_size_um: float, source: str | None = None
) -> str | None:
    """A notice when the median diameter of the whole red cells (non-nucleated objects off the
    image border) lies outside :data:`RED_CELL_DIAMETER_UM`, which points at a wrong pixel
    size; None when it lies inside or too few red cells were found to tell."""
    if not {"is_nucleated", "touches_border", "diameter_um"} <= set(cells.columns):
        return None
    whole = cells.loc[~cells["is_nucleated"] & ~cells["touches_border"], "diameter_um"]
    if len(whole) < RED_CELL_MIN_COUNT:
        return None
    median = float(whole.median())
    low, high = RED_CELL_DIAMETER_UM
    if low <= median <= high:
        return None
    origin = f" ({source})" if source else ""
    return (
        f"Red cells measure {median:.1f} µm across (median of {len(whole)}) at "
        f"{pixel_size_um:g} µm per pixel{origin}, where normal red cells are about 6-8.5 µm: "
        f"the pixel size is probably {'too large' if median > high else 'too small'}. Give the "
        "scanner's pixel size (--pixel-size, or the dock's pixel size field); every µm "
        "measure and the classifiers' windows depend on it."
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
    cells = yield from sort_cells_steps(
        rgb, segmentation.labels, segmentation.pixel_size_um, segmentation.params
    )
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


def as_classifier(model: Classifier | str, kind: str) -> Classifier:
    """A loaded classifier: ``model`` itself, or the bundle it names loaded as ``kind``."""
    if isinstance(model, Classifier):
        return model
    return load_classifier(model, kind)


def loaded(config: PipelineConfig) -> PipelineConfig:
    """``config`` with its classifiers loaded, so bundle errors surface before any image."""
    return replace(
        config,
        blast_model=None
        if config.blast_model is None
        else as_classifier(config.blast_model, "blast"),
        mutation_model=None
        if config.mutation_model is None
        else as_classifier(config.mutation_model, "mutation"),
    )


def _bundle_record(classifier: Classifier) -> dict:
    return {
        "name": classifier.name,
        "path": str(classifier.path) if classifier.path else None,
        "sha256": classifier.metadata.get("weights_sha256"),
        "demo": classifier.demo,
    }


def classify_stage(
    image: np.ndarray,
    result: SlideResult,
    model: Classifier | str = DEFAULT_BLAST_MODEL,
    *,
    threshold: float | None = None,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    statistics: FieldStatistics | None = None,
) -> Steps[SlideResult]:
    """Blast probability of every nucleated cell of ``result``; yields a Progress per batch.

    Earlier mutation columns and the slide call are dropped: they rested on the old blasts.
    """
    classifier = as_classifier(model, "blast")
    rgb, _ = to_rgb_uint8(image)
    cells = result.cells.drop(columns=mutation_columns(result.cells))
    cells = yield from classify_blasts_steps(
        rgb,
        result.labels,
        cells,
        result.pixel_size_um,
        classifier,
        threshold=threshold,
        device=device,
        batch_size=batch_size,
        statistics=statistics,
    )
    used_threshold = classifier.threshold if threshold is None else threshold
    provenance = dict(result.provenance)
    provenance["blast"] = {**_bundle_record(classifier), "threshold": used_threshold}
    provenance.pop("mutation", None)
    return replace(result, cells=cells, slide_call=None, provenance=provenance)


def mutation_stage(
    image: np.ndarray,
    result: SlideResult,
    model: Classifier | str = DEFAULT_MUTATION_MODEL,
    *,
    settings: SlideCallSettings | None = None,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    statistics: FieldStatistics | None = None,
) -> Steps[SlideResult]:
    """Mutation probabilities and the slide call pooled from the blasts of ``result``.

    Every nucleated cell is scored, so :func:`rethreshold` can re-pool without inference; only
    blasts enter the slide call and get a ``mutation_call``.
    """
    classifier = as_classifier(model, "mutation")
    settings = settings or SlideCallSettings()
    rgb, _ = to_rgb_uint8(image)
    cells = yield from predict_mutation_steps(
        rgb,
        result.labels,
        result.cells,
        result.pixel_size_um,
        classifier,
        device=device,
        batch_size=batch_size,
        score="nucleated",
        statistics=statistics,
    )
    provenance = dict(result.provenance)
    provenance["mutation"] = {**_bundle_record(classifier), "classes": list(classifier.classes)}
    provenance["slide_call"] = asdict(settings)
    updated = replace(result, cells=cells, provenance=provenance)
    return replace(updated, slide_call=settings.call(updated.cells, classifier.classes))


def rethreshold(
    result: SlideResult, threshold: float, settings: SlideCallSettings | None = None
) -> SlideResult:
    """``result`` with ``is_blast`` at ``threshold`` and the slide call re-pooled; no network runs.

    ``settings`` ``None`` keeps the slide call's current pooling and minimums.
    """
    cells = apply_blast_threshold(result.cells, threshold)
    if result.slide_call is not None:
        cells = refresh_mutation_calls(cells, result.slide_call.classes)
    provenance = dict(result.provenance)
    if "blast" in provenance:
        provenance["blast"] = {**provenance["blast"], "threshold": float(threshold)}
    updated = replace(result, cells=cells, provenance=provenance)
    return recall_slide(updated, settings)


def recall_slide(result: SlideResult, settings: SlideCallSettings | None = None) -> SlideResult:
    """``result`` with its slide call pooled again from the cells table (no network)."""
    if result.slide_call is None:
        return result
    if settings is None:
        previous = result.slide_call
        settings = SlideCallSettings(
            previous.pooling, previous.min_blasts, previous.min_probability
        )
    provenance = {**result.provenance, "slide_call": asdict(settings)}
    slide_call = settings.call(result.cells, result.slide_call.classes)
    return replace(result, slide_call=slide_call, provenance=provenance)


def analyse_steps(
    image: np.ndarray,
    pixel_size_um: float | str | None = None,
    config: PipelineConfig | None = None,
    *,
    input_sha256: str | None = None,
    statistics: FieldStatistics | None = None,
) -> Steps[SlideResult]:
    """Run every stage on one field; yields progress events and returns the result.

    ``pixel_size_um`` is µm per pixel (a number or numeric string, checked against
    :data:`blastscope.io.PIXEL_SIZE_RANGE_UM` at the first step, before any model loads) or
    ``None`` to estimate it from the cell size. ``statistics``: the whole image's
    (:mod:`blastscope.field_statistics`) when ``image`` is a piece of it, a whole slide's tile.
    """
    config = config or PipelineConfig()
    result = yield from segment_stage(
        image,
        pixel_size_um,
        config.segmentation,
        input_sha256=input_sha256,
        statistics=statistics,
    )
    if config.blast_model is None:
        return result
    result = yield from classify_stage(
        image,
        result,
        config.blast_model,
        threshold=config.blast_threshold,
        device=config.device,
        batch_size=config.batch_size,
        statistics=statistics,
    )
    if config.mutation_model is None:
        return result
    return (
        yield from mutation_stage(
            image,
            result,
            config.mutation_model,
            settings=config.slide_call,
            device=config.device,
            batch_size=config.batch_size,
            statistics=statistics,
        )
    )


def analyse(
    image: np.ndarray,
    pixel_size_um: float | str | None = None,
    config: PipelineConfig | None = None,
    *,
    on_progress=None,
    input_sha256: str | None = None,
    statistics: FieldStatistics | None = None,
) -> SlideResult:
    """Blocking form of :func:`analyse_steps` for scripts and tests."""
    steps = analyse_steps(
        image, pixel_size_um, config, input_sha256=input_sha256, statistics=statistics
    )
    return run_steps(steps, on_progress)
