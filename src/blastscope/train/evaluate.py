"""Evaluation of a trained classifier: metrics, calibration and the report folder.

- :func:`probabilities_steps`: a classifier's probabilities for uint8 crops, batch by batch.
- :func:`classification_metrics`: accuracy, balanced accuracy, per-class precision / recall / F1,
  the confusion matrix (rows true, columns predicted), one-vs-rest ROC AUC and the expected
  calibration error (ECE: the confidence-weighted gap between confidence and accuracy over 15
  equal-width bins of the top-class probability).
- :func:`fit_temperature`: temperature scaling (Guo et al. 2017), one scalar T that minimises the
  negative log-likelihood of the validation labels. The validation labels are noisy; when the
  noise model is known (or estimated) pass its transition matrix, and T is fitted so that the
  *noise-corrupted* probabilities ``softmax(z / T) @ T_noise`` explain the noisy labels, which
  keeps the clean-label probabilities from being flattened by the noise.
- :func:`write_report`: ``metrics.json`` and the PNG figures (confusion matrix, ROC curves,
  reliability plot, training curves), drawn on matplotlib ``Figure`` objects (the Agg canvas;
  pyplot and GUI backends are never touched).
"""

from __future__ import annotations

import json
import math
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from scipy.optimize import minimize_scalar

from blastscope.crops import uint8_to_crops
from blastscope.devices import resolve_device
from blastscope.models.classifier import Classifier
from blastscope.progress import Progress

ECE_BINS = 15


def probabilities_steps(
    classifier: Classifier,
    crops: np.ndarray,
    *,
    device: str | torch.device = "auto",
    batch_size: int = 256,
    stage: str = "evaluate",
) -> Generator[Progress, None, np.ndarray]:
    """Class probabilities (N, K) float64 of uint8 crops (N, h, w, 3), one Progress per batch."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {batch_size!r}.")
    target = resolve_device(device)
    n_batches = math.ceil(len(crops) / batch_size)
    outputs = []
    for batch in range(n_batches):
        chunk = crops[batch * batch_size : (batch + 1) * batch_size]
        outputs.append(classifier.probabilities(uint8_to_crops(chunk, target)).cpu().numpy())
        yield Progress(stage, batch + 1, n_batches)
    if not outputs:
        return np.empty((0, len(classifier.classes)))
    return np.concatenate(outputs).astype(np.float64)


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, K) counts, rows the true class, columns the predicted class."""
    return np.bincount(true * n_classes + predicted, minlength=n_classes**2).reshape(
        n_classes, n_classes
    )


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """False- and true-positive rates over all thresholds of ``scores``, and the area under them.

    Returns (fpr, tpr, auc); the AUC is NaN when ``positive`` holds one class only. Tied scores
    move the curve diagonally (the trapezoid rule then counts ties as one half).
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0]), math.nan
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_positive = scores[order], positive[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    tp = np.cumsum(sorted_positive)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    tpr = np.r_[0.0, tp / n_pos]
    fpr = np.r_[0.0, fp / n_neg]
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
    return fpr, tpr, auc


def calibration_bins(
    probabilities: np.ndarray, true: np.ndarray, n_bins: int = ECE_BINS
) -> dict[str, list[float]]:
    """Per equal-width bin of top-class confidence: count, mean confidence, accuracy."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == true
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(which, confidence, n_bins) / counts
        accuracy = np.bincount(which, correct.astype(float), n_bins) / counts
    return {
        "edges": edges.tolist(),
        "count": counts.tolist(),
        "confidence": mean_confidence.tolist(),
        "accuracy": accuracy.tolist(),
    }


def expected_calibration_error(
    probabilities: np.ndarray, true: np.ndarray, n_bins: int = ECE_BINS
) -> float:
    """ECE: sum over bins of (share of samples) × |accuracy − mean confidence|."""
    bins = calibration_bins(probabilities, true, n_bins)
    counts = np.asarray(bins["count"], dtype=float)
    filled = counts > 0
    gaps = np.abs(np.asarray(bins["accuracy"]) - np.asarray(bins["confidence"]))[filled]
    return float((counts[filled] / counts.sum() * gaps).sum())


def classification_metrics(
    probabilities: np.ndarray, true: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Metrics of probabilities (N, K) against labels (N,): see the module docstring."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    true = np.asarray(true, dtype=np.int64)
    n_classes = len(classes)
    if probabilities.ndim != 2 or probabilities.shape != (true.size, n_classes):
        raise ValueError(
            f"probabilities must be (N, {n_classes}) for {true.size} labels, got "
            f"{probabilities.shape}."
        )
    if true.size == 0:
        raise ValueError("No samples to evaluate: the evaluation split is empty.")
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(true, predicted, n_classes)
    support = matrix.sum(axis=1)
    predicted_counts = matrix.sum(axis=0)
    per_class = {}
    recalls = []
    for k, name in enumerate(classes):
        hits = matrix[k, k]
        precision = hits / predicted_counts[k] if predicted_counts[k] else math.nan
        recall = hits / support[k] if support[k] else math.nan
        f1 = (
            2 * precision * recall / (precision + recall)
            if precision + recall > 0 and not math.isnan(precision + recall)
            else math.nan
        )
        _, _, auc = roc_curve(probabilities[:, k], true == k)
        per_class[name] = {
            "precision": _clean(precision),
            "recall": _clean(recall),
            "f1": _clean(f1),
            "support": int(support[k]),
            "roc_auc": _clean(auc),
        }
        if support[k]:
            recalls.append(recall)
    return {
        "n": int(true.size),
        "accuracy": float((predicted == true).mean()),
        "balanced_accuracy": float(np.mean(recalls)),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "ece": expected_calibration_error(probabilities, true),
        "calibration_bins": calibration_bins(probabilities, true),
    }


def call_rates_by_cell_type(calls: np.ndarray, annotations: pd.DataFrame) -> dict[str, Any]:
    """Share of cells called blast per cell type, and per cell type and patient label.

    ``calls`` (N,) bool; ``annotations`` has a ``cell_type`` column (and ``label``, the
    patient's diagnosis, where known), e.g. a CellaVision export's. Shows how the technologist's
    classes fare: how many promyelocytes are called blasts in APL against other AML, say.
    """
    table = annotations.assign(called=np.asarray(calls, dtype=bool))
    by_type = table.groupby("cell_type")["called"].agg(["mean", "size"])
    rates: dict[str, Any] = {
        "by_cell_type": {
            str(cell_type): {"share_called_blast": float(row["mean"]), "n": int(row["size"])}
            for cell_type, row in by_type.iterrows()
        }
    }
    if "label" in table and table["label"].notna().all():
        by_label = table.groupby(["cell_type", "label"])["called"].agg(["mean", "size"])
        rates["by_cell_type_and_label"] = {
            f"{cell_type} | {label}": {
                "share_called_blast": float(row["mean"]),
                "n": int(row["size"]),
            }
            for (cell_type, label), row in by_label.iterrows()
        }
    return rates


def _clean(value: float) -> float | None:
    """A float for JSON: NaN becomes None."""
    return None if value is None or math.isnan(value) else float(value)


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, noise_transition: np.ndarray | None = None
) -> float:
    """Temperature T in [0.05, 20] minimising the NLL of ``labels`` (N,) under logits (N, K) / T.

    With ``noise_transition`` (K, K) (``T[i, j] = P(noisy j | true i)``) the likelihood is that
    of the noisy labels under the noise-corrupted probabilities (see the module docstring).
    """
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    transition = (
        None
        if noise_transition is None
        else torch.as_tensor(np.asarray(noise_transition), dtype=torch.float64)
    )

    def nll(log_t: float) -> float:
        probabilities = torch.softmax(z / math.exp(log_t), dim=1)
        if transition is not None:
            probabilities = probabilities @ transition
        picked = probabilities.gather(1, y[:, None]).clamp_min(1e-12)
        return float(-picked.log().mean())

    result = minimize_scalar(
        nll, bounds=(math.log(0.05), math.log(20.0)), method="bounded", options={"xatol": 1e-4}
    )
    return float(math.exp(result.x))


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: Path, title: str) -> Path:
    """Confusion matrix (counts, rows true) as a PNG, each row also shown as a share."""
    figure = Figure(figsize=(1.4 * len(classes) + 2.5, 1.2 * len(classes) + 2.0))
    axes = figure.add_subplot()
    matrix = np.asarray(matrix)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for (i, j), count in np.ndenumerate(matrix):
        colour = "white" if shares[i, j] > 0.6 else "black"
        axes.text(j, i, f"{count}\n{shares[i, j]:.0%}", ha="center", va="center", color=colour)
    axes.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, label="share of the true class")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def plot_roc(
    probabilities: np.ndarray, true: np.ndarray, classes: Sequence[str], path: Path, title: str
) -> Path:
    """One-vs-rest ROC curve per class (one curve, the positive class, for two classes)."""
    figure = Figure(figsize=(5.0, 4.6))
    axes = figure.add_subplot()
    shown = [1] if len(classes) == 2 else range(len(classes))
    for k in shown:
        fpr, tpr, auc = roc_curve(probabilities[:, k], true == k)
        axes.plot(fpr, tpr, label=f"{classes[k]} (AUC {auc:.3f})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("false-positive rate")
    axes.set_ylabel("true-positive rate")
    axes.set_title(title)
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def plot_reliability(bins: dict[str, list[float]], ece: float, path: Path, title: str) -> Path:
    """Reliability diagram: accuracy against mean confidence per bin, and the bin counts."""
    figure = Figure(figsize=(5.0, 5.4))
    top, bottom = figure.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    edges = np.asarray(bins["edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    accuracy = np.nan_to_num(np.asarray(bins["accuracy"], dtype=float))
    top.bar(centres, accuracy, width=width * 0.9, color="tab:blue", label="accuracy")
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    top.set_ylabel("accuracy")
    top.set_title(f"{title} (ECE {ece:.3f})")
    top.legend(loc="upper left", fontsize="small")
    bottom.bar(centres, bins["count"], width=width * 0.9, color="tab:grey")
    bottom.set_xlabel("confidence (top-class probability)")
    bottom.set_ylabel("cells")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def plot_training_curves(history: Sequence[dict[str, Any]], best_epoch: int, path: Path) -> Path:
    """Training loss and noisy-validation loss / accuracy per epoch, the chosen epoch marked."""
    figure = Figure(figsize=(8.0, 3.6))
    left, right = figure.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    left.plot(epochs, [row["train_loss"] for row in history], marker="o", label="train (method)")
    left.plot(epochs, [row["val_loss"] for row in history], marker="o", label="val CE (noisy)")
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.legend(fontsize="small")
    right.plot(epochs, [row["val_accuracy"] for row in history], marker="o", color="tab:green")
    right.axvline(best_epoch, color="grey", linestyle=":", label=f"chosen epoch {best_epoch}")
    right.set_xlabel("epoch")
    right.set_ylabel("accuracy on noisy val labels")
    right.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def write_report(
    folder: str | Path,
    metrics: dict[str, Any],
    *,
    probabilities: np.ndarray,
    true: np.ndarray,
    classes: Sequence[str],
    history: Sequence[dict[str, Any]] | None = None,
    best_epoch: int | None = None,
    labels_note: str = "clean labels",
) -> dict[str, Path]:
    """Write ``metrics.json`` and the PNGs of the test evaluation into ``folder``.

    ``metrics`` is written as given (it holds the test metrics under ``"test"`` and whatever else
    the trainer adds); the figures are drawn from ``probabilities`` (N, K) and ``true`` (N,);
    ``labels_note`` says in the titles which labels the test was scored against; the training
    curves are drawn when a ``history`` is given.
    Returns the paths written by name.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    test = metrics["test"]
    written = {
        "metrics": folder / "metrics.json",
        "confusion": plot_confusion(
            np.asarray(test["confusion_matrix"]),
            classes,
            folder / "confusion_matrix.png",
            f"Confusion matrix (held-out test, {labels_note})",
        ),
        "roc": plot_roc(probabilities, true, classes, folder / "roc_curves.png", "ROC (test)"),
        "reliability": plot_reliability(
            test["calibration_bins"], test["ece"], folder / "reliability.png", "Reliability (test)"
        ),
    }
    if history:
        written["training"] = plot_training_curves(
            history, best_epoch or len(history), folder / "training_curves.png"
        )
    written["metrics"].write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return written
