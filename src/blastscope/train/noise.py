"""Injected label noise for experiments: symmetric and class-dependent (pair) flips, seeded.

``symmetric``: a flipped label moves to one of the *other* classes, uniformly.
``pair`` (class-dependent, asymmetric): a flipped label of class k moves to class (k + 1) mod C,
the usual model of confusions between neighbouring classes.

Within each class exactly ``round(rate * n_k)`` labels are flipped (chosen at random), so the
realised rate equals the asked one up to rounding; :class:`NoisyLabels` reports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NOISE_KINDS = ("symmetric", "pair")


@dataclass(frozen=True)
class NoisyLabels:
    """Labels after noise injection: ``labels`` (N,) int64 and which of them were ``flipped``."""

    labels: np.ndarray
    flipped: np.ndarray
    kind: str
    rate: float

    @property
    def realised_rate(self) -> float:
        """The share of labels that differ from the originals."""
        return float(self.flipped.mean()) if self.flipped.size else 0.0

    def describe(self) -> dict[str, float | str | int]:
        """A JSON-ready summary: kind, asked rate, realised rate, count flipped."""
        return {
            "kind": self.kind,
            "rate": self.rate,
            "realised_rate": round(self.realised_rate, 6),
            "n_flipped": int(self.flipped.sum()),
            "n_labels": int(self.flipped.size),
        }


def transition_matrix(kind: str, rate: float, n_classes: int) -> np.ndarray:
    """The (C, C) matrix ``T[i, j] = P(noisy = j | true = i)`` of a noise model."""
    _check_noise(kind, rate, n_classes)
    matrix = np.eye(n_classes) * (1.0 - rate)
    if kind == "symmetric":
        matrix += (1.0 - np.eye(n_classes)) * rate / (n_classes - 1)
    else:
        for k in range(n_classes):
            matrix[k, (k + 1) % n_classes] += rate
    return matrix


def _check_noise(kind: str, rate: float, n_classes: int) -> None:
    if kind not in NOISE_KINDS:
        raise ValueError(f"Unknown noise kind {kind!r}: choose one of {', '.join(NOISE_KINDS)}.")
    if n_classes < 2:
        raise ValueError(f"Label noise needs at least 2 classes, got {n_classes}.")
    limit = (n_classes - 1) / n_classes if kind == "symmetric" else 0.5
    if not 0.0 <= rate < limit:
        raise ValueError(
            f"{kind} noise rate {rate} is outside [0, {limit:.3g}): at or above {limit:.3g} the "
            "noisy labels no longer point to the true class. Give a smaller rate."
        )


def inject_label_noise(
    labels: np.ndarray, n_classes: int, rate: float, kind: str = "symmetric", seed: int = 0
) -> NoisyLabels:
    """Flip ``round(rate * n_k)`` labels of each class k, following ``kind``; seeded."""
    _check_noise(kind, rate, n_classes)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"Labels must be class indices in [0, {n_classes}); got values from "
            f"{labels.min()} to {labels.max()}."
        )
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    for k in range(n_classes):
        members = np.flatnonzero(labels == k)
        n_flip = round(rate * members.size)
        if n_flip == 0:
            continue
        chosen = rng.choice(members, size=n_flip, replace=False)
        if kind == "symmetric":
            # One of the other C - 1 classes, uniformly: skip over k.
            others = rng.integers(0, n_classes - 1, size=n_flip)
            noisy[chosen] = others + (others >= k)
        else:
            noisy[chosen] = (k + 1) % n_classes
    return NoisyLabels(noisy, noisy != labels, kind, float(rate))
