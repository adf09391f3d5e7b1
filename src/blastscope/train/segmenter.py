"""``blastscope train segmenter``: the shipped smear segmenter, trained from scratch.

The network is a small Cellpose 3 ``CPnet`` (widths ``[3, 8, 16, 32, 64]``, 0.42 M parameters,
1.7 MB) trained from scratch on

- synthetic fields of the presets ``default`` and ``blood`` with their exact labels
  (:mod:`blastscope.synthetic`), and
- the real BCCD **train** split (never val) with masks derived from its boxes
  (:mod:`blastscope.train.bccd_masks`), where clumps of red cells get a low loss weight.

Every image is first resampled to the network's pixel size (``--net-pixel-size``, 0.3 µm), so
the network learns cells at their physical size; the bundle records that pixel size and the
median cell diameter there, and :mod:`blastscope.segment` resizes any image by its own pixel
size. Each sample is augmented: stain (the optical density of each channel scaled per dye and
mixed across channels, the background colour shifted), blur, camera noise, then Cellpose's
random rotation, flip and scale (``--scale-range``, 0.5 = x0.75-1.25) and a 128-px crop
(``--crop``; a BCCD field is 171 x 128 px at 0.3 µm). Optimiser: AdamW, learning rate 0.008
after a linear warm-up, cosine decay to 5%, 30 epochs of all images (about 1,070 steps of 8).

The loss is Cellpose's (flow MSE on 5x the flows / 2 + cell-probability BCE) with a per-pixel
weight. Cellpose 3's ``train_seg`` takes neither per-pixel weights nor colour augmentation and
``CellposeModel`` hard-codes the net's widths, so the loop is ours; it reuses Cellpose's flow
targets (``dynamics.labels_to_flows``) and geometric augmentation
(``transforms.random_rotate_and_resize``).

Reproduce the shipped model (about 1 hour on 2 otherwise idle CPU cores)::

    nice -n 10 blastscope train segmenter --out src/blastscope/models/shipped/smear-cellpose \\
        --overwrite

A tiny run for tests: ``--epochs 1 --bccd-fields 4 --synthetic-fields 2 --val-fields 0``.

This module is the command, the run and the bundle's metadata; the training images are built by
:mod:`blastscope.train.segmenter_data`, the network is fitted by
:mod:`blastscope.train.segmenter_fit` (augmentation, loss, loop) and scored by
:mod:`blastscope.train.segmenter_eval`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from blastscope.devices import resolve_device
from blastscope.models.bundle import save_bundle
from blastscope.progress import Progress, progress_bars, run_steps
from blastscope.samples import BCCD_PIXEL_SIZE_UM
from blastscope.segment import ARCHITECTURE_NAME
from blastscope.train.bccd_masks import bccd_root
from blastscope.train.provenance import git_commit
from blastscope.train.segmenter_data import (
    SYNTHETIC_PRESETS,
    TrainingImage,
    flow_targets,
    median_diameter,
    training_images,
)
from blastscope.train.segmenter_eval import evaluate_segmenter
from blastscope.train.segmenter_fit import NORMALIZE_PERCENTILES, new_net, train_network


@dataclass
class SegmenterTrainingConfig:
    """Settings of one training run (see ``blastscope train segmenter --help``)."""

    out: Path
    name: str = "smear-cellpose"
    bccd: Path | None = None
    bccd_list: Path | None = None
    bccd_fields: int | None = None
    synthetic_fields: int = 40
    synthetic_size_px: int = 512
    epochs: int = 30
    batch_size: int = 8
    learning_rate: float = 0.008
    weight_decay: float = 1e-5
    widths: tuple[int, ...] = (3, 8, 16, 32, 64)
    net_pixel_size_um: float = 0.3
    crop_px: int = 128
    scale_range: float = 0.5
    seed: int = 0
    device: str = "auto"
    val_fields: int | None = None
    synthetic_eval_fields: int = 8
    overwrite: bool = False
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``blastscope train segmenter``."""
    defaults = SegmenterTrainingConfig(out=Path("."))
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    parser.add_argument("--name", default=defaults.name, help="bundle name")
    parser.add_argument(
        "--bccd", type=Path, default=None, help="BCCD folder (default ../shared/data/bccd_smear)"
    )
    parser.add_argument(
        "--bccd-list",
        type=Path,
        default=None,
        help="file listing the BCCD field ids to train on (default the folder's splits/train.txt)",
    )
    parser.add_argument(
        "--bccd-fields", type=int, default=None, help="use the first N of those fields"
    )
    parser.add_argument(
        "--synthetic-fields",
        type=int,
        default=defaults.synthetic_fields,
        help="synthetic training fields per preset (default and blood)",
    )
    parser.add_argument("--synthetic-size", type=int, default=defaults.synthetic_size_px)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument(
        "--widths",
        default=",".join(str(w) for w in defaults.widths),
        help="CPnet widths, input channels first (default 3,16,32,64,128)",
    )
    parser.add_argument(
        "--net-pixel-size",
        type=float,
        default=defaults.net_pixel_size_um,
        help="µm per pixel the network works at",
    )
    parser.add_argument(
        "--crop", type=int, default=defaults.crop_px, help="training crop side (pixels)"
    )
    parser.add_argument("--scale-range", type=float, default=defaults.scale_range)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument(
        "--val-fields",
        type=int,
        default=None,
        help="BCCD val fields to evaluate on (default all 87; 0 skips)",
    )
    parser.add_argument("--synthetic-eval-fields", type=int, default=defaults.synthetic_eval_fields)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle")


def run(args: argparse.Namespace) -> int:
    """Train, evaluate and save the segmenter bundle; prints where it went."""
    config = SegmenterTrainingConfig(
        out=args.out,
        name=args.name,
        bccd=args.bccd,
        bccd_list=args.bccd_list,
        bccd_fields=args.bccd_fields,
        synthetic_fields=args.synthetic_fields,
        synthetic_size_px=args.synthetic_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        widths=tuple(int(w) for w in str(args.widths).split(",")),
        net_pixel_size_um=args.net_pixel_size,
        crop_px=args.crop,
        scale_range=args.scale_range,
        seed=args.seed,
        device=args.device,
        val_fields=args.val_fields,
        synthetic_eval_fields=args.synthetic_eval_fields,
        overwrite=args.overwrite,
        command=getattr(args, "command_line", shlex.join(["blastscope", *sys.argv[1:]])),
    )
    path = run_steps(train_segmenter_steps(config), progress_bars())
    print(f"wrote the segmenter bundle to {path}")
    return 0


def train_segmenter_steps(config: SegmenterTrainingConfig) -> Generator[Progress, None, Path]:
    """Build the data, train, evaluate and save; yields progress, returns the bundle path."""
    if config.widths[0] != 3 or len(config.widths) < 3:
        raise ValueError(
            f"--widths must start with 3 (RGB input) and have at least 3 entries, got "
            f"{list(config.widths)}; the shipped model uses 3,8,16,32,64."
        )
    if config.epochs < 1 or config.batch_size < 1:
        raise ValueError("--epochs and --batch-size must be at least 1.")
    if (Path(config.out) / "bundle.json").exists() and not config.overwrite:
        raise FileExistsError(
            f"A bundle already exists at {config.out}; pass --overwrite to replace it."
        )
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    started = time.time()
    commit = git_commit()
    images = yield from training_images(config)
    diam_labels = float(np.median([median_diameter(item.labels) for item in images]))
    diam_mean = float(round(diam_labels))
    net = new_net(config.widths, diam_mean, diam_labels)
    net = net.to(device, memory_format=torch.channels_last)
    targets = flow_targets(images, device)
    losses = yield from train_network(net, images, targets, config, device)
    training_minutes = (time.time() - started) / 60
    metadata = _metadata(
        config, images, net, diam_mean, diam_labels, losses, training_minutes, commit
    )
    path = save_bundle(config.out, net.state_dict(), metadata, overwrite=config.overwrite)
    metrics = yield from evaluate_segmenter(path, config)
    metadata["metrics"] = metrics
    return save_bundle(config.out, net.state_dict(), metadata, overwrite=True)


def _metadata(
    config: SegmenterTrainingConfig,
    images: list[TrainingImage],
    net: torch.nn.Module,
    diam_mean: float,
    diam_labels: float,
    losses: list[float],
    minutes: float,
    commit: str | None,
) -> dict[str, Any]:
    sources = pd.Series([item.source.split(":")[0] for item in images]).value_counts()
    settings = asdict(config)
    settings["out"] = str(settings["out"])
    settings["bccd"] = str(bccd_root(config.bccd))
    settings["bccd_list"] = None if config.bccd_list is None else str(config.bccd_list)
    return {
        "kind": "segmenter",
        "name": config.name,
        "demo": True,
        "description": "Small Cellpose 3 network for Romanowsky-stained blood and marrow "
        "smears: segments every cell (red cells, white cells, blasts, platelets). "
        "Demonstration model, not for diagnosis.",
        "architecture": {
            "name": ARCHITECTURE_NAME,
            "widths": list(config.widths),
            "nout": 3,
            "kernel_size": 3,
            "parameters": int(sum(p.numel() for p in net.parameters())),
            "diam_mean": diam_mean,
            "diam_labels": diam_labels,
            "net_pixel_size_um": config.net_pixel_size_um,
            "diameter_um": diam_mean * config.net_pixel_size_um,
            "default_pixel_size_um": BCCD_PIXEL_SIZE_UM,
        },
        "normalisation": {
            "percentiles": list(NORMALIZE_PERCENTILES),
            "per": "channel, over the whole image",
        },
        "training": {
            "command": config.command,
            "git_commit": commit,
            "seed": config.seed,
            "settings": settings,
            "data": {
                "bccd_train_fields": int(sources.get("bccd", 0)),
                "bccd_split": (
                    "train (splits/train.txt); val never used for training"
                    if config.bccd_list is None
                    else f"the fields listed in {config.bccd_list}"
                ),
                "bccd_masks": "derived from the boxes (blastscope.train.bccd_masks)",
                "bccd_pixel_size_um": BCCD_PIXEL_SIZE_UM,
                "synthetic_fields": int(sources.get("synthetic", 0)),
                "synthetic_presets": list(SYNTHETIC_PRESETS),
                "synthetic_size_px": config.synthetic_size_px,
            },
            "augmentation": "stain (OD scale per channel and overall, channel mixing), "
            "background colour, blur, noise, rotation, flip, scale x"
            f"{1 - config.scale_range / 2:.2f}-{1 + config.scale_range / 2:.2f}, "
            f"{config.crop_px}-px crops",
            "loss": "Cellpose flow MSE + cell BCE, per-pixel weights (red-cell clumps "
            "down-weighted on BCCD)",
            "epoch_losses": [round(value, 4) for value in losses],
            "minutes": round(minutes, 1),
        },
    }
