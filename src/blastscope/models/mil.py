"""Attention-based multiple-instance pooling: a bag of cell embeddings -> one bag prediction.

Gated attention (Ilse, Tomczak & Welling 2018, "Attention-based deep multiple instance
learning"): each cell's embedding ``h_i`` is projected (``z_i = ReLU(W h_i)``), scored
``a_i = w^T (tanh(V z_i) * sigmoid(U z_i))``, the scores are a softmax over the bag's cells,
and the bag is the attention-weighted mean ``sum_i softmax(a)_i z_i``, classified by a linear
layer. The weights say which cells the call rests on (shown in a gallery for review).

It is trained on bags (a patient's cells and the patient's label) by
:func:`blastscope.train.mil.train_attention_mil`, on top of a trained cell classifier's
embeddings (:meth:`blastscope.models.architectures.BlastNet.features`).
"""

from __future__ import annotations

import torch
from torch import nn


class AttentionMIL(nn.Module):
    """Gated attention pooling over a bag (n, in_features) -> logits (num_classes,), weights (n,).

    ``mean`` / ``std`` (in_features,) standardise the embeddings (set from the training cells).
    """

    def __init__(
        self, in_features: int, num_classes: int, hidden: int = 64, dropout: float = 0.25
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("std", torch.ones(in_features))
        self.project = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)
        )
        self.attention_tanh = nn.Linear(hidden, hidden)
        self.attention_gate = nn.Linear(hidden, hidden)
        self.attention_score = nn.Linear(hidden, 1)
        self.classifier = nn.Linear(hidden, num_classes)
        self.num_classes = num_classes

    def attention(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected cells (n, hidden) and their attention weights (n,), summing to 1."""
        projected = self.project((embeddings - self.mean) / self.std)
        gated = torch.tanh(self.attention_tanh(projected)) * torch.sigmoid(
            self.attention_gate(projected)
        )
        weights = torch.softmax(self.attention_score(gated).squeeze(-1), dim=0)
        return projected, weights

    def forward(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        projected, weights = self.attention(embeddings)
        return self.classifier(weights @ projected), weights
