"""How hard the generator's tasks are: a small CNN trained on its crops, tested on new slides.

    nice -n 10 python benchmarks/calibrate_synthetic.py --preset default          # ~25 min, 2 cores
    nice -n 10 python benchmarks/calibrate_synthetic.py --preset easy --task blast
    python benchmarks/calibrate_synthetic.py --quick                              # smoke run

This is the calibration of the presets, not the project's training code (that is
``blastscope.train``): crops of a 24 µm window at 0.5 µm per pixel (48 x 48 px) cut by
``render_crops`` at the true centroids, a plain 4-block CNN trained from scratch with clean
labels (flips, 90-degree rotations, per-crop colour jitter), a fixed number of epochs.

- blast task: nucleated cells, blast vs non-blast; prints the accuracy overall and per cell type.
- mutation task: blasts only, the slide's class as every blast's label (4 classes), training
  slides of ``--train-blasts-per-slide`` blasts; prints the per-cell accuracy overall and by the
  feature strength each blast shows, and the slide call (mean log-probability over the blasts of
  each held-out slide of ``--test-blasts-per-slide`` blasts) with the slides it got wrong.

Targets for the ``default`` preset: blast accuracy 85-97 %, per-cell mutation accuracy well below
100 % (55-80 %), slide call right on at least 95 % of slides; ``easy``: at least 85 % on both.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from blastscope.synthetic import MUTATION_CLASSES, NUCLEATED_TYPES, render_crops

BATCH = 64


def small_cnn(n_classes: int) -> nn.Module:
    """Four blocks of two 3x3 convolutions (24-96 channels), global pooling, a linear head."""

    def block(inputs: int, outputs: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(inputs, outputs, 3, padding=1, bias=False),
            nn.BatchNorm2d(outputs),
            nn.ReLU(),
            nn.Conv2d(outputs, outputs, 3, padding=1, bias=False),
            nn.BatchNorm2d(outputs),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )

    return nn.Sequential(
        block(3, 24),
        block(24, 48),
        block(48, 64),
        block(64, 96),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(96, n_classes),
    )


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 crops (N, h, w, 3) -> normalised float tensor (N, 3, h, w)."""
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (tensor - 0.75) / 0.2


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 90-degree rotation and flip of the batch, and a colour jitter per crop."""
    turns = int(torch.randint(4, (1,), generator=generator))
    batch = torch.rot90(batch, turns, (2, 3))
    if torch.rand(1, generator=generator) < 0.5:
        batch = batch.flip(3)
    gain = 1 + 0.05 * torch.randn(batch.shape[0], 3, 1, 1, generator=generator)
    shift = 0.1 * torch.randn(batch.shape[0], 1, 1, 1, generator=generator)
    return batch * gain + shift


def train(images: np.ndarray, labels: np.ndarray, n_classes: int, epochs: int) -> nn.Module:
    """The small CNN trained with AdamW and a one-cycle schedule (seeded)."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    x, y = to_tensor(images), torch.from_numpy(labels.astype(np.int64))
    model = small_cnn(n_classes)
    optimiser = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=1e-4)
    steps = epochs * ((len(x) + BATCH - 1) // BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 3e-3, total_steps=steps)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), BATCH):
            index = order[start : start + BATCH]
            loss = F.cross_entropy(model(augment(x[index], generator)), y[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(index)
        print(f"    epoch {epoch + 1}/{epochs}: training loss {total / len(x):.3f}", flush=True)
    return model


@torch.inference_mode()
def probabilities(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """Class probabilities (N, classes)."""
    model.eval()
    x = to_tensor(images)
    return torch.cat([F.softmax(model(x[i : i + 256]), 1) for i in range(0, len(x), 256)]).numpy()


def blast_task(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    train_set = render_crops(args.train_cells, args.seed, args.preset)
    test_set = render_crops(args.test_cells, args.seed + 1, args.preset)
    print(f"  blast data: {time.perf_counter() - started:.0f} s", flush=True)
    model = train(train_set.images, train_set.cells["is_blast"].to_numpy(), 2, args.epochs)
    call = probabilities(model, test_set.images)[:, 1] >= 0.5
    truth = test_set.cells["is_blast"].to_numpy()
    types = test_set.cells["cell_type"].to_numpy()
    print(
        f"[{args.preset}] blast vs non-blast accuracy {np.mean(call == truth):.3f} "
        f"on {len(truth)} held-out nucleated cells (blast share {truth.mean():.2f})"
    )
    for cell_type in NUCLEATED_TYPES:
        chosen = types == cell_type
        if chosen.any():
            accuracy = np.mean(call[chosen] == truth[chosen])
            print(f"    {cell_type:11s} n={chosen.sum():5d}  accuracy {accuracy:.3f}")
    print(f"  blast task: {time.perf_counter() - started:.0f} s", flush=True)


def mutation_task(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    train_set = render_crops(
        args.train_cells,
        args.seed + 2,
        args.preset,
        blasts_only=True,
        cells_per_slide=args.train_blasts_per_slide,
    )
    test_set = render_crops(
        args.test_cells,
        args.seed + 3,
        args.preset,
        blasts_only=True,
        cells_per_slide=args.test_blasts_per_slide,
    )
    print(f"  mutation data: {time.perf_counter() - started:.0f} s", flush=True)
    index = {name: k for k, name in enumerate(MUTATION_CLASSES)}
    labels = train_set.cells["mutation"].map(index).to_numpy()
    model = train(train_set.images, labels, len(MUTATION_CLASSES), args.epochs)
    prob = probabilities(model, test_set.images)
    truth = test_set.cells["mutation"].map(index).to_numpy()
    right = prob.argmax(1) == truth
    print(
        f"[{args.preset}] mutation per-cell accuracy {right.mean():.3f} on {len(truth)} "
        f"held-out blasts of {test_set.cells['slide'].nunique()} slides"
    )
    strength = test_set.cells["mutation_features"].to_numpy()
    for low, high, name in [
        (0, 0, "none"),
        (0, 0.3, "(0, 0.3)"),
        (0.3, 0.6, "[0.3, 0.6)"),
        (0.6, 1.0, "[0.6, 1]"),
    ]:
        chosen = strength == 0 if name == "none" else (strength > low) & (strength <= high)
        if chosen.any():
            print(
                f"    features {name:10s} n={chosen.sum():5d}  accuracy {right[chosen].mean():.3f}"
            )
    calls, wrong = 0, []
    for slide, rows in test_set.cells.groupby("slide"):
        if len(rows) < 50:
            continue
        pooled = np.log(prob[rows.index.to_numpy()] + 1e-6).mean(axis=0)
        calls += 1
        if pooled.argmax() != index[rows["mutation"].iloc[0]]:
            wrong.append(
                f"slide {slide} {rows['mutation'].iloc[0]} called "
                f"{MUTATION_CLASSES[pooled.argmax()]}"
            )
    print(f"[{args.preset}] slide call right on {calls - len(wrong)}/{calls} slides (>= 50 blasts)")
    for line in wrong:
        print(f"    wrong: {line}")
    print(f"  mutation task: {time.perf_counter() - started:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--task", choices=["blast", "mutation", "both"], default="both")
    parser.add_argument("--train-cells", type=int, default=4000)
    parser.add_argument("--test-cells", type=int, default=3000)
    parser.add_argument("--train-blasts-per-slide", type=int, default=25)
    parser.add_argument("--test-blasts-per-slide", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (numbers mean little)")
    args = parser.parse_args()
    if args.quick:
        args.train_cells, args.test_cells, args.epochs = 200, 120, 1
        args.test_blasts_per_slide = 60
    torch.set_num_threads(args.threads)
    if args.task in ("blast", "both"):
        blast_task(args)
    if args.task in ("mutation", "both"):
        mutation_task(args)


if __name__ == "__main__":
    main()
