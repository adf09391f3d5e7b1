"""Network architectures for the cell classifiers, built from a name and its arguments.

A bundle records ``architecture = {"name": ..., "args": {...}}``; :func:`build_network` turns that
back into a ``torch.nn.Module``. Every network takes float crops (N, 3, h, w) (normalised per
channel) of any size from about 32 px up and returns logits (N, num_classes). Nothing is
downloaded: every network is trained from scratch.

``blastnet``: a compact residual CNN. A 3×3 stem convolution (stride 2), then one stage per entry
of ``widths``, each of ``blocks_per_stage`` residual blocks (two 3×3 convolutions with BatchNorm and
ReLU; the first block of every stage after the first halves the resolution), global average
pooling, dropout and a linear layer. The defaults (widths 16-32-64-128, one block per stage,
about 0.31 M parameters) suit 48-64 px crops; they classified ~4,000 cells/s at 48 px (batch 128)
on this project's 2-core CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from blastscope.errors import BlastscopeError


class ArchitectureError(BlastscopeError):
    """An architecture description that cannot be built; the message says what to change."""


class ResidualBlock(nn.Module):
    """Two 3×3 convolutions with BatchNorm and a (projected when needed) identity shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class BlastNet(nn.Module):
    """Compact residual CNN: crops (N, 3, h, w) -> logits (N, num_classes)."""

    def __init__(
        self,
        num_classes: int = 2,
        widths: Sequence[int] = (16, 32, 64, 128),
        blocks_per_stage: int = 1,
        dropout: float = 0.2,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages = []
        channels = widths[0]
        for index, width in enumerate(widths):
            blocks = []
            for block in range(blocks_per_stage):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(ResidualBlock(channels, width, stride))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels, num_classes)
        self.num_classes = num_classes

    @property
    def feature_width(self) -> int:
        """Length of the per-crop embedding :meth:`features` returns."""
        return self.head.in_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled embedding (N, feature_width) the linear head classifies."""
        return self.pool(self.stages(self.stem(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def _check_blastnet_args(args: dict[str, Any]) -> None:
    num_classes = args.get("num_classes", 2)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ArchitectureError(f"blastnet needs num_classes >= 2 (an int), got {num_classes!r}.")
    widths = args.get("widths", (16, 32, 64, 128))
    if (
        not isinstance(widths, (list, tuple))
        or not widths
        or not all(isinstance(w, int) and w > 0 for w in widths)
    ):
        raise ArchitectureError(
            f"blastnet widths must be a non-empty list of positive ints, got {widths!r}."
        )
    blocks = args.get("blocks_per_stage", 1)
    if not isinstance(blocks, int) or blocks < 1:
        raise ArchitectureError(f"blastnet blocks_per_stage must be an int >= 1, got {blocks!r}.")
    dropout = args.get("dropout", 0.2)
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ArchitectureError(f"blastnet dropout must be in [0, 1), got {dropout!r}.")


# name -> (constructor, argument check)
ARCHITECTURES: dict[str, tuple[Callable[..., nn.Module], Callable[[dict[str, Any]], None]]] = {
    "blastnet": (BlastNet, _check_blastnet_args),
}


def default_architecture(num_classes: int) -> dict[str, Any]:
    """The default architecture description for ``num_classes`` outputs."""
    return {
        "name": "blastnet",
        "args": {
            "num_classes": num_classes,
            "widths": [16, 32, 64, 128],
            "blocks_per_stage": 1,
            "dropout": 0.2,
        },
    }


def build_network(architecture: dict[str, Any]) -> nn.Module:
    """Build the network that ``{"name": ..., "args": {...}}`` describes (fresh weights).

    Raises :class:`ArchitectureError` for an unknown name or arguments the network does not take.
    """
    if not isinstance(architecture, dict) or "name" not in architecture:
        raise ArchitectureError(
            f"An architecture is a dict {{'name': ..., 'args': {{...}}}}, got {architecture!r}."
        )
    name = architecture["name"]
    if name not in ARCHITECTURES:
        raise ArchitectureError(
            f"Unknown architecture {name!r}: this blastscope knows {', '.join(ARCHITECTURES)}. "
            "Update blastscope or retrain the bundle with a known architecture."
        )
    args = architecture.get("args", {}) or {}
    if not isinstance(args, dict):
        raise ArchitectureError(f"Architecture args must be a dict, got {args!r}.")
    constructor, check = ARCHITECTURES[name]
    check(args)
    try:
        return constructor(**args)
    except TypeError as error:
        raise ArchitectureError(
            f"Architecture {name!r} does not take these arguments ({error}); see "
            "blastscope.models.architectures for the arguments it takes."
        ) from error


def count_parameters(network: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in network.parameters() if p.requires_grad)
