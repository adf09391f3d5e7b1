"""Scoring a trained segmenter: white-cell box recall on BCCD's val split and AP on held-out
synthetic fields (see :mod:`blastscope.train.segmenter`)."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from blastscope.progress import Progress
from blastscope.samples import BCCD_PIXEL_SIZE_UM
from blastscope.segment import SegmentationParams, segment
from blastscope.train.bccd_masks import bccd_root, read_fields, read_split
from blastscope.train.boxes import wbc_box_matches, wbc_recall_summary
from blastscope.train.segmenter_data import SYNTHETIC_PRESETS

if TYPE_CHECKING:
    from blastscope.train.segmenter import SegmenterTrainingConfig

SYNTHETIC_EVAL_SEED = 1_000_000
"""Held-out synthetic fields use seeds from here on; training uses seeds below it."""


def evaluate_segmenter(
    bundle_path: Path, config: SegmenterTrainingConfig
) -> Generator[Progress, None, dict[str, Any]]:
    """The bundle at ``bundle_path`` scored on the BCCD val split (white-cell box recall; all
    fields unless ``config.val_fields``) and on held-out synthetic fields (AP at mask IoU 0.5);
    yields a Progress per BCCD field."""
    params = SegmentationParams(model=str(bundle_path), device=config.device)
    metrics: dict[str, Any] = {}
    if config.val_fields != 0:
        root = bccd_root(config.bccd)
        field_ids = read_split(root, "val")
        if config.val_fields is not None:
            field_ids = field_ids[: config.val_fields]
        rows = []
        for index, bccd_field in enumerate(read_fields(root, field_ids)):
            segmentation = segment(bccd_field.image, BCCD_PIXEL_SIZE_UM, params)
            rows.append(wbc_box_matches(segmentation.labels, bccd_field.boxes))
            yield Progress("evaluate", index + 1, len(field_ids), bccd_field.field_id)
        metrics["bccd_val"] = wbc_recall_summary(pd.concat(rows, ignore_index=True))
    if config.synthetic_eval_fields:
        metrics["synthetic_heldout"] = synthetic_average_precision(
            params, config.synthetic_eval_fields
        )
    return metrics


def synthetic_average_precision(params: SegmentationParams, n_fields: int) -> dict[str, Any]:
    """AP at mask IoU 0.5 (TP / (TP + FP + FN), Cellpose's definition) on held-out fields.

    Fields: seeds from :data:`SYNTHETIC_EVAL_SEED`, alternating the presets, 512 x 512 px, each
    segmented with its true pixel size.
    """
    from cellpose import metrics

    from blastscope.synthetic import generate_field

    per_preset: dict[str, list[float]] = {preset: [] for preset in SYNTHETIC_PRESETS}
    counts = np.zeros(3)
    for index in range(n_fields):
        preset = SYNTHETIC_PRESETS[index % len(SYNTHETIC_PRESETS)]
        truth = generate_field(SYNTHETIC_EVAL_SEED + index, preset, shape=(512, 512))
        labels = segment(truth.image, truth.pixel_size_um, params).labels
        ap, tp, fp, fn = metrics.average_precision(
            [truth.labels.astype(np.int32)], [labels], threshold=[0.5]
        )
        per_preset[preset].append(float(ap[0, 0]))
        counts += [tp[0, 0], fp[0, 0], fn[0, 0]]
    tp, fp, fn = counts
    return {
        "n_fields": n_fields,
        "ap50_pooled": round(float(tp / max(tp + fp + fn, 1)), 4),
        "ap50_mean_per_field": {
            preset: round(float(np.mean(values)), 4)
            for preset, values in per_preset.items()
            if values
        },
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
    }
