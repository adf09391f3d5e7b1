"""Patient-grouped cross-validation on a real cohort (``blastscope crossval blast|mutation``).

The protocol, for a development cohort such as DeepAPL's Discovery patients:

- **Outer folds of patients**: every patient's cells are in one test fold only; folds are
  stratified by the patient's label (diagnosis), so each holds both kinds of patient.
- **Inner patient split**: inside each outer fold a share of the *training* patients
  (``val_fraction``, stratified) is held back. Only they choose the epoch, fit the calibration
  temperature and set the thresholds (the blast threshold; the 90%-specificity operating point
  of the slide call). The outer test patients are scored once, by a model that never saw them.
- **Pooled out-of-fold scores**: the test scores of the K folds are pooled and the metrics are
  computed once on them; 95% intervals come from a bootstrap over *patients*
  (:mod:`blastscope.train.resampling`), not from the spread of five fold numbers.

:func:`crossval_blast_steps` scores a blast classifier per cell. :func:`crossval_mutation_steps`
runs the paper's setting: every cell inherits its patient's label (noisy instance labels), one
cell classifier per training method, pooled per patient by ``mean``, ``geometric`` or
``attention`` (attention-based MIL trained on the bags, :mod:`blastscope.train.mil`); patient
AUC, sensitivity at 90% specificity, abstention, and a paired-bootstrap comparison of the
declared primary method against the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from blastscope.progress import Progress
from blastscope.slide_call import pool_probabilities
from blastscope.train.datasets import CellSet, DatasetError, _stratified_order
from blastscope.train.evaluate import (
    call_rates_by_cell_type,
    expected_calibration_error,
    fit_temperature,
)
from blastscope.train.loop import (
    TrainConfig,
    TrainedModel,
    predict_embeddings,
    predict_logits,
    train_steps,
)
from blastscope.train.mil import bag_probabilities, train_attention_mil
from blastscope.train.resampling import (
    DEFAULT_N_BOOTSTRAP,
    auc,
    balanced_threshold,
    cluster_bootstrap,
    paired_cluster_bootstrap,
    sensitivity_at_specificity,
    threshold_at_specificity,
)

POOLINGS = ("mean", "geometric", "attention")
DEFAULT_FOLDS = 5
DEFAULT_VAL_FRACTION = 0.2
OPERATING_SPECIFICITY = 0.9
MIN_BLASTS_TABLE = (1, 2, 3, 5, 10, 20)
ABSTENTION_SCORE = 0.5
"""Score given to a patient the call abstains on when abstentions enter the AUC (no
information: ranked level with every other abstention, between the called patients)."""


def stratified_patient_folds(
    strata: Mapping[str, str], n_folds: int, seed: int = 0
) -> dict[str, int]:
    """Patient -> fold in [0, n_folds), each stratum's patients shuffled and dealt in turn."""
    if n_folds < 2:
        raise DatasetError(f"Cross-validation needs at least 2 folds, got {n_folds}.")
    if len(strata) < n_folds:
        raise DatasetError(
            f"{len(strata)} patients cannot fill {n_folds} folds: use fewer folds (--folds)."
        )
    rng = np.random.default_rng(seed)
    groups = [
        np.array(sorted(p for p, s in strata.items() if s == stratum))
        for stratum in sorted(set(strata.values()))
    ]
    order = _stratified_order(groups, rng)
    return {str(patient): position % n_folds for position, patient in enumerate(order)}


def split_patients(
    patients: Sequence[str], strata: Mapping[str, str], val_fraction: float, seed: int = 0
) -> tuple[list[str], list[str]]:
    """(training, validation) patients; ``val_fraction`` of each stratum, at least one, held."""
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"The inner validation fraction must be in (0, 1), got {val_fraction}.")
    rng = np.random.default_rng(seed)
    train: list[str] = []
    val: list[str] = []
    for stratum in sorted({strata[p] for p in patients}):
        members = list(rng.permutation(sorted(p for p in patients if strata[p] == stratum)))
        n_val = min(max(1, round(val_fraction * len(members))), max(len(members) - 1, 0))
        val += members[:n_val]
        train += members[n_val:]
    if not val or not train:
        raise DatasetError("Too few patients to hold an inner validation split; add patients.")
    return sorted(train), sorted(val)


def patient_strata(cells: CellSet) -> dict[str, str]:
    """Each patient's stratum: its label in the patient table where known, else the majority
    label of its cells."""
    patients = cells.slide_ids.astype(str)
    if cells.annotations is not None and "label" in cells.annotations:
        labels = cells.annotations["label"].astype(str).to_numpy()
        return dict(zip(patients, labels, strict=True))
    return {
        patient: cells.classes[int(np.bincount(cells.labels[patients == patient]).argmax())]
        for patient in np.unique(patients)
    }


@dataclass(frozen=True)
class FoldPlan:
    """One outer fold: the patients it tests, and its inner training / validation patients."""

    fold: int
    test: list[str]
    train: list[str]
    val: list[str]


def plan_folds(
    strata: Mapping[str, str], n_folds: int, val_fraction: float, seed: int = 0
) -> list[FoldPlan]:
    """The outer folds (:func:`stratified_patient_folds`) with their inner splits
    (:func:`split_patients`, seeded per fold)."""
    fold_of = stratified_patient_folds(strata, n_folds, seed)
    plans = []
    for fold in range(n_folds):
        rest = sorted(p for p, f in fold_of.items() if f != fold)
        train, val = split_patients(rest, strata, val_fraction, seed + fold)
        plans.append(FoldPlan(fold, sorted(p for p, f in fold_of.items() if f == fold), train, val))
    return plans


def _with_context(steps: Generator[Progress, None, Any], context: str):
    """The events of ``steps`` with ``context`` put before their message; returns its value."""
    while True:
        try:
            event = next(steps)
        except StopIteration as stop:
            return stop.value
        message = f"{context}: {event.message}" if event.message else context
        yield Progress(event.stage, event.done, event.total, message)


@dataclass
class FittedClassifier:
    """A cell classifier trained in one fold and its calibration temperature."""

    trained: TrainedModel
    temperature: float

    def probabilities(self, crops: np.ndarray, device: str | torch.device) -> np.ndarray:
        """Calibrated class probabilities (N, K) float64."""
        logits = predict_logits(
            self.trained.network, crops, self.trained.mean, self.trained.std, device
        )
        return torch.softmax(torch.from_numpy(logits) / self.temperature, 1).double().numpy()

    def embeddings(self, crops: np.ndarray, device: str | torch.device) -> np.ndarray:
        """The network's embeddings (N, F) float32 (for attention pooling)."""
        return predict_embeddings(
            self.trained.network, crops, self.trained.mean, self.trained.std, device
        )


def fit_classifier_steps(
    crops: np.ndarray,
    labels: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    n_classes: int,
    config: TrainConfig,
    device: str | torch.device,
) -> Generator[Progress, None, FittedClassifier]:
    """Train on the ``train`` cells, choose the epoch and fit the temperature on ``val``."""
    trained = yield from train_steps(
        crops[train], labels[train], crops[val], labels[val], n_classes, config, device=device
    )
    val_logits = predict_logits(trained.network, crops[val], trained.mean, trained.std, device)
    return FittedClassifier(trained, fit_temperature(val_logits, labels[val]))


# ---------------------------------------------------------------------------------------------
# Blast classifier


def _binary_metrics(
    p_blast: np.ndarray, calls: np.ndarray, truth: np.ndarray, index: np.ndarray
) -> dict[str, float]:
    p, c, t = p_blast[index], calls[index], truth[index]
    recall = float(c[t].mean()) if t.any() else math.nan
    fpr = float(c[~t].mean()) if (~t).any() else math.nan
    return {
        "balanced_accuracy": (recall + 1.0 - fpr) / 2.0,
        "recall": recall,
        "false_positive_rate": fpr,
        "accuracy": float((c == t).mean()),
        "auc": auc(p, t),
    }


def blast_metrics(
    table: pd.DataFrame, *, n_bootstrap: int = DEFAULT_N_BOOTSTRAP, seed: int = 0
) -> dict[str, Any]:
    """Metrics of pooled out-of-fold blast scores with patient-bootstrap 95% intervals.

    ``table`` has one row per cell: ``patient``, ``truth`` (bool), ``p_blast`` and ``call`` (at
    its fold's threshold); ``cell_type`` and ``label`` (the patient's) when known.
    """
    p_blast = table["p_blast"].to_numpy(np.float64)
    calls = table["call"].to_numpy(bool)
    truth = table["truth"].to_numpy(bool)
    groups = table["patient"].to_numpy(str)
    metrics: dict[str, Any] = {"n_cells": len(table), "n_patients": len(set(groups))}
    for name in ("balanced_accuracy", "recall", "false_positive_rate", "accuracy", "auc"):
        metrics[name] = cluster_bootstrap(
            lambda index, name=name: _binary_metrics(p_blast, calls, truth, index)[name],
            groups,
            n_bootstrap=n_bootstrap,
            seed=seed,
        ).to_dict()
    two_class = np.stack([1.0 - p_blast, p_blast], axis=1)
    metrics["ece"] = cluster_bootstrap(
        lambda index: expected_calibration_error(two_class[index], truth[index].astype(int)),
        groups,
        n_bootstrap=n_bootstrap,
        seed=seed,
    ).to_dict()
    at_half = p_blast >= 0.5
    metrics["at_threshold_0.5"] = _binary_metrics(p_blast, at_half, truth, np.arange(len(table)))
    if "cell_type" in table:
        metrics["called_blast"] = call_rates_by_cell_type(calls, table)
    return metrics


@dataclass
class CrossvalResult:
    """What a cross-validation produced: metrics, per-cell and per-patient tables, folds."""

    metrics: dict[str, Any]
    cells: pd.DataFrame
    patients: pd.DataFrame | None = None
    folds: list[dict[str, Any]] = field(default_factory=list)


def _annotation(cells: CellSet, column: str, index: np.ndarray) -> np.ndarray | None:
    if cells.annotations is None or column not in cells.annotations:
        return None
    return cells.annotations[column].to_numpy()[index]


def crossval_blast_steps(
    cells: CellSet,
    config: TrainConfig,
    *,
    n_folds: int = DEFAULT_FOLDS,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    device: str | torch.device = "auto",
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
) -> Generator[Progress, None, CrossvalResult]:
    """Patient-grouped cross-validation of a blast classifier on ``cells`` (classes
    ("non-blast", "blast")): per fold, train on the inner training patients, choose the epoch,
    temperature and threshold (highest balanced accuracy) on the inner validation patients, and
    score the test patients."""
    if cells.classes != ("non-blast", "blast"):
        raise DatasetError(f"A blast cross-validation needs blast labels, got {cells.classes}.")
    patients = cells.slide_ids.astype(str)
    plans = plan_folds(patient_strata(cells), n_folds, val_fraction, seed)
    rows = []
    folds = []
    for plan in plans:
        fold = plan.fold
        test = np.flatnonzero(np.isin(patients, plan.test))
        train = np.flatnonzero(np.isin(patients, plan.train))
        val = np.flatnonzero(np.isin(patients, plan.val))
        fitted = yield from _with_context(
            fit_classifier_steps(cells.crops, cells.labels, train, val, 2, config, device),
            f"fold {fold + 1}/{n_folds}",
        )
        val_p = fitted.probabilities(cells.crops[val], device)[:, 1]
        threshold = balanced_threshold(val_p, cells.labels[val] == 1)
        test_p = fitted.probabilities(cells.crops[test], device)[:, 1]
        rows.append(
            pd.DataFrame(
                {
                    "patient": patients[test],
                    "fold": fold,
                    "truth": cells.labels[test] == 1,
                    "p_blast": test_p,
                    "threshold": threshold,
                    "call": test_p >= threshold,
                    **{
                        column: values
                        for column in ("cell_type", "label", "slide", "path")
                        if (values := _annotation(cells, column, test)) is not None
                    },
                }
            )
        )
        folds.append(
            {
                "fold": fold,
                "test_patients": len(plan.test),
                "inner_train_patients": len(plan.train),
                "inner_val_patients": len(plan.val),
                "best_epoch": fitted.trained.best_epoch,
                "temperature": fitted.temperature,
                "threshold": threshold,
            }
        )
    table = pd.concat(rows, ignore_index=True)
    yield Progress("crossval", 0, 1, "bootstrap intervals")
    metrics = blast_metrics(table, n_bootstrap=n_bootstrap, seed=seed)
    metrics["protocol"] = _protocol(n_folds, val_fraction, seed, n_bootstrap)
    yield Progress("crossval", 1, 1, "done")
    return CrossvalResult(metrics=metrics, cells=table, folds=folds)


def _protocol(n_folds: int, val_fraction: float, seed: int, n_bootstrap: int) -> dict[str, Any]:
    return {
        "outer_folds": n_folds,
        "outer_folds_stratified_by": "patient label",
        "inner_validation_fraction_of_training_patients": val_fraction,
        "chosen_on_inner_validation": "epoch, temperature, thresholds",
        "scores": "out-of-fold, pooled over the folds",
        "intervals": f"95% percentile, {n_bootstrap} resamples of patients",
        "seed": seed,
    }


# ---------------------------------------------------------------------------------------------
# Mutation (bag labels)


@dataclass(frozen=True)
class Arm:
    """One training method with one pooling, e.g. ``gce+attention``."""

    method: str
    pooling: str

    @property
    def name(self) -> str:
        return f"{self.method}+{self.pooling}"

    @staticmethod
    def parse(text: str) -> Arm:
        method, sep, pooling = text.partition("+")
        if not sep or pooling not in POOLINGS:
            raise DatasetError(
                f"Cannot read {text!r}: write METHOD+POOLING, e.g. gce+attention (poolings: "
                f"{', '.join(POOLINGS)})."
            )
        return Arm(method.strip(), pooling)


def _pooled_scores(
    probabilities: np.ndarray, patients: np.ndarray, pooling: str, order: Sequence[str]
) -> np.ndarray:
    """Pooled class probabilities (P, K) per patient of ``order``; NaN rows without cells."""
    pooled = np.full((len(order), probabilities.shape[1]), np.nan)
    for row, patient in enumerate(order):
        chosen = patients == patient
        if chosen.any():
            pooled[row] = pool_probabilities(probabilities[chosen], pooling)
    return pooled


def _attention_scores(
    embeddings: np.ndarray,
    patients: np.ndarray,
    train_patients: Sequence[str],
    val_patients: Sequence[str],
    score_patients: Sequence[str],
    patient_class: Mapping[str, int],
    n_classes: int,
    seed: int,
) -> np.ndarray:
    """Attention pooling trained on the training patients' bags (chosen on the validation
    bags); bag probabilities (P, K) for ``score_patients``, NaN rows for empty bags."""

    def bags(group: Sequence[str]) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
        kept = [p for p in group if (patients == p).any()]
        return (
            [embeddings[patients == p] for p in kept],
            np.array([patient_class[p] for p in kept], dtype=np.int64),
            kept,
        )

    train_bags, train_labels, _ = bags(train_patients)
    val_bags, val_labels, _ = bags(val_patients)
    model, _ = train_attention_mil(
        train_bags, train_labels, val_bags, val_labels, n_classes, seed=seed
    )
    scored, _, kept = bags(score_patients)
    result = np.full((len(score_patients), n_classes), np.nan)
    if scored:
        probabilities = bag_probabilities(model, scored)
        for row, patient in enumerate(score_patients):
            if patient in kept:
                result[row] = probabilities[kept.index(patient)]
    return result


def _blast_selection_steps(
    cells: CellSet,
    fold_train: np.ndarray,
    fold_val: np.ndarray,
    fold_test: np.ndarray,
    blast_config: TrainConfig,
    device: str | torch.device,
    context: str,
) -> Generator[Progress, None, tuple[np.ndarray, dict[str, Any]]]:
    """A blast model trained inside the fold: which test cells it calls blasts, and a record."""
    labels = cells.is_blast.astype(np.int64)
    fitted = yield from _with_context(
        fit_classifier_steps(cells.crops, labels, fold_train, fold_val, 2, blast_config, device),
        f"{context}, blast filter",
    )
    val_p = fitted.probabilities(cells.crops[fold_val], device)[:, 1]
    threshold = balanced_threshold(val_p, labels[fold_val] == 1)
    test_p = fitted.probabilities(cells.crops[fold_test], device)[:, 1]
    chosen = test_p >= threshold
    map_blasts = cells.is_blast[fold_test]
    return chosen, {
        "threshold": threshold,
        "test_cells": int(fold_test.size),
        "called_blast": int(chosen.sum()),
        "cell_type_map_blasts": int(map_blasts.sum()),
        "agreement_with_cell_type_map": float((chosen == map_blasts).mean()),
    }


def crossval_mutation_steps(
    cells: CellSet,
    configs: Mapping[str, TrainConfig],
    *,
    poolings: Sequence[str] = POOLINGS,
    primary: Arm,
    baseline: Arm,
    positive_class: str | None = None,
    blast_filter: str = "folder-map",
    blast_config: TrainConfig | None = None,
    min_blasts: int = 5,
    n_folds: int = DEFAULT_FOLDS,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = 0,
    device: str | torch.device = "auto",
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
) -> Generator[Progress, None, CrossvalResult]:
    """Patient-grouped cross-validation of the mutation model under bag labels.

    ``cells``: every usable cell with its patient's label (``labels``) and the technologist's
    blast call (``is_blast``; a CellaVision export). ``configs``: method name -> TrainConfig
    (one cell classifier per method and fold, trained on the blasts of the inner training
    patients, every cell labelled with its patient's class). ``blast_filter``: which test cells
    are pooled, ``folder-map`` (the technologist's cell types) or ``model`` (a blast classifier
    trained inside the same fold with ``blast_config``). The patient is called when it has at
    least ``min_blasts`` blasts, else the call abstains.
    """
    if cells.is_blast is None:
        raise DatasetError("The mutation cross-validation needs each cell's blast call.")
    unknown = [p for p in poolings if p not in POOLINGS]
    if unknown:
        raise DatasetError(f"Unknown pooling {unknown[0]!r}: choose from {', '.join(POOLINGS)}.")
    for arm in (primary, baseline):
        if arm.method not in configs or arm.pooling not in poolings:
            raise DatasetError(
                f"The comparison arm {arm.name} is not among the methods and poolings run."
            )
    if blast_filter not in ("folder-map", "model"):
        raise DatasetError(f"blast_filter must be folder-map or model, got {blast_filter!r}.")
    classes = cells.classes
    n_classes = len(classes)
    positive = positive_class or classes[-1]
    if positive not in classes:
        raise DatasetError(f"The positive class {positive!r} is not one of {list(classes)}.")
    positive_index = classes.index(positive)
    patients = cells.slide_ids.astype(str)
    strata = patient_strata(cells)
    patient_class = {
        p: int(np.bincount(cells.labels[patients == p]).argmax()) for p in np.unique(patients)
    }
    patient_rows, cell_rows, folds = [], [], []
    for plan in plan_folds(strata, n_folds, val_fraction, seed):
        fold = plan.fold
        context = f"fold {fold + 1}/{n_folds}"
        test_patients, inner_train, inner_val = plan.test, plan.train, plan.val
        in_train = np.isin(patients, inner_train)
        in_val = np.isin(patients, inner_val)
        test = np.flatnonzero(np.isin(patients, test_patients))
        train_blasts = np.flatnonzero(in_train & cells.is_blast)
        val_blasts = np.flatnonzero(in_val & cells.is_blast)
        record: dict[str, Any] = {
            "fold": fold,
            "test_patients": len(test_patients),
            "inner_train_patients": len(inner_train),
            "inner_val_patients": len(inner_val),
            "train_blasts": int(train_blasts.size),
            "val_blasts": int(val_blasts.size),
        }
        if blast_filter == "model":
            chosen, record["blast_filter"] = yield from _blast_selection_steps(
                cells,
                np.flatnonzero(in_train),
                np.flatnonzero(in_val),
                test,
                blast_config or TrainConfig(),
                device,
                context,
            )
            test_blasts = test[chosen]
        else:
            test_blasts = test[cells.is_blast[test]]
        record["methods"] = {}
        for method, config in configs.items():
            fitted = yield from _with_context(
                fit_classifier_steps(
                    cells.crops, cells.labels, train_blasts, val_blasts, n_classes, config, device
                ),
                f"{context}, {method}",
            )
            record["methods"][method] = {
                "best_epoch": fitted.trained.best_epoch,
                "temperature": fitted.temperature,
            }
            scored = np.concatenate([val_blasts, test_blasts])
            probabilities = fitted.probabilities(cells.crops[scored], device)
            cell_patients = patients[scored]
            groups = {"val": inner_val, "test": test_patients}
            pooled: dict[str, dict[str, np.ndarray]] = {}
            for pooling in poolings:
                if pooling == "attention":
                    bag_cells = np.concatenate([train_blasts, scored])
                    pooled[pooling] = {
                        part: _attention_scores(
                            fitted.embeddings(cells.crops[bag_cells], device),
                            patients[bag_cells],
                            inner_train,
                            inner_val,
                            group,
                            patient_class,
                            n_classes,
                            seed + fold,
                        )
                        for part, group in groups.items()
                    }
                else:
                    pooled[pooling] = {
                        part: _pooled_scores(probabilities, cell_patients, pooling, group)
                        for part, group in groups.items()
                    }
            n_blasts = {p: int((patients[test_blasts] == p).sum()) for p in test_patients}
            for pooling, parts in pooled.items():
                val_scores = parts["val"][:, positive_index]
                val_truth = np.array([patient_class[p] == positive_index for p in inner_val])
                defined = np.isfinite(val_scores)
                threshold = threshold_at_specificity(
                    val_scores[defined], val_truth[defined], OPERATING_SPECIFICITY
                )
                for row, patient in enumerate(test_patients):
                    patient_rows.append(
                        {
                            "arm": f"{method}+{pooling}",
                            "method": method,
                            "pooling": pooling,
                            "patient": patient,
                            "fold": fold,
                            "truth": classes[patient_class[patient]],
                            "n_blasts": n_blasts[patient],
                            "operating_threshold": threshold,
                            **{
                                f"p_{name}": parts["test"][row, k] for k, name in enumerate(classes)
                            },
                        }
                    )
            test_rows = slice(val_blasts.size, None)
            cell_rows.append(
                pd.DataFrame(
                    {
                        "method": method,
                        "patient": cell_patients[test_rows],
                        "fold": fold,
                        "truth": [classes[patient_class[p]] for p in cell_patients[test_rows]],
                        **{
                            f"p_{name}": probabilities[test_rows, k]
                            for k, name in enumerate(classes)
                        },
                        **{
                            column: values
                            for column in ("cell_type", "slide", "path")
                            if (values := _annotation(cells, column, test_blasts)) is not None
                        },
                    }
                )
            )
        folds.append(record)
    patient_table = pd.DataFrame(patient_rows)
    cell_table = pd.concat(cell_rows, ignore_index=True)
    yield Progress("crossval", 0, 1, "bootstrap intervals")
    metrics = mutation_metrics(
        patient_table,
        cell_table,
        classes,
        positive,
        primary=primary,
        baseline=baseline,
        min_blasts=min_blasts,
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    metrics["protocol"] = {
        **_protocol(n_folds, val_fraction, seed, n_bootstrap),
        "labels": "every cell inherits its patient's label (bag labels)",
        "blast_filter": blast_filter,
        "min_blasts": min_blasts,
        "operating_point": f"threshold at {OPERATING_SPECIFICITY:.0%} specificity on the inner "
        "validation patients, applied to the test patients",
        "abstentions": f"patients with fewer than {min_blasts} blasts; in 'auc_all' they score "
        f"{ABSTENTION_SCORE} (no information)",
    }
    yield Progress("crossval", 1, 1, "done")
    return CrossvalResult(metrics=metrics, cells=cell_table, patients=patient_table, folds=folds)


def _arm_statistics(
    table: pd.DataFrame, positive: str, min_blasts: int
) -> dict[str, Callable[[np.ndarray], float]]:
    """Statistics of one arm's patient rows, each a function of a row index (for bootstraps)."""
    score = table[f"p_{positive}"].to_numpy(np.float64)
    truth = (table["truth"] == positive).to_numpy()
    called = (table["n_blasts"].to_numpy() >= max(min_blasts, 1)) & np.isfinite(score)
    scored_all = np.where(called, score, ABSTENTION_SCORE)
    calls = score >= table["operating_threshold"].to_numpy(np.float64)

    def rate(mask: np.ndarray, of: np.ndarray) -> float:
        return float(mask[of].mean()) if of.any() else math.nan

    return {
        "auc_called": lambda i: auc(score[i][called[i]], truth[i][called[i]]),
        "auc_all": lambda i: auc(scored_all[i], truth[i]),
        "sensitivity_at_90_specificity": lambda i: sensitivity_at_specificity(
            score[i][called[i]], truth[i][called[i]], OPERATING_SPECIFICITY
        ),
        "operating_point_sensitivity": lambda i: rate(calls[i], truth[i] & called[i]),
        "operating_point_specificity": lambda i: rate(~calls[i], ~truth[i] & called[i]),
        "abstention_rate": lambda i: float((~called[i]).mean()),
    }


def mutation_metrics(
    patients: pd.DataFrame,
    cells: pd.DataFrame,
    classes: Sequence[str],
    positive: str,
    *,
    primary: Arm,
    baseline: Arm,
    min_blasts: int,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, Any]:
    """Patient-level metrics per arm with patient-bootstrap intervals, the primary comparison
    (paired bootstrap of the patient AUC over called patients), a table of the minimum number of
    blasts, and cell-level AUCs against the inherited labels."""
    arms: dict[str, Any] = {}
    tables = {arm: rows.reset_index(drop=True) for arm, rows in patients.groupby("arm")}
    for arm, rows in tables.items():
        statistics = _arm_statistics(rows, positive, min_blasts)
        groups = rows["patient"].to_numpy(str)
        called = rows["n_blasts"] >= max(min_blasts, 1)
        arms[arm] = {
            name: cluster_bootstrap(stat, groups, n_bootstrap=n_bootstrap, seed=seed).to_dict()
            for name, stat in statistics.items()
        }
        arms[arm]["n_patients"] = len(rows)
        arms[arm]["n_called"] = int(called.sum())
        arms[arm]["abstained_by_truth"] = {
            str(label): int((~called[rows["truth"] == label]).sum())
            for label in sorted(rows["truth"].unique())
        }
    primary_rows, baseline_rows = tables[primary.name], tables[baseline.name]
    if list(primary_rows["patient"]) != list(baseline_rows["patient"]):
        raise DatasetError("The primary and baseline arms scored different patients.")
    primary_auc = _arm_statistics(primary_rows, positive, min_blasts)["auc_called"]
    baseline_auc = _arm_statistics(baseline_rows, positive, min_blasts)["auc_called"]
    delta, p_value = paired_cluster_bootstrap(
        primary_auc,
        baseline_auc,
        primary_rows["patient"].to_numpy(str),
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    comparison = {
        "primary": primary.name,
        "baseline": baseline.name,
        "delta_auc_called": delta.to_dict(),
        "p_value_one_sided": p_value,
        "verdict": (
            f"{primary.name} is better than {baseline.name} (95% interval of the AUC "
            "difference above 0)"
            if delta.low > 0
            else "not shown: the 95% interval of the AUC difference includes 0 or is below it"
        ),
    }
    min_table = []
    for minimum in sorted({*MIN_BLASTS_TABLE, min_blasts}):
        statistics = _arm_statistics(primary_rows, positive, minimum)
        everyone = np.arange(len(primary_rows))
        min_table.append(
            {
                "min_blasts": minimum,
                "abstention_rate": statistics["abstention_rate"](everyone),
                "abstained_positive": int(
                    (
                        (primary_rows["n_blasts"] < minimum) & (primary_rows["truth"] == positive)
                    ).sum()
                ),
                "auc_called": statistics["auc_called"](everyone),
                "auc_all": statistics["auc_all"](everyone),
                "sensitivity_at_90_specificity": statistics["sensitivity_at_90_specificity"](
                    everyone
                ),
            }
        )
    cell_level = {}
    for method, rows in cells.groupby("method"):
        truth = (rows["truth"] == positive).to_numpy()
        score = rows[f"p_{positive}"].to_numpy(np.float64)
        cell_level[method] = cluster_bootstrap(
            lambda i, s=score, t=truth: auc(s[i], t[i]),
            rows["patient"].to_numpy(str),
            n_bootstrap=n_bootstrap,
            seed=seed,
        ).to_dict()
    return {
        "classes": list(classes),
        "positive_class": positive,
        "arms": arms,
        "primary_comparison": comparison,
        "min_blasts_table": min_table,
        "cell_auc_against_inherited_labels": cell_level,
    }


def patient_level_metrics(
    probabilities: np.ndarray,
    slide_ids: np.ndarray,
    slide_truth: Mapping[str, str],
    classes: Sequence[str],
    *,
    positive: str | None = None,
    min_blasts: int = 1,
    threshold: float | None = None,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, Any]:
    """Patient-level scores of a binary call, pooled by the mean of the patients' blasts.

    ``probabilities`` (N, K) of the blasts, ``slide_ids`` (N,) their patients, ``slide_truth``
    patient -> class. Returns the patient AUC over the called patients (at least
    ``min_blasts`` blasts) and over every patient (abstentions at 0.5), the sensitivity at 90%
    specificity, with patient-bootstrap intervals, the abstentions, and at ``threshold`` (an
    operating point chosen elsewhere) the sensitivity and specificity.
    """
    positive = positive or classes[-1]
    patients = sorted(slide_truth)
    pooled = _pooled_scores(probabilities, np.asarray(slide_ids).astype(str), "mean", patients)
    table = pd.DataFrame(
        {
            "arm": "mean",
            "patient": patients,
            "truth": [slide_truth[p] for p in patients],
            "n_blasts": [int((np.asarray(slide_ids) == p).sum()) for p in patients],
            "operating_threshold": math.inf if threshold is None else threshold,
            **{f"p_{name}": pooled[:, k] for k, name in enumerate(classes)},
        }
    )
    statistics = _arm_statistics(table, positive, min_blasts)
    groups = table["patient"].to_numpy(str)
    names = ["auc_called", "auc_all", "sensitivity_at_90_specificity", "abstention_rate"]
    if threshold is not None:
        names += ["operating_point_sensitivity", "operating_point_specificity"]
    metrics: dict[str, Any] = {
        name: cluster_bootstrap(
            statistics[name], groups, n_bootstrap=n_bootstrap, seed=seed
        ).to_dict()
        for name in names
    }
    called = table["n_blasts"] >= max(min_blasts, 1)
    metrics.update(
        positive_class=positive,
        pooling="mean",
        min_blasts=min_blasts,
        operating_threshold=threshold,
        n_patients=len(table),
        n_called=int(called.sum()),
        abstained_by_truth={
            str(label): int((~called[table["truth"] == label]).sum())
            for label in sorted(table["truth"].unique())
        },
        patients=[
            {key: None if isinstance(v, float) and math.isnan(v) else v for key, v in row.items()}
            for row in table.drop(columns=["arm", "operating_threshold"]).to_dict("records")
        ],
    )
    return metrics


def operating_threshold(
    probabilities: np.ndarray,
    slide_ids: np.ndarray,
    slide_truth: Mapping[str, str],
    classes: Sequence[str],
    positive: str | None = None,
) -> float:
    """The patient-score threshold (mean pooling) with 90% specificity on these patients."""
    positive = positive or classes[-1]
    patients = sorted(slide_truth)
    pooled = _pooled_scores(probabilities, np.asarray(slide_ids).astype(str), "mean", patients)
    scores = pooled[:, list(classes).index(positive)]
    truth = np.array([slide_truth[p] == positive for p in patients])
    defined = np.isfinite(scores)
    return threshold_at_specificity(scores[defined], truth[defined], OPERATING_SPECIFICITY)


def shortcut_audit(
    cells: CellSet, patients: pd.DataFrame, arm: str, positive: str, min_blasts: int
) -> dict[str, Any]:
    """Properties of an export that differ between the classes without being disease, and
    whether the model's patient scores lean on them.

    Per patient: an extra folder level between the patient and "Signed slides", the images'
    median height and width, the number of unsigned crops and of signed cells. For each, the
    patient-level AUC of the property alone against the positive class (direction-free: 0.5 is
    chance, 1 a perfect shortcut). Then the arm's patient AUC within the patients that do not
    have the property, and whether any crop window reached past its image (the only way the
    image size could reach the network).
    """
    annotations = cells.annotations
    if annotations is None or "slide" not in annotations:
        raise DatasetError("The shortcut audit needs a CellaVision export's annotations.")
    per_patient = annotations.groupby("patient").agg(
        label=("label", "first"),
        extra_folder_level=("slide", lambda values: bool((values != "").any())),
        median_image_height=("image_height", "median"),
        median_image_width=("image_width", "median"),
        signed_cells=("cell_type", "size"),
    )
    unsigned = cells.source.get("unsigned_per_patient", {})
    per_patient["unsigned_crops"] = [unsigned.get(p, 0) for p in per_patient.index]
    rename = cells.source.get("label_names") or {}
    is_positive = per_patient["label"].map(lambda raw: rename.get(raw, raw) == positive)
    properties = {}
    for column in (
        "extra_folder_level",
        "median_image_height",
        "median_image_width",
        "unsigned_crops",
        "signed_cells",
    ):
        value = auc(per_patient[column].to_numpy(np.float64), is_positive.to_numpy())
        properties[column] = {
            "auc_alone": None if math.isnan(value) else max(value, 1.0 - value),
            "mean_in_positive": float(per_patient.loc[is_positive, column].mean()),
            "mean_in_others": float(per_patient.loc[~is_positive, column].mean()),
        }
    rows = patients[patients["arm"] == arm].set_index("patient")
    score = rows[f"p_{positive}"]
    called = (rows["n_blasts"] >= max(min_blasts, 1)) & score.notna()

    def subset_auc(keep: pd.Series) -> dict[str, Any]:
        chosen = called & keep.reindex(rows.index).fillna(False)
        truth = rows.loc[chosen, "truth"] == positive
        return {
            "patients": int(chosen.sum()),
            "positive": int(truth.sum()),
            "auc": auc(score[chosen].to_numpy(), truth.to_numpy()),
        }

    modal_height = per_patient["median_image_height"].mode().iloc[0]
    window_px = cells.window_um / float(cells.source.get("source_pixel_size_um") or math.nan)
    smallest_side = float(annotations[["image_height", "image_width"]].min().min())
    return {
        "properties": properties,
        "arm": arm,
        "auc_all_called": subset_auc(pd.Series(True, index=per_patient.index)),
        "auc_without_extra_folder_level": subset_auc(~per_patient["extra_folder_level"]),
        "auc_with_modal_image_height": subset_auc(
            per_patient["median_image_height"] == modal_height
        ),
        "crop_window_px_in_source": window_px,
        "smallest_image_side_px": smallest_side,
        "image_size_reaches_network": bool(window_px > smallest_side),
    }


def format_estimate(values: Mapping[str, Any], digits: int = 3) -> str:
    """An :meth:`Estimate.to_dict` record as ``0.912 [0.870, 0.948]``."""
    value, low, high = values.get("value"), values.get("low"), values.get("high")
    if value is None:
        return "n/a"
    if low is None or high is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
