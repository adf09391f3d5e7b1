"""One training run from cells to a bundle and a report: split, noise, train, calibrate, evaluate.

:func:`run_experiment_steps` (a generator of Progress events returning an
:class:`ExperimentResult`) is what ``blastscope train blast|mutation`` and the noise benchmark run:

1. split the cells into train / validation / test (by slide when slides are known);
2. inject label noise (for experiments) into the train and validation labels only, per cell or
   per slide;
3. train (:mod:`blastscope.train.loop`), choosing the epoch on the noisy validation labels;
4. fit the calibration temperature on the noisy validation labels, through the noise model when
   it is known (the injected noise composed with any ``assumed_noise_rate``);
5. evaluate on the test cells against the clean labels (the generator's truth where known, else
   the labels given) and, when slides are known, per slide: the blast model's blast percentage
   per slide, the mutation model's pooled slide call (:func:`blastscope.slide_call.call_slide`);
6. write the report folder and, unless told not to, the bundle with metrics and provenance.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from blastscope.models.classifier import classifier_metadata, save_classifier
from blastscope.progress import Progress
from blastscope.slide_call import call_slide
from blastscope.train.crossval import operating_threshold, patient_level_metrics
from blastscope.train.datasets import CellSet, Split, split_cells
from blastscope.train.evaluate import (
    call_rates_by_cell_type,
    classification_metrics,
    expected_calibration_error,
    fit_temperature,
    write_report,
)
from blastscope.train.loop import TrainConfig, TrainedModel, predict_logits, train_steps
from blastscope.train.noise import NoisyLabels, inject_label_noise, transition_matrix
from blastscope.train.provenance import command_line, git_commit

NOISE_UNITS = ("cell", "slide")
# The slide-call target of the benchmark counts slides with at least this many blasts.
SLIDE_TARGET_MIN_BLASTS = 50
# Report entries that stay out of the bundle's metrics (the training record has what matters).
_NOT_IN_BUNDLE_METRICS = ("training_history", "data", "config")


@dataclass(frozen=True)
class NoiseSpec:
    """Label noise to inject into the train and validation labels (experiments).

    ``unit="cell"`` flips cells independently; ``unit="slide"`` flips whole slides' labels (every
    cell of a flipped slide gets the new label), the error of a wrong patient-level label.
    """

    rate: float = 0.0
    kind: str = "symmetric"
    unit: str = "cell"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.unit not in NOISE_UNITS:
            raise ValueError(
                f"Unknown noise unit {self.unit!r}: choose one of {', '.join(NOISE_UNITS)}."
            )


@dataclass
class ExperimentResult:
    """What a run produced: metrics (as in metrics.json), the model, paths and noise record."""

    metrics: dict[str, Any]
    trained: TrainedModel
    temperature: float
    report_dir: Path
    bundle_dir: Path | None
    noise: dict[str, Any]


def inject_noise(
    labels: np.ndarray, slide_ids: np.ndarray, n_classes: int, noise: NoiseSpec
) -> NoisyLabels:
    """Noisy copies of ``labels`` (N,) per ``noise``; per slide, all cells of a slide flip together.

    Per slide the slide's label is its cells' majority label; a flipped slide's cells all get the
    slide's new label. The returned record's ``flipped`` marks cells whose label changed.
    """
    if noise.unit == "cell" or noise.rate == 0.0:
        return inject_label_noise(labels, n_classes, noise.rate, noise.kind, noise.seed)
    slides = np.unique(slide_ids.astype(str))
    if slides.size == 1 and slides[0] == "":
        raise ValueError(
            "Slide-level noise needs slide ids; these cells have none. Use --noise-unit cell."
        )
    slide_labels = np.array([np.bincount(labels[slide_ids == s]).argmax() for s in slides])
    flipped_slides = inject_label_noise(slide_labels, n_classes, noise.rate, noise.kind, noise.seed)
    noisy = labels.copy()
    for slide, old, new in zip(slides, slide_labels, flipped_slides.labels, strict=True):
        if old != new:
            noisy[slide_ids == slide] = new
    return NoisyLabels(noisy, noisy != labels, noise.kind, noise.rate)


def _noise_transition(
    noise: NoiseSpec, assumed_noise_rate: float, n_classes: int
) -> np.ndarray | None:
    """The transition matrix of the known noise (assumed, then injected), or None if none."""
    if noise.rate == 0.0 and assumed_noise_rate == 0.0:
        return None
    assumed = transition_matrix("symmetric", assumed_noise_rate, n_classes)
    return assumed @ transition_matrix(noise.kind, noise.rate, n_classes)


def blast_slide_metrics(
    p_blast: np.ndarray, is_blast: np.ndarray, slide_ids: np.ndarray, threshold: float
) -> dict[str, Any]:
    """Per test slide: predicted vs true blast percentage of the nucleated cells given."""
    rows = []
    for slide in np.unique(slide_ids.astype(str)):
        chosen = slide_ids == slide
        rows.append(
            {
                "slide": slide,
                "cells": int(chosen.sum()),
                "true_blast_percentage": float(100.0 * is_blast[chosen].mean()),
                "predicted_blast_percentage": float(100.0 * (p_blast[chosen] >= threshold).mean()),
            }
        )
    errors = [abs(r["true_blast_percentage"] - r["predicted_blast_percentage"]) for r in rows]
    return {
        "n_slides": len(rows),
        "blast_percentage_mean_abs_error": float(np.mean(errors)) if errors else None,
        "slides": rows,
    }


def labels_per_slide(
    labels: np.ndarray, slide_ids: np.ndarray, classes: tuple[str, ...]
) -> dict[str, str]:
    """Each slide's label: the most common label of its cells (they all share it for bags)."""
    return {
        str(slide): classes[int(np.bincount(labels[slide_ids == slide]).argmax())]
        for slide in np.unique(slide_ids.astype(str))
    }


def mutation_slide_metrics(
    probabilities: np.ndarray,
    slide_ids: np.ndarray,
    slide_truth: dict[str, str],
    classes: tuple[str, ...],
    *,
    min_blasts: int = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """Slide calls pooled from per-blast probabilities (N, K), scored against ``slide_truth``.

    Every cell given counts as a blast of its slide. Reports the accuracy among slides with a call,
    the abstentions, and the accuracy over slides with at least
    :data:`SLIDE_TARGET_MIN_BLASTS` blasts (the benchmark's target).
    """
    rows = []
    for slide in sorted(slide_truth):
        chosen = slide_ids == slide
        table = pd.DataFrame(
            {
                "label": np.arange(1, int(chosen.sum()) + 1),
                "is_nucleated": True,
                "is_blast": True,
                **{f"p_{name}": probabilities[chosen, k] for k, name in enumerate(classes)},
            }
        )
        call = call_slide(table, classes, min_blasts=min_blasts, n_bootstrap=200, seed=seed)
        rows.append(
            {
                "slide": slide,
                "truth": slide_truth[slide],
                "call": call.call,
                "top_class": max(call.probabilities, key=call.probabilities.get)
                if call.probabilities
                else None,
                "n_blasts": call.n_blasts,
                "abstained": call.abstained,
                "probabilities": call.probabilities,
            }
        )
    called = [r for r in rows if not r["abstained"]]
    large = [r for r in rows if r["n_blasts"] >= SLIDE_TARGET_MIN_BLASTS]

    def share(selected: list[dict[str, Any]], key: str) -> float | None:
        if not selected:
            return None
        return float(np.mean([r[key] == r["truth"] for r in selected]))

    return {
        "n_slides": len(rows),
        "n_called": len(called),
        "n_abstained": len(rows) - len(called),
        "accuracy_of_calls": share(called, "call"),
        "accuracy_top_class_all_slides": share(rows, "top_class"),
        f"n_slides_with_{SLIDE_TARGET_MIN_BLASTS}_blasts": len(large),
        f"accuracy_slides_with_{SLIDE_TARGET_MIN_BLASTS}_blasts": share(large, "top_class"),
        "min_blasts": min_blasts,
        "slides": rows,
    }


def _compact(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics for the bundle: without the calibration bins and per-slide / per-patient rows."""
    return {
        key: _compact(value) if isinstance(value, dict) else value
        for key, value in metrics.items()
        if key not in ("calibration_bins", "slides", "patients")
    }


def run_experiment_steps(
    cells: CellSet,
    config: TrainConfig,
    *,
    kind: str,
    out_dir: str | Path,
    noise: NoiseSpec = NoiseSpec(),
    assumed_noise_rate: float = 0.0,
    split: Split | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    bundle_dir: str | Path | None = None,
    name: str | None = None,
    demo: bool = False,
    threshold: float = 0.5,
    min_blasts: int = 20,
    provenance: dict[str, Any] | None = None,
    device: str | torch.device = "auto",
    resume: bool = False,
    write_bundle: bool = True,
    overwrite: bool = False,
    crop_options: dict[str, Any] | None = None,
) -> Generator[Progress, None, ExperimentResult]:
    """Train and evaluate a ``kind`` ("blast" or "mutation") classifier on ``cells``.

    Writes ``out_dir/checkpoint.pt`` (each epoch), ``out_dir/report/`` and the bundle (in
    ``bundle_dir``, default ``out_dir/bundle``). ``split`` defaults to :func:`split_cells` with the
    fractions and the config's seed. ``provenance`` adds to the bundle's ``training`` record;
    ``crop_options`` (``mask_to_cell``, ``stain_normalisation``) to its crop settings, as the
    cells were cut.
    """
    out_dir = Path(out_dir)
    bundle_dir = Path(bundle_dir) if bundle_dir is not None else out_dir / "bundle"
    if write_bundle and (bundle_dir / "bundle.json").exists() and not overwrite:
        raise FileExistsError(
            f"A bundle already exists at {bundle_dir}; pass --overwrite to replace it or choose "
            "another --bundle / --out."
        )
    n_classes = len(cells.classes)
    split = split or split_cells(cells, val_fraction, test_fraction, seed=config.seed)
    train_val = np.concatenate([split.train, split.val])
    noisy = inject_noise(cells.labels[train_val], cells.slide_ids[train_val], n_classes, noise)
    noisy_labels = cells.labels.copy()
    noisy_labels[train_val] = noisy.labels
    noise_record: dict[str, Any] = {"unit": noise.unit, "seed": noise.seed, **noisy.describe()}
    if cells.true_labels is not None:
        wrong = noisy_labels[train_val] != cells.true_labels[train_val]
        noise_record["train_val_labels_wrong_vs_truth"] = float(wrong.mean())

    trained = yield from train_steps(
        cells.crops[split.train],
        noisy_labels[split.train],
        cells.crops[split.val],
        noisy_labels[split.val],
        n_classes,
        config,
        device=device,
        checkpoint=out_dir / "checkpoint.pt",
        resume=resume,
    )
    yield Progress("evaluate", 0, 2, "calibrating on the noisy validation labels")
    val_logits = predict_logits(
        trained.network, cells.crops[split.val], trained.mean, trained.std, device
    )
    transition = _noise_transition(noise, assumed_noise_rate, n_classes)
    temperature = fit_temperature(val_logits, noisy_labels[split.val], transition)
    test_logits = predict_logits(
        trained.network, cells.crops[split.test], trained.mean, trained.std, device
    )
    test_probabilities = torch.softmax(torch.from_numpy(test_logits) / temperature, 1).numpy()
    clean = cells.true_labels if cells.true_labels is not None else cells.labels
    test_truth = clean[split.test]
    labels_note = "clean labels" if cells.true_labels is not None else "given labels"
    test_metrics = classification_metrics(test_probabilities, test_truth, cells.classes)
    uncalibrated = torch.softmax(torch.from_numpy(test_logits), 1).numpy()
    test_metrics["ece_before_temperature"] = expected_calibration_error(uncalibrated, test_truth)
    val_probabilities = torch.softmax(torch.from_numpy(val_logits) / temperature, 1).numpy()
    metrics: dict[str, Any] = {
        "kind": kind,
        "test_labels": labels_note,
        "test": test_metrics,
        "validation_noisy": {
            "accuracy": float((val_probabilities.argmax(1) == noisy_labels[split.val]).mean()),
            "n": int(split.val.size),
        },
        "temperature": temperature,
        "best_epoch": trained.best_epoch,
        "epochs_run": len(trained.history),
        "noise": noise_record,
    }
    if kind == "blast" and cells.annotations is not None and "cell_type" in cells.annotations:
        metrics["test_called_blast"] = call_rates_by_cell_type(
            test_probabilities[:, 1] >= threshold, cells.annotations.iloc[split.test]
        )
    if kind == "blast" and split.by == "slide":
        metrics["test_slides"] = blast_slide_metrics(
            test_probabilities[:, 1],
            test_truth.astype(bool),
            cells.slide_ids[split.test],
            threshold,
        )
    if kind == "mutation" and split.by == "slide":
        test_slides = cells.slide_ids[split.test]
        slide_truth = labels_per_slide(test_truth, test_slides, cells.classes)
        if n_classes == 2:
            val_slides = cells.slide_ids[split.val]
            threshold_90 = operating_threshold(
                val_probabilities,
                val_slides,
                labels_per_slide(noisy_labels[split.val], val_slides, cells.classes),
                cells.classes,
            )
            metrics["operating_point"] = {
                "positive_class": cells.classes[-1],
                "pooling": "mean",
                "threshold": threshold_90,
                "chosen": "90% specificity on the validation patients",
            }
            metrics["test_patients"] = patient_level_metrics(
                test_probabilities,
                test_slides,
                slide_truth,
                cells.classes,
                min_blasts=min_blasts,
                threshold=threshold_90,
                seed=config.seed,
            )
        metrics["test_slides"] = mutation_slide_metrics(
            test_probabilities,
            test_slides,
            slide_truth,
            cells.classes,
            min_blasts=min_blasts,
            seed=config.seed,
        )
    yield Progress("evaluate", 1, 2, "writing the report")
    report_dir = out_dir / "report"
    metrics["training_history"] = trained.history
    metrics["data"] = {
        "source": cells.source,
        "split": split.describe(cells),
        "class_counts_train_noisy": cells.class_counts(noisy_labels[split.train]),
        "class_counts_test_clean": cells.class_counts(test_truth),
        "window_um": cells.window_um,
        "pixel_size_um": cells.pixel_size_um,
    }
    metrics["config"] = config.describe()
    write_report(
        report_dir,
        metrics,
        probabilities=test_probabilities,
        true=test_truth,
        classes=cells.classes,
        history=trained.history,
        best_epoch=trained.best_epoch,
        labels_note=labels_note,
    )
    written_bundle = None
    if write_bundle:
        training = {
            "command": command_line(),
            "git_commit": git_commit(),
            "seed": config.seed,
            "dataset": {
                "source": cells.source,
                "split": {k: v for k, v in split.describe(cells).items() if "slides" not in k},
                "n_cells": len(cells),
            },
            "noise_method": config.method,
            "noise_rate": noise.rate,
            "injected_noise": noise_record,
            "assumed_noise_rate": assumed_noise_rate,
            "epochs": config.epochs,
            "epochs_run": len(trained.history),
            "best_epoch": trained.best_epoch,
            "estimated_noise_rate": trained.estimated_noise_rate,
            "forget_rate": trained.forget_rate if config.method == "coteaching" else None,
            "config": config.describe(),
            **(provenance or {}),
        }
        metadata = classifier_metadata(
            kind,
            name or bundle_dir.name,
            architecture=trained.architecture,
            classes=cells.classes,
            window_um=cells.window_um,
            pixel_size_um=cells.pixel_size_um,
            mean=trained.mean,
            std=trained.std,
            threshold=threshold,
            temperature=temperature,
            demo=demo,
            training=training,
            **(crop_options or {}),
            metrics=_compact(
                {
                    k: v
                    for k, v in metrics.items()
                    if k not in ("training_history", "data", "config")
                }
            ),
        )
        written_bundle = save_classifier(bundle_dir, trained.network, metadata, overwrite=overwrite)
    yield Progress("evaluate", 2, 2, "done")
    return ExperimentResult(
        metrics=metrics,
        trained=trained,
        temperature=temperature,
        report_dir=report_dir,
        bundle_dir=written_bundle,
        noise=noise_record | {"spec": asdict(noise)},
    )
