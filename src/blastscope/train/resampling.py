"""Confidence intervals when cells cluster in patients, and operating points on ROC curves.

Cells of one patient are not independent: they share the patient's stain, scanner day and
disease. A percentile bootstrap that resamples *patients* with replacement (all cells of a drawn
patient come along) gives intervals that reflect how many patients there are, not how many
cells (:func:`cluster_bootstrap`). Comparing two methods on the same patients, the paired
version resamples the patients once for both (:func:`paired_cluster_bootstrap`), which is what
decides whether one is better. Five cross-validation fold numbers are not a confidence interval.

Resamples where the statistic is undefined (e.g. an AUC when the draw holds one class only) are
left out and counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from blastscope.train.evaluate import roc_curve

DEFAULT_N_BOOTSTRAP = 1000


@dataclass(frozen=True)
class Estimate:
    """A statistic on all the data and its 95% percentile interval over patient resamples."""

    value: float
    low: float
    high: float
    n_resamples: int
    n_undefined: int

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready, NaN as None."""
        return {
            key: None if isinstance(value, float) and math.isnan(value) else value
            for key, value in self.__dict__.items()
        }

    def format(self, digits: int = 3) -> str:
        """``0.912 [0.870, 0.948]``."""
        if math.isnan(self.value):
            return "n/a"
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _group_indices(groups: np.ndarray) -> list[np.ndarray]:
    _, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    return np.split(order, bounds)


def _resample_indices(members: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    drawn = rng.integers(0, len(members), size=len(members))
    return np.concatenate([members[k] for k in drawn])


def _estimate(
    statistic: Callable[[np.ndarray], float], groups: np.ndarray, n_bootstrap: int, seed: int
) -> tuple[Estimate, np.ndarray]:
    """The estimate and its defined resampled values."""
    members = _group_indices(groups)
    value = float(statistic(np.arange(len(groups))))
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(_resample_indices(members, rng)) for _ in range(n_bootstrap)])
    defined = draws[np.isfinite(draws)]
    low, high = (
        (float(np.percentile(defined, 2.5)), float(np.percentile(defined, 97.5)))
        if defined.size
        else (math.nan, math.nan)
    )
    return Estimate(value, low, high, n_bootstrap, int(n_bootstrap - defined.size)), defined


def cluster_bootstrap(
    statistic: Callable[[np.ndarray], float],
    groups: np.ndarray,
    *,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    seed: int = 0,
) -> Estimate:
    """``statistic(index)`` on all rows and its 95% interval over resamples of ``groups``.

    ``statistic`` takes an integer index array into the rows (with repeats) and returns a float
    (NaN where undefined); ``groups`` (N,) names each row's patient.
    """
    return _estimate(statistic, groups, n_bootstrap, seed)[0]


def paired_cluster_bootstrap(
    statistic_a: Callable[[np.ndarray], float],
    statistic_b: Callable[[np.ndarray], float],
    groups: np.ndarray,
    *,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    seed: int = 0,
) -> tuple[Estimate, float]:
    """The difference a - b with its 95% interval, the same patients drawn for both; and the
    share of resamples in which a - b <= 0 (a one-sided bootstrap p-value for "a is better")."""
    estimate, deltas = _estimate(
        lambda index: statistic_a(index) - statistic_b(index), groups, n_bootstrap, seed
    )
    return estimate, float((deltas <= 0).mean()) if deltas.size else math.nan


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC (NaN with one class)."""
    return roc_curve(scores, positive)[2]


def sensitivity_at_specificity(
    scores: np.ndarray, positive: np.ndarray, specificity: float = 0.9
) -> float:
    """The highest sensitivity of any threshold whose specificity is at least ``specificity``."""
    fpr, tpr, _ = roc_curve(scores, positive)
    if not (np.any(positive) and np.any(~np.asarray(positive, dtype=bool))):
        return math.nan
    allowed = fpr <= 1.0 - specificity + 1e-12
    return float(tpr[allowed].max())


def threshold_at_specificity(
    scores: np.ndarray, positive: np.ndarray, specificity: float = 0.9
) -> float:
    """The lowest threshold (call positive at ``score >= t``) with at least ``specificity`` on
    the negatives given; +inf when there are no negatives."""
    negatives = np.sort(np.asarray(scores, dtype=np.float64)[~np.asarray(positive, dtype=bool)])
    if negatives.size == 0:
        return math.inf
    allowed_false = math.floor((1.0 - specificity) * negatives.size + 1e-9)
    # calling t = the (allowed_false+1)-th highest negative score's next value up
    cut = negatives[negatives.size - allowed_false - 1]
    return float(np.nextafter(cut, math.inf))


def balanced_threshold(scores: np.ndarray, positive: np.ndarray) -> float:
    """The threshold that maximises balanced accuracy (Youden's J) on the scores given."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return 0.5
    candidates = np.unique(scores)
    order = np.sort(scores[positive])
    negatives = np.sort(scores[~positive])
    tpr = 1.0 - np.searchsorted(order, candidates, side="left") / order.size
    tnr = np.searchsorted(negatives, candidates, side="left") / negatives.size
    best = int(np.argmax(tpr + tnr))
    return float(candidates[best])
