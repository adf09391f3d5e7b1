"""Blast models on real cells: what a model ranks, what it calls, and which cell types it confuses.

    .venv/bin/python benchmarks/bench_blast_real.py \\
        --cellavision DeepAPL/Data/All --patients DeepAPL/Data/master.csv --cohort Discovery

The signed cells of a CellaVision export (the default cell-type map: blast equivalents against
the other white cells) are cut as the pipeline cuts them and scored by each blast bundle given
(default: the shipped ``blast-demo`` and ``blast-smear``). For each this prints the AUC, blast
recall and the share of non-blasts called blasts at the bundle's own threshold, the recall at a
threshold that calls 10% of the non-blasts blasts (an oracle threshold read from these very
cells: it shows what the ranking allows, not what a user gets), and per cell type the share
called blast at both thresholds. ``--colour-match`` scores the crops again after moving each
crop's colours (mean and sd per Lab channel) onto those of the generator's crops: if a model
failed on real cells for their colours alone, this would raise its AUC.

A test only: nothing here trains, thresholds or calibrates a shipped model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from blastscope.models.classifier import load_classifier
from blastscope.progress import run_steps
from blastscope.train.cellavision import cellavision_cells_steps, read_patients
from blastscope.train.datasets import synthetic_cells_steps
from blastscope.train.evaluate import roc_curve

CELLAVISION_PIXEL_SIZE_UM = 0.1057
"""DeepAPL's crops, measured from red cells by the reader (docs/benchmarks.md, "The reader")."""

ORACLE_FALSE_POSITIVE_RATE = 0.10


def blast_probabilities(model: str, crops: np.ndarray) -> np.ndarray:
    """p(blast) of every crop (N, h, w, 3) uint8 under the bundle ``model``."""
    classifier = load_classifier(model, "blast")
    tensor = torch.from_numpy(crops).permute(0, 3, 1, 2)
    chunks = [
        classifier.probabilities(tensor[start : start + 512].float() / 255.0)[:, 1]
        for start in range(0, len(tensor), 512)
    ]
    return torch.cat(chunks).numpy()


def _lab(crops: np.ndarray) -> np.ndarray:
    return np.stack([cv2.cvtColor(crop, cv2.COLOR_RGB2LAB) for crop in crops]).astype(np.float32)


def colour_matched(crops: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each crop with its Lab mean and sd per channel moved onto those of ``reference`` crops."""
    reference_lab = _lab(reference).reshape(-1, 3)
    target_mean, target_sd = reference_lab.mean(0), reference_lab.std(0)
    lab = _lab(crops)
    mean = lab.mean(axis=(1, 2), keepdims=True)
    sd = lab.std(axis=(1, 2), keepdims=True) + 1e-3
    moved = np.clip((lab - mean) / sd * target_sd + target_mean, 0, 255).astype(np.uint8)
    return np.stack([cv2.cvtColor(crop, cv2.COLOR_LAB2RGB) for crop in moved])


def report(
    name: str, p_blast: np.ndarray, is_blast: np.ndarray, cell_types: np.ndarray, threshold: float
) -> None:
    """Print the figures of one model on one version of the crops."""
    auc = roc_curve(p_blast, is_blast)[2]
    negatives = np.sort(p_blast[~is_blast])
    oracle = negatives[int((1 - ORACLE_FALSE_POSITIVE_RATE) * len(negatives))]
    print(
        f"{name}: AUC {auc:.3f}; at its threshold {threshold:.2f}: blast recall "
        f"{np.mean(p_blast[is_blast] > threshold):.3f}, non-blasts called blast "
        f"{np.mean(p_blast[~is_blast] > threshold):.3f}; recall at "
        f"{ORACLE_FALSE_POSITIVE_RATE:.0%} non-blasts called (oracle threshold {oracle:.3f}): "
        f"{np.mean(p_blast[is_blast] > oracle):.3f}"
    )
    print(f"  {'cell type':28s} {'n':>5s}  called at threshold / at oracle")
    for cell_type in np.unique(cell_types):
        chosen = cell_types == cell_type
        print(
            f"  {cell_type:28s} {chosen.sum():5d}  {np.mean(p_blast[chosen] > threshold):.2f} / "
            f"{np.mean(p_blast[chosen] > oracle):.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cellavision", type=Path, required=True)
    parser.add_argument("--patients", type=Path, required=True)
    parser.add_argument("--cohort", required=True)
    parser.add_argument("--models", nargs="+", default=["blast-demo", "blast-smear"])
    parser.add_argument("--colour-match", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    patients = read_patients(
        args.patients,
        id_column="Patient_ID",
        label_column="Diagnosis",
        cohort_column="Cohort",
        cohort=args.cohort,
    )
    window = load_classifier(args.models[0], "blast").input
    cells = run_steps(
        cellavision_cells_steps(
            args.cellavision,
            patients,
            kind="blast",
            window_um=window.window_um,
            pixel_size_um=window.pixel_size_um,
            source_pixel_size_um=CELLAVISION_PIXEL_SIZE_UM,
        )
    )
    is_blast = cells.labels == 1
    cell_types = cells.annotations["cell_type"].to_numpy().astype(str)
    print(f"{len(cells)} signed cells of {args.cohort}: {is_blast.sum()} blast equivalents")
    versions = {"as exported": cells.crops}
    if args.colour_match:
        # A generator seed that no shipped model was trained on (they use seed 0).
        generated = run_steps(
            synthetic_cells_steps(
                "blast",
                "default",
                6,
                100,
                seed=7,
                window_um=window.window_um,
                pixel_size_um=window.pixel_size_um,
                classes=("non-blast", "blast"),
            )
        )
        versions["colours of the generator"] = colour_matched(cells.crops, generated.crops)
    for model in args.models:
        threshold = float(load_classifier(model, "blast").threshold)
        for version, crops in versions.items():
            report(
                f"{model}, {version}",
                blast_probabilities(model, crops),
                is_blast,
                cell_types,
                threshold,
            )


if __name__ == "__main__":
    main()
