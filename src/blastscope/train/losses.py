"""Classification losses that tolerate label noise, written out in torch.

Every loss maps ``logits`` (N, C) and integer ``targets`` (N,) to a per-sample loss (N,); the
training loop takes the mean (or, for sample selection, ranks the per-sample values first).

- ``ce``: cross-entropy, the baseline.
- ``smoothing``: cross-entropy against ``(1 - epsilon) * one_hot + epsilon / C``.
- ``gce``: generalised cross-entropy (Zhang & Sabuncu 2018), ``(1 - p_y ** q) / q``; q -> 0 is
  cross-entropy, q = 1 the (noise-tolerant) mean absolute error.
- ``sce``: symmetric cross-entropy (Wang et al. 2019), ``alpha * CE + beta * RCE`` where the
  reverse cross-entropy ``-sum_k p_k log y_k`` needs ``log 0``, clamped to ``log_zero`` (the paper's
  A = -4), so that ``RCE = -log_zero * (1 - p_y)``.
- ``bootstrap-soft`` / ``bootstrap-hard``: bootstrapping (Reed et al. 2015): cross-entropy against
  ``beta * one_hot + (1 - beta) * prediction``, the prediction being the probabilities (soft) or
  the one-hot of the arg-max (hard). The prediction in the target is detached: it is a target, not
  a path for gradients.

Co-teaching (two networks exchanging small-loss samples) is a training method rather than a loss;
it lives in :mod:`blastscope.train.selection` and uses ``ce`` per sample.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Method name -> its parameters and their defaults (those of the papers where they give one).
LOSS_DEFAULTS: dict[str, dict[str, float]] = {
    "ce": {},
    "smoothing": {"epsilon": 0.1},
    "gce": {"q": 0.7},
    "sce": {"alpha": 0.1, "beta": 1.0, "log_zero": -4.0},
    "bootstrap-soft": {"beta": 0.95},
    "bootstrap-hard": {"beta": 0.8},
}
SELECTION_METHODS = ("coteaching",)
METHODS = (*LOSS_DEFAULTS, *SELECTION_METHODS)


def _check(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, C), got shape {tuple(logits.shape)}.")
    if targets.shape != logits.shape[:1]:
        raise ValueError(
            f"targets must be ({logits.shape[0]},) class indices, got {tuple(targets.shape)}."
        )


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy ``-log p_y`` (N,)."""
    _check(logits, targets)
    log_p = torch.log_softmax(logits, dim=1)
    return -log_p.gather(1, targets[:, None]).squeeze(1)


def label_smoothing(
    logits: torch.Tensor, targets: torch.Tensor, epsilon: float = 0.1
) -> torch.Tensor:
    """Cross-entropy against the smoothed target ``(1 - epsilon) one_hot + epsilon / C`` (N,)."""
    _check(logits, targets)
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"Label smoothing epsilon must be in [0, 1), got {epsilon}.")
    n_classes = logits.shape[1]
    log_p = torch.log_softmax(logits, dim=1)
    target = F.one_hot(targets, n_classes).to(log_p.dtype) * (1.0 - epsilon) + epsilon / n_classes
    return -(target * log_p).sum(dim=1)


def generalized_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, q: float = 0.7
) -> torch.Tensor:
    """Generalised cross-entropy ``(1 - p_y ** q) / q`` (N,), for q in (0, 1]."""
    _check(logits, targets)
    if not 0.0 < q <= 1.0:
        raise ValueError(f"GCE q must be in (0, 1], got {q}; q -> 0 is plain cross-entropy.")
    p_y = torch.softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)
    return (1.0 - p_y.clamp_min(1e-12) ** q) / q


def symmetric_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.1,
    beta: float = 1.0,
    log_zero: float = -4.0,
) -> torch.Tensor:
    """Symmetric cross-entropy ``alpha * CE + beta * RCE`` (N,), ``log 0`` clamped to ``log_zero``.

    The reverse term ``-sum_k p_k log one_hot_k`` equals ``-log_zero * (1 - p_y)``.
    """
    _check(logits, targets)
    if log_zero >= 0.0:
        raise ValueError(f"log_zero stands for log(0) and must be negative, got {log_zero}.")
    ce = cross_entropy(logits, targets)
    p_y = torch.softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)
    reverse = -log_zero * (1.0 - p_y)
    return alpha * ce + beta * reverse


def bootstrapping(
    logits: torch.Tensor, targets: torch.Tensor, beta: float = 0.95, hard: bool = False
) -> torch.Tensor:
    """Bootstrapping loss: cross-entropy against ``beta * one_hot + (1 - beta) * prediction`` (N,).

    ``hard=False`` uses the (detached) probabilities, ``hard=True`` the one-hot of their arg-max.
    """
    _check(logits, targets)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"Bootstrapping beta must be in [0, 1], got {beta}.")
    n_classes = logits.shape[1]
    log_p = torch.log_softmax(logits, dim=1)
    p = log_p.detach().exp()
    prediction = F.one_hot(p.argmax(dim=1), n_classes).to(p.dtype) if hard else p
    target = beta * F.one_hot(targets, n_classes).to(p.dtype) + (1.0 - beta) * prediction
    return -(target * log_p).sum(dim=1)


def loss_parameters(name: str, params: dict[str, float] | None = None) -> dict[str, float]:
    """The parameters of loss ``name``: its defaults updated by ``params`` (checked)."""
    if name not in LOSS_DEFAULTS:
        raise ValueError(
            f"Unknown loss {name!r}: choose one of {', '.join(LOSS_DEFAULTS)} "
            f"(or the training method {', '.join(SELECTION_METHODS)})."
        )
    params = params or {}
    unknown = set(params) - set(LOSS_DEFAULTS[name])
    if unknown:
        allowed = ", ".join(LOSS_DEFAULTS[name]) or "none"
        raise ValueError(
            f"Loss {name!r} takes no parameter {', '.join(sorted(unknown))} (it takes: {allowed})."
        )
    return {**LOSS_DEFAULTS[name], **{key: float(value) for key, value in params.items()}}


def make_loss(name: str, **params: float) -> LossFunction:
    """The per-sample loss function called ``name`` with its parameters bound.

    Names: ``ce``, ``smoothing`` (epsilon), ``gce`` (q), ``sce`` (alpha, beta, log_zero),
    ``bootstrap-soft`` (beta), ``bootstrap-hard`` (beta).
    """
    bound = loss_parameters(name, params)
    if name == "ce":
        return cross_entropy
    if name == "smoothing":
        return lambda logits, targets: label_smoothing(logits, targets, bound["epsilon"])
    if name == "gce":
        return lambda logits, targets: generalized_cross_entropy(logits, targets, bound["q"])
    if name == "sce":
        return lambda logits, targets: symmetric_cross_entropy(
            logits, targets, bound["alpha"], bound["beta"], bound["log_zero"]
        )
    hard = name == "bootstrap-hard"
    return lambda logits, targets: bootstrapping(logits, targets, bound["beta"], hard=hard)
