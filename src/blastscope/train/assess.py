"""``blastscope evaluate``: score a trained bundle on cells it has not seen.

The cells come from the same sources as training (class folders, bags with slide labels, or the
generator at a preset, with a data seed the shipped models were not trained on), cut to the
bundle's window and pixel size. A mutation bundle is scored on the cells that count as blasts
(``--blast-filter``, as in ``train mutation``). Labels are the clean truth where known (the
generator), else the labels given. The report folder gets ``metrics.json`` and the confusion
matrix, ROC and reliability PNGs, as a training run's report does.

Example::

    blastscope evaluate blast-demo --synthetic default --n-slides 20 --out runs/eval-blast
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Generator
from pathlib import Path
from typing import Any

import torch

from blastscope.jsonable import jsonable
from blastscope.models.bundle import read_metadata
from blastscope.models.classifier import Classifier, load_classifier
from blastscope.progress import Progress, progress_bars, run_steps
from blastscope.slide_call import DEFAULT_MIN_BLASTS
from blastscope.train.crossval import format_estimate, patient_level_metrics
from blastscope.train.datasets import CellSet, DatasetError
from blastscope.train.evaluate import (
    call_rates_by_cell_type,
    classification_metrics,
    probabilities_steps,
    write_report,
)
from blastscope.train.experiment import (
    blast_slide_metrics,
    labels_per_slide,
    mutation_slide_metrics,
)
from blastscope.train.mutation import add_blast_filter_arguments, filter_blasts_as_asked
from blastscope.train.options import add_data_arguments, load_cells, run_guarded

HELP = "score a trained blast or mutation bundle on held-out cells and write its report"
EVALUATION_DATA_SEED = 1000
"""Default seed of the generator's slides here: the shipped models were trained on seed 0."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``blastscope evaluate``."""
    parser.add_argument("model", help="bundle name (see `blastscope models list`) or folder")
    add_data_arguments(parser, crop_options=False, split_options=False)
    parser.set_defaults(data_seed=EVALUATION_DATA_SEED)
    group = parser.add_argument_group("evaluation")
    group.add_argument(
        "--threshold", type=float, help="blast bundles: p_blast threshold (default: the bundle's)"
    )
    add_blast_filter_arguments(group)  # mutation bundles, as in `train mutation`
    group.add_argument("--min-blasts", type=int, default=DEFAULT_MIN_BLASTS)
    group.add_argument("--batch-size", type=int, default=256, help="cells per network batch")
    group.add_argument(
        "--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda[:N] or mps"
    )
    group.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, required=True, help="report folder")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")


def evaluate_steps(
    classifier: Classifier,
    cells: CellSet,
    out_dir: str | Path,
    *,
    threshold: float | None = None,
    min_blasts: int = DEFAULT_MIN_BLASTS,
    device: str | torch.device = "auto",
    batch_size: int = 256,
) -> Generator[Progress, None, dict[str, Any]]:
    """Score ``classifier`` on ``cells`` and write the report into ``out_dir``; the metrics.

    ``cells`` must be cut at the classifier's window and pixel size and carry its classes.
    """
    if cells.classes != classifier.classes:
        raise DatasetError(
            f"The cells are labelled {list(cells.classes)} but {classifier.name} predicts "
            f"{list(classifier.classes)}: give data with the bundle's classes."
        )
    if (cells.window_um, cells.pixel_size_um) != (
        classifier.input.window_um,
        classifier.input.pixel_size_um,
    ):
        raise DatasetError(
            f"{classifier.name} takes {classifier.input.window_um:g} µm crops at "
            f"{classifier.input.pixel_size_um:g} µm/px, but these cells are {cells.window_um:g} µm "
            f"at {cells.pixel_size_um:g} µm/px."
        )
    if len(cells) == 0:
        raise DatasetError("No cells to evaluate: the data source gave none.")
    probabilities = yield from probabilities_steps(
        classifier, cells.crops, device=device, batch_size=batch_size
    )
    truth = cells.true_labels if cells.true_labels is not None else cells.labels
    labels_note = "clean labels" if cells.true_labels is not None else "given labels"
    metrics: dict[str, Any] = {
        "kind": classifier.kind,
        "model": classifier.name,
        "model_sha256": classifier.metadata["weights_sha256"],
        "test_labels": labels_note,
        "test": classification_metrics(probabilities, truth, classifier.classes),
        "data": {"source": cells.source, "n_cells": len(cells)},
    }
    has_slides = bool((cells.slide_ids != "").all())
    if classifier.kind == "blast":
        cutoff = classifier.threshold if threshold is None else threshold
        if cutoff is None or not 0.0 <= cutoff <= 1.0:
            raise DatasetError(f"--threshold must be in [0, 1], got {cutoff}.")
        metrics["threshold"] = cutoff
        calls = probabilities[:, 1] >= cutoff
        metrics["accuracy_at_threshold"] = float((calls == (truth == 1)).mean())
        if cells.annotations is not None and "cell_type" in cells.annotations:
            metrics["called_blast"] = call_rates_by_cell_type(calls, cells.annotations)
        if has_slides:
            metrics["slides"] = blast_slide_metrics(
                probabilities[:, 1], truth == 1, cells.slide_ids, cutoff
            )
    elif has_slides:
        slide_truth = labels_per_slide(truth, cells.slide_ids, classifier.classes)
        metrics["slides"] = mutation_slide_metrics(
            probabilities, cells.slide_ids, slide_truth, classifier.classes, min_blasts=min_blasts
        )
        if len(classifier.classes) == 2:
            operating = classifier.metadata["metrics"].get("operating_point", {})
            metrics["patients"] = patient_level_metrics(
                probabilities,
                cells.slide_ids,
                slide_truth,
                classifier.classes,
                min_blasts=min_blasts,
                threshold=operating.get("threshold"),
            )
    write_report(
        out_dir,
        metrics,
        probabilities=probabilities,
        true=truth,
        classes=classifier.classes,
        labels_note=labels_note,
    )
    return metrics


def _run(args: argparse.Namespace) -> int:
    kind = read_metadata(args.model).get("kind")
    classifier = load_classifier(args.model, kind)
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise DatasetError(f"--threshold must be in [0, 1], got {args.threshold}.")
    if args.batch_size < 1:
        raise DatasetError(f"--batch-size must be a positive integer, got {args.batch_size}.")
    args.window_um = classifier.input.window_um
    args.pixel_size_um = classifier.input.pixel_size_um
    show = progress_bars()
    cells = load_cells(args, kind, classifier.classes, show)
    if kind == "mutation":
        cells = filter_blasts_as_asked(cells, args)
    metrics = run_steps(
        evaluate_steps(
            classifier,
            cells,
            args.out,
            threshold=args.threshold,
            min_blasts=args.min_blasts,
            device=args.device,
            batch_size=args.batch_size,
        ),
        show,
    )
    test = metrics["test"]
    if args.json:
        summary = {key: value for key, value in metrics.items() if key != "test"}
        summary["test"] = {k: v for k, v in test.items() if k != "calibration_bins"}
        print(json.dumps(jsonable(summary, "the metrics"), indent=2))
        return 0
    print(
        f"{classifier.name} ({kind}) on {test['n']} cells, {metrics['test_labels']}: accuracy "
        f"{test['accuracy']:.3f}, balanced accuracy {test['balanced_accuracy']:.3f}, "
        f"ECE {test['ece']:.3f}"
    )
    slides = metrics.get("slides")
    if kind == "mutation" and slides:
        right = slides["accuracy_of_calls"]
        print(
            f"slide calls: {slides['n_called']} of {slides['n_slides']} slides called"
            + (f", {right:.0%} right" if right is not None else "")
        )
    patients = metrics.get("patients")
    if patients:
        print(
            f"patients ({patients['positive_class']} vs rest, mean of the blasts, >= "
            f"{patients['min_blasts']} blasts): AUC {format_estimate(patients['auc_called'])}; "
            f"sensitivity at 90% specificity "
            f"{format_estimate(patients['sensitivity_at_90_specificity'], 2)}; "
            f"{patients['n_patients'] - patients['n_called']} of {patients['n_patients']} "
            "abstained"
        )
    print(f"report: {Path(args.out) / 'metrics.json'} and its PNGs")
    return 0


def run(args: argparse.Namespace) -> int:
    """Evaluate a bundle; 0 on success, 2 on bad input."""
    return run_guarded(_run, args)
