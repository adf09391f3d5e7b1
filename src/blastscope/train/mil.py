"""Training attention-based MIL pooling on bags of cell embeddings (patients and their labels).

:func:`train_attention_mil` fits :class:`blastscope.models.mil.AttentionMIL` on training bags
with class-balanced cross-entropy (AdamW, one bag a step), keeps the epoch with the lowest
validation-bag loss (ties: the earlier epoch) and returns the model in eval mode;
:func:`bag_probabilities` scores bags. Bags are (n_cells, features) float arrays; an empty bag
cannot be scored (the caller abstains instead).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from blastscope.models.mil import AttentionMIL
from blastscope.train.loop import TrainingError


def _class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def _bag_loss(
    model: AttentionMIL, bags: Sequence[np.ndarray], labels: np.ndarray, weights: torch.Tensor
) -> float:
    model.eval()
    with torch.inference_mode():
        logits = torch.stack([model(torch.from_numpy(bag).float())[0] for bag in bags])
        loss = F.cross_entropy(logits, torch.from_numpy(labels), weight=weights)
    return float(loss)


def train_attention_mil(
    train_bags: Sequence[np.ndarray],
    train_labels: np.ndarray,
    val_bags: Sequence[np.ndarray],
    val_labels: np.ndarray,
    n_classes: int,
    *,
    epochs: int = 60,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-2,
    hidden: int = 64,
    seed: int = 0,
) -> tuple[AttentionMIL, list[dict[str, float]]]:
    """The attention pooling fitted on ``train_bags``, chosen on ``val_bags``; and its history.

    Bags are float arrays (n_i, F) with n_i >= 1; labels (B,) are class indices.
    """
    train_labels = np.asarray(train_labels, dtype=np.int64)
    val_labels = np.asarray(val_labels, dtype=np.int64)
    if not train_bags or not val_bags:
        raise TrainingError("Attention pooling needs training and validation bags; give more.")
    if any(len(bag) == 0 for bag in [*train_bags, *val_bags]):
        raise TrainingError("Every bag needs at least one cell; leave empty bags out.")
    if np.unique(train_labels).size < 2:
        raise TrainingError("The training bags hold one class only; attention pooling needs two.")
    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)
    stacked = np.concatenate(train_bags).astype(np.float32)
    model = AttentionMIL(stacked.shape[1], n_classes, hidden=hidden)
    model.mean.copy_(torch.from_numpy(stacked.mean(axis=0)))
    model.std.copy_(torch.from_numpy(stacked.std(axis=0).clip(1e-3, None)))
    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    weights = _class_weights(train_labels, n_classes)
    tensors = [torch.from_numpy(bag).float() for bag in train_bags]
    targets = torch.from_numpy(train_labels)
    best_loss, best_state, history = float("inf"), None, []
    for epoch in range(epochs):
        model.train()
        total = 0.0
        for index in generator.permutation(len(tensors)):
            logits, _ = model(tensors[index])
            loss = F.cross_entropy(logits[None], targets[index : index + 1], weight=weights)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach())
        val_loss = _bag_loss(model, val_bags, val_labels, weights)
        history.append({"epoch": epoch, "train_loss": total / len(tensors), "val_loss": val_loss})
        if val_loss < best_loss:
            best_loss, best_state = val_loss, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    return model, history


def bag_probabilities(model: AttentionMIL, bags: Sequence[np.ndarray]) -> np.ndarray:
    """Class probabilities (B, K) of non-empty bags."""
    model.eval()
    with torch.inference_mode():
        return np.stack(
            [torch.softmax(model(torch.from_numpy(bag).float())[0], dim=0).numpy() for bag in bags]
        ).astype(np.float64)
