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
"""

from __future__ import annotations

import argparse
import math
import shlex
import subprocess
import sys
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from blastscope.devices import resolve_device
from blastscope.models.bundle import save_bundle
from blastscope.progress import Progress, run_steps
from blastscope.samples import BCCD_PIXEL_SIZE_UM
from blastscope.segment import (
    ARCHITECTURE_NAME,
    SegmentationParams,
    normalize_channels,
    segment,
)
from blastscope.train.bccd_masks import (
    bccd_root,
    derive_masks,
    read_fields,
    read_split,
)
from blastscope.train.boxes import wbc_box_matches, wbc_recall_summary

SYNTHETIC_PRESETS = ("default", "blood")
SYNTHETIC_EVAL_SEED = 1_000_000
"""Held-out synthetic fields use seeds from here on; training uses seeds below it."""

NORMALIZE_PERCENTILES = (1.0, 99.0)


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


@dataclass
class TrainingImage:
    """One training image at the network's pixel size: (Y, X, 3) uint8, labels, loss weight."""

    source: str
    image: np.ndarray
    labels: np.ndarray
    weight: np.ndarray


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
    from blastscope.cli import progress_bars

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
    commit = _git_commit()
    images = yield from _training_images(config)
    diam_labels = float(np.median([_median_diameter(item.labels) for item in images]))
    diam_mean = float(round(diam_labels))
    net = _new_net(config.widths, diam_mean, diam_labels)
    net = net.to(device, memory_format=torch.channels_last)
    targets = _flow_targets(images, device)
    losses = yield from _train(net, images, targets, config, device)
    training_minutes = (time.time() - started) / 60
    metadata = _metadata(
        config, images, net, diam_mean, diam_labels, losses, training_minutes, commit
    )
    path = save_bundle(config.out, net.state_dict(), metadata, overwrite=config.overwrite)
    metrics = yield from _evaluate(path, config)
    metadata["metrics"] = metrics
    return save_bundle(config.out, net.state_dict(), metadata, overwrite=True)


def _training_images(
    config: SegmenterTrainingConfig,
) -> Generator[Progress, None, list[TrainingImage]]:
    from blastscope.synthetic import generate_field

    root = bccd_root(config.bccd)
    if config.bccd_list is not None:
        field_ids = Path(config.bccd_list).read_text(encoding="utf-8").split()
    else:
        field_ids = read_split(root, "train")
    if config.bccd_fields is not None:
        field_ids = field_ids[: config.bccd_fields]
    total = len(field_ids) + config.synthetic_fields * len(SYNTHETIC_PRESETS)
    images: list[TrainingImage] = []
    done = 0
    for bccd_field in read_fields(root, field_ids):
        labels, weight = derive_masks(bccd_field.image, bccd_field.boxes)
        factor = BCCD_PIXEL_SIZE_UM / config.net_pixel_size_um
        images.append(
            TrainingImage(
                f"bccd:{bccd_field.field_id}",
                _resize_image(bccd_field.image, factor),
                _resize_nearest(labels, factor),
                _resize_image(weight, factor),
            )
        )
        done += 1
        yield Progress("data", done, total, bccd_field.field_id)
    side = config.synthetic_size_px
    for preset_index, preset in enumerate(SYNTHETIC_PRESETS):
        for index in range(config.synthetic_fields):
            seed = config.seed * 10_000 + preset_index * 1_000 + index
            synthetic = generate_field(seed, preset, shape=(side, side))
            factor = synthetic.pixel_size_um / config.net_pixel_size_um
            labels = _resize_nearest(synthetic.labels, factor)
            images.append(
                TrainingImage(
                    f"synthetic:{preset}:{seed}",
                    _resize_image(synthetic.image, factor),
                    labels,
                    np.ones(labels.shape, np.float32),
                )
            )
            done += 1
            yield Progress("data", done, total, f"synthetic {preset} {seed}")
    return [item for item in images if item.labels.max() > 0]


def _resize_image(image: np.ndarray, factor: float) -> np.ndarray:
    """Resize (Y, X[, C]) by ``factor`` (area averaging when shrinking)."""
    height, width = image.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


def _resize_nearest(labels: np.ndarray, factor: float) -> np.ndarray:
    """Nearest-neighbour resize of a label image (Y, X) by ``factor``."""
    height, width = labels.shape
    rows = ((np.arange(round(height * factor)) + 0.5) / factor).astype(int).clip(0, height - 1)
    cols = ((np.arange(round(width * factor)) + 0.5) / factor).astype(int).clip(0, width - 1)
    return np.ascontiguousarray(labels[rows[:, None], cols[None, :]]).astype(np.int32)


def _median_diameter(labels: np.ndarray) -> float:
    """Cellpose's diameter: the median over masks of 2 sqrt(area / pi) (pixels)."""
    counts = np.bincount(labels.ravel())[1:]
    counts = counts[counts > 0]
    return float(np.median(np.sqrt(counts)) / (np.sqrt(np.pi) / 2)) if len(counts) else 0.0


def _new_net(widths: tuple[int, ...], diam_mean: float, diam_labels: float) -> torch.nn.Module:
    from cellpose.resnet_torch import CPnet

    net = CPnet(list(widths), 3, sz=3, mkldnn=False, max_pool=True, diam_mean=diam_mean)
    net.diam_labels.data.fill_(diam_labels)
    return net


def _flow_targets(images: list[TrainingImage], device: torch.device) -> list[np.ndarray]:
    """Per image (4, Y, X): cell mask, loss weight, Y flow, X flow (Cellpose's flow targets)."""
    from cellpose import dynamics

    flows = dynamics.labels_to_flows([item.labels.copy() for item in images], device=device)
    return [
        np.stack([flow[1], item.weight, flow[2], flow[3]]).astype(np.float32)
        for flow, item in zip(flows, images, strict=True)
    ]


def augment_stain(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stain, colour, blur and noise augmentation of one RGB field (Y, X, 3) uint8 -> float32.

    In optical density (relative to the field's background): each channel scaled by
    ``U(0.75, 1.3)``, the whole stain by ``U(0.7, 1.35)``, channels mixed by ``I + N(0, 0.06)``;
    the background colour scaled per channel by ``U(0.9, 1.05)``; then a Gaussian blur
    (sigma ``U(0, 1.2)`` px, half the time) and camera noise (sd ``U(0, 4)`` in 8-bit units).
    """
    from blastscope.cells import background_rgb

    background = background_rgb(image)
    density = np.log(background / np.maximum(image.astype(np.float32), 1.0)).clip(0, None)
    mix = np.eye(3, dtype=np.float32) + rng.normal(0, 0.06, (3, 3)).astype(np.float32)
    scale = rng.uniform(0.75, 1.3, 3).astype(np.float32) * rng.uniform(0.7, 1.35)
    density = (density @ mix.T) * scale
    new_background = background * rng.uniform(0.9, 1.05, 3).astype(np.float32)
    out = np.minimum(new_background, 255.0) * np.exp(-density.clip(0, None))
    if rng.random() < 0.5:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.05, 1.2))
    out = out + rng.normal(0, rng.uniform(0, 4), out.shape).astype(np.float32)
    return out.clip(0, 255).astype(np.float32)


def weighted_cellpose_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cellpose's loss with a per-pixel weight; target (N, 4, Y, X) as in :func:`_flow_targets`.

    Flow term: mean squared error against 5x the flows, halved; cell term: BCE on the logits.
    """
    weight = target[:, 1]
    flow_error = ((prediction[:, :2] - 5.0 * target[:, 2:]) ** 2).mean(dim=1) / 2.0
    cell = F.binary_cross_entropy_with_logits(
        prediction[:, 2], (target[:, 0] > 0.5).float(), reduction="none"
    )
    return ((flow_error + cell) * weight).sum() / weight.sum().clamp(min=1.0)


def _train(
    net: torch.nn.Module,
    images: list[TrainingImage],
    targets: list[np.ndarray],
    config: SegmenterTrainingConfig,
    device: torch.device,
) -> Generator[Progress, None, list[float]]:
    from cellpose import transforms

    optimizer = torch.optim.AdamW(
        net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    batches_per_epoch = math.ceil(len(images) / config.batch_size)
    total_steps = config.epochs * batches_per_epoch
    warmup = max(1, min(10 * batches_per_epoch, total_steps // 10))
    rng = np.random.default_rng(config.seed)
    losses = []
    step = 0
    for epoch in range(config.epochs):
        # Cellpose's random_rotate_and_resize draws from numpy's global generator.
        np.random.seed(config.seed * 1000 + epoch)  # noqa: NPY002
        order = rng.permutation(len(images))
        net.train()
        epoch_loss = 0.0
        for start in range(0, len(order), config.batch_size):
            indices = order[start : start + config.batch_size]
            inputs = [
                normalize_channels(
                    augment_stain(images[i].image, rng), NORMALIZE_PERCENTILES
                ).transpose(2, 0, 1)
                for i in indices
            ]
            crops, crop_targets = transforms.random_rotate_and_resize(
                inputs,
                Y=[targets[i] for i in indices],
                scale_range=config.scale_range,
                xy=(config.crop_px, config.crop_px),
            )[:2]
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(config.learning_rate, step, warmup, total_steps)
            batch = torch.from_numpy(crops).to(device).contiguous(memory_format=torch.channels_last)
            prediction = net(batch)[0]
            loss = weighted_cellpose_loss(prediction, torch.from_numpy(crop_targets).to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item() * len(indices)
            step += 1
        losses.append(epoch_loss / len(images))
        yield Progress("train", epoch + 1, config.epochs, f"loss {losses[-1]:.3f}")
    net.eval()
    return losses


def _learning_rate(peak: float, step: int, warmup: int, total: int) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to 5% of it."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


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


def _git_commit() -> str | None:
    """The repository's HEAD when training starts (None outside a git checkout)."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return result.stdout.strip()


def _evaluate(
    bundle_path: Path, config: SegmenterTrainingConfig
) -> Generator[Progress, None, dict[str, Any]]:
    params = SegmentationParams(model=str(bundle_path), device=config.device)
    metrics: dict[str, Any] = {}
    if config.val_fields != 0:
        root = bccd_root(config.bccd)
        field_ids = read_split(root, "val")
        if config.val_fields is not None:
            field_ids = field_ids[: config.val_fields]
        rows = []
        for index, bccd_field in enumerate(read_fields(root, field_ids)):
            segmentation = segment(bccd_field.image, BCCD_PIXEL_SIZE_UM, params)
            rows.append(wbc_box_matches(segmentation.labels, bccd_field.boxes))
            yield Progress("evaluate", index + 1, len(field_ids), bccd_field.field_id)
        metrics["bccd_val"] = wbc_recall_summary(pd.concat(rows, ignore_index=True))
    if config.synthetic_eval_fields:
        metrics["synthetic_heldout"] = synthetic_average_precision(
            params, config.synthetic_eval_fields
        )
    return metrics


def synthetic_average_precision(params: SegmentationParams, n_fields: int) -> dict[str, Any]:
    """AP at mask IoU 0.5 (TP / (TP + FP + FN), Cellpose's definition) on held-out fields.

    Fields: seeds from :data:`SYNTHETIC_EVAL_SEED`, alternating the presets, 512 x 512 px, each
    segmented with its true pixel size.
    """
    from cellpose import metrics

    from blastscope.synthetic import generate_field

    per_preset: dict[str, list[float]] = {preset: [] for preset in SYNTHETIC_PRESETS}
    counts = np.zeros(3)
    for index in range(n_fields):
        preset = SYNTHETIC_PRESETS[index % len(SYNTHETIC_PRESETS)]
        truth = generate_field(SYNTHETIC_EVAL_SEED + index, preset, shape=(512, 512))
        labels = segment(truth.image, truth.pixel_size_um, params).labels
        ap, tp, fp, fn = metrics.average_precision(
            [truth.labels.astype(np.int32)], [labels], threshold=[0.5]
        )
        per_preset[preset].append(float(ap[0, 0]))
        counts += [tp[0, 0], fp[0, 0], fn[0, 0]]
    tp, fp, fn = counts
    return {
        "n_fields": n_fields,
        "ap50_pooled": round(float(tp / max(tp + fp + fn, 1)), 4),
        "ap50_mean_per_field": {
            preset: round(float(np.mean(values)), 4)
            for preset, values in per_preset.items()
            if values
        },
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
    }
