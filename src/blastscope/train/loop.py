"""The training loop: a compact CNN on crops, one robust method, noisy-validation model selection.

:func:`train_steps` is a generator of :class:`~blastscope.progress.Progress` events (one per
batch) that returns a :class:`TrainedModel`; drive it with
:func:`blastscope.progress.run_steps` (the CLI shows a tqdm bar).

- The method is a loss of :mod:`blastscope.train.losses` (one network) or ``coteaching`` (two
  networks, :mod:`blastscope.train.selection`; the forget rate is given or estimated from the
  training losses after the first epoch, which trains on every sample because the ramp starts
  at 0).
- AdamW, learning rate on a cosine from ``learning_rate`` to 0 over the epochs (a function of the
  epoch, so resuming needs no scheduler state).
- Model selection uses the **noisy** validation labels only: the epoch (and, for co-teaching, the
  network) with the highest validation accuracy against the labels training was given; ties go
  to the earlier epoch. ``patience`` stops after that many epochs without improvement.
- Seeded: the networks' initial weights from ``seed``; each epoch's shuffling, augmentation and
  dropout from ``(seed, epoch)``. On the CPU a run resumed from its checkpoint ends with the same
  weights as an uninterrupted run.
- A checkpoint (``checkpoint.pt``: weights, optimiser state, history, the best weights so far) is
  written after every epoch when a checkpoint path is given; it holds tensors and plain values
  only and is read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from blastscope.devices import resolve_device
from blastscope.errors import BlastscopeError
from blastscope.models.architectures import build_network, default_architecture
from blastscope.progress import Progress
from blastscope.train.augment import AugmentConfig, augment_batch
from blastscope.train.losses import (
    LOSS_DEFAULTS,
    METHODS,
    cross_entropy,
    loss_parameters,
    make_loss,
)
from blastscope.train.selection import (
    coteaching_losses,
    estimate_noise_rate,
    forget_rate_schedule,
)

CHECKPOINT_FORMAT = "blastscope-training-checkpoint"
_EVAL_BATCH = 512


class TrainingError(BlastscopeError):
    """Training settings or data that cannot be used; the message says what to change."""


EPOCH_SELECTIONS = ("best", "last")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (recorded in the bundle's provenance).

    ``method``: a loss name or ``coteaching``; ``loss_params`` override the loss's defaults;
    ``forget_rate``: co-teaching's final forget rate (None: estimated after the first epoch);
    ``ramp_epochs``: epochs over which the forget rate ramps up (None: a third of the epochs);
    ``epoch_selection``: ``best`` (the epoch with the best noisy validation accuracy) or ``last``
    (the final weights, for experiments on memorisation).
    """

    method: str = "ce"
    loss_params: dict[str, float] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    patience: int | None = None
    forget_rate: float | None = None
    ramp_epochs: int | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    architecture: dict[str, Any] | None = None
    seed: int = 0
    epoch_selection: str = "best"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise TrainingError(
                f"Unknown training method {self.method!r}: choose one of {', '.join(METHODS)}."
            )
        if self.method in LOSS_DEFAULTS:
            try:
                loss_parameters(self.method, self.loss_params)
            except ValueError as error:
                raise TrainingError(str(error)) from error
        elif self.loss_params:
            raise TrainingError(
                "co-teaching trains with per-sample cross-entropy and takes no loss parameters; "
                "set its forget rate with forget_rate (--forget-rate)."
            )
        if self.epochs < 1 or self.batch_size < 2:
            raise TrainingError(
                f"epochs must be >= 1 and batch_size >= 2, got {self.epochs} and {self.batch_size}."
            )
        if self.forget_rate is not None and not 0.0 <= self.forget_rate < 1.0:
            raise TrainingError(f"forget_rate must be in [0, 1), got {self.forget_rate}.")
        if self.epoch_selection not in EPOCH_SELECTIONS:
            raise TrainingError(
                f"epoch_selection must be one of {', '.join(EPOCH_SELECTIONS)}, got "
                f"{self.epoch_selection!r}."
            )
        if self.patience is not None and self.patience < 1:
            raise TrainingError(f"patience must be >= 1 epochs (or None), got {self.patience}.")

    def describe(self) -> dict[str, Any]:
        """JSON-ready settings, loss parameters resolved."""
        described = asdict(self)
        if self.method in LOSS_DEFAULTS:
            described["loss_params"] = loss_parameters(self.method, self.loss_params)
        return described

    @property
    def resolved_ramp_epochs(self) -> int:
        return self.ramp_epochs if self.ramp_epochs is not None else max(1, self.epochs // 3)


@dataclass
class TrainedModel:
    """The chosen network (eval mode, CPU) and how it was chosen.

    ``history``: one dict per epoch (epoch, train_loss, val_loss, val_accuracy, learning_rate,
    forget_rate, seconds; co-teaching adds the second network's validation figures and the
    selection agreement); ``best_epoch`` and ``best_network`` (0 or 1, co-teaching) were chosen
    on the noisy validation labels; ``mean`` / ``std`` the per-channel normalisation of crops in
    [0, 1]; ``estimated_noise_rate`` co-teaching's estimate (None when given or unused).
    """

    network: nn.Module
    architecture: dict[str, Any]
    history: list[dict[str, Any]]
    best_epoch: int
    best_network: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    estimated_noise_rate: float | None
    forget_rate: float | None
    stopped_early: bool


def channel_statistics(crops: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 crops (N, h, w, 3) scaled to [0, 1]."""
    step = max(1, len(crops) // 2000)
    sample = crops[::step].reshape(-1, 3).astype(np.float64) / 255.0
    return tuple(sample.mean(axis=0).tolist()), tuple(np.maximum(sample.std(axis=0), 1e-3).tolist())


def _to_input(
    crops_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, augment: Any = None
) -> torch.Tensor:
    """uint8 (B, h, w, 3) on the device -> normalised float (B, 3, h, w), augmented if asked."""
    batch = crops_uint8.permute(0, 3, 1, 2).float().div_(255.0)
    if augment is not None:
        batch = augment(batch)
    return (batch - mean[:, None, None]) / std[:, None, None]


def predict_logits(
    network: nn.Module,
    crops: np.ndarray,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: str | torch.device = "cpu",
    batch_size: int = _EVAL_BATCH,
) -> np.ndarray:
    """Logits (N, K) float32 of uint8 crops (N, h, w, 3) without augmentation, in eval mode."""
    return _batched_outputs(network, network, crops, mean, std, device, batch_size)


def predict_embeddings(
    network: nn.Module,
    crops: np.ndarray,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: str | torch.device = "cpu",
    batch_size: int = _EVAL_BATCH,
) -> np.ndarray:
    """The network's per-crop embeddings (N, F) float32 (``network.features``), in eval mode."""
    return _batched_outputs(network, network.features, crops, mean, std, device, batch_size)


def _batched_outputs(
    network: nn.Module,
    forward: Any,
    crops: np.ndarray,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: str | torch.device,
    batch_size: int,
) -> np.ndarray:
    device = resolve_device(device)
    network = network.to(device).eval()
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device)
    std_t = torch.tensor(std, dtype=torch.float32, device=device)
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(crops), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(crops[start : start + batch_size]))
            outputs.append(forward(_to_input(chunk.to(device), mean_t, std_t)).float().cpu())
    if not outputs:
        width = network.num_classes if forward is network else network.feature_width
        return np.zeros((0, width), dtype=np.float32)
    return torch.cat(outputs).numpy()


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _learning_rate(config: TrainConfig, epoch: int) -> float:
    return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * epoch / config.epochs))


def _checkpoint_identity(config: TrainConfig, n_train: int, n_val: int) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the settings and the data sizes."""
    return {"config": repr(config.describe()), "n_train": n_train, "n_val": n_val}


def _validation(
    network: nn.Module,
    crops: np.ndarray,
    labels: np.ndarray,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
) -> tuple[float, float]:
    """Cross-entropy and accuracy against the (noisy) validation labels."""
    logits = torch.from_numpy(predict_logits(network, crops, mean, std, device))
    targets = torch.from_numpy(labels)
    loss = float(cross_entropy(logits, targets).mean())
    accuracy = float((logits.argmax(dim=1) == targets).float().mean())
    return loss, accuracy


def train_steps(
    train_crops: np.ndarray,
    train_labels: np.ndarray,
    val_crops: np.ndarray,
    val_labels: np.ndarray,
    n_classes: int,
    config: TrainConfig,
    *,
    device: str | torch.device = "auto",
    checkpoint: str | Path | None = None,
    resume: bool = False,
) -> Generator[Progress, None, TrainedModel]:
    """Train on uint8 crops (N, h, w, 3) and labels (N,); select on the validation set.

    ``checkpoint``: the file written after each epoch; with ``resume=True`` training continues
    from it (it must come from the same settings and data sizes). Yields one Progress per batch.
    """
    _check_data(train_crops, train_labels, val_crops, val_labels, n_classes, config)
    device = resolve_device(device)
    architecture = config.architecture or default_architecture(n_classes)
    if architecture.get("args", {}).get("num_classes", n_classes) != n_classes:
        raise TrainingError(
            f"The architecture has {architecture['args']['num_classes']} outputs but the data "
            f"has {n_classes} classes; set num_classes to {n_classes}."
        )
    n_networks = 2 if config.method == "coteaching" else 1
    torch.manual_seed(config.seed)
    networks = [build_network(architecture).to(device) for _ in range(n_networks)]
    optimisers = [
        torch.optim.AdamW(
            net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        for net in networks
    ]
    mean, std = channel_statistics(train_crops)
    loss_function = None if n_networks == 2 else make_loss(config.method, **config.loss_params)
    identity = _checkpoint_identity(config, len(train_labels), len(val_labels))
    state: dict[str, Any] = {
        "next_epoch": 0,
        "history": [],
        "best": None,  # (accuracy, epoch, network index)
        "best_state": None,
        "forget_rate": config.forget_rate,
        "estimated_noise_rate": None,
        "epochs_without_gain": 0,
    }
    if resume:
        state = _load_checkpoint(checkpoint, identity, networks, optimisers, state)

    train_data = torch.from_numpy(np.ascontiguousarray(train_crops)).to(device)
    train_targets = torch.from_numpy(np.asarray(train_labels, dtype=np.int64)).to(device)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device)
    std_t = torch.tensor(std, dtype=torch.float32, device=device)
    n_train = len(train_labels)
    batches_per_epoch = math.ceil(n_train / config.batch_size)
    total = batches_per_epoch * config.epochs
    stopped_early = False
    last_epoch = ""

    for epoch in range(state["next_epoch"], config.epochs):
        started = time.perf_counter()
        generator = _epoch_generator(config.seed, epoch)
        torch.manual_seed(config.seed * 1_000_003 + epoch)  # dropout
        learning_rate = _learning_rate(config, epoch)
        for optimiser in optimisers:
            for group in optimiser.param_groups:
                group["lr"] = learning_rate
        forget = (
            forget_rate_schedule(epoch, state["forget_rate"] or 0.0, config.resolved_ramp_epochs)
            if n_networks == 2
            else 0.0
        )
        for net in networks:
            net.train()
        order = torch.randperm(n_train, generator=generator).to(device)
        loss_sum, agreement_sum, seen = 0.0, 0.0, 0
        for batch_index in range(batches_per_epoch):
            index = order[batch_index * config.batch_size : (batch_index + 1) * config.batch_size]
            if index.numel() < 2:  # BatchNorm needs two samples; a lone last sample waits
                continue
            inputs = _to_input(
                train_data[index],
                mean_t,
                std_t,
                lambda batch, g=generator: augment_batch(batch, g, config.augment),
            )
            targets = train_targets[index]
            if n_networks == 1:
                loss = loss_function(networks[0](inputs), targets).mean()
                optimisers[0].zero_grad(set_to_none=True)
                loss.backward()
                optimisers[0].step()
                batch_loss = float(loss.detach())
            else:
                loss_1, loss_2, agreement = coteaching_losses(
                    cross_entropy(networks[0](inputs), targets),
                    cross_entropy(networks[1](inputs), targets),
                    forget,
                )
                for optimiser in optimisers:
                    optimiser.zero_grad(set_to_none=True)
                (loss_1 + loss_2).backward()
                for optimiser in optimisers:
                    optimiser.step()
                batch_loss = 0.5 * (float(loss_1.detach()) + float(loss_2.detach()))
                agreement_sum += agreement * index.numel()
            loss_sum += batch_loss * index.numel()
            seen += index.numel()
            yield Progress(
                "train",
                epoch * batches_per_epoch + batch_index + 1,
                total,
                f"epoch {epoch + 1}/{config.epochs} loss {loss_sum / seen:.4f}{last_epoch}",
            )

        if n_networks == 2 and epoch == 0 and state["forget_rate"] is None:
            state["estimated_noise_rate"] = _estimate_from_training_losses(
                networks[0], train_crops, train_labels, mean, std, device, n_classes
            )
            state["forget_rate"] = min(state["estimated_noise_rate"], 0.5)

        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": loss_sum / max(seen, 1),
            "learning_rate": learning_rate,
            "forget_rate": forget if n_networks == 2 else None,
        }
        improved = False
        for net_index, net in enumerate(networks):
            val_loss, val_accuracy = _validation(net, val_crops, val_labels, mean, std, device)
            suffix = "" if net_index == 0 else "_2"
            row[f"val_loss{suffix}"] = val_loss
            row[f"val_accuracy{suffix}"] = val_accuracy
            if state["best"] is None or val_accuracy > state["best"][0]:
                state["best"] = (val_accuracy, epoch, net_index)
                state["best_state"] = {
                    key: value.detach().cpu().clone() for key, value in net.state_dict().items()
                }
                improved = True
        if n_networks == 2:
            row["selection_agreement"] = agreement_sum / max(seen, 1)
        state["epochs_without_gain"] = 0 if improved else state["epochs_without_gain"] + 1
        row["seconds"] = time.perf_counter() - started
        state["history"].append(row)
        state["next_epoch"] = epoch + 1
        if checkpoint is not None:
            _save_checkpoint(checkpoint, identity, networks, optimisers, state)
        last_epoch = f"; epoch {epoch + 1}: noisy val accuracy {row['val_accuracy']:.3f}"
        if config.patience is not None and state["epochs_without_gain"] >= config.patience:
            stopped_early = epoch + 1 < config.epochs
            break

    if config.epoch_selection == "last":
        final = state["history"][-1]
        index = int(n_networks == 2 and final["val_accuracy_2"] > final["val_accuracy"])
        state["best"] = (final[f"val_accuracy{'_2' if index else ''}"], final["epoch"], index)
        state["best_state"] = {
            key: value.detach().cpu().clone() for key, value in networks[index].state_dict().items()
        }
    best_network = build_network(architecture)
    best_network.load_state_dict(state["best_state"])
    best_network.eval()
    return TrainedModel(
        network=best_network,
        architecture=copy.deepcopy(architecture),
        history=state["history"],
        best_epoch=int(state["best"][1]),
        best_network=int(state["best"][2]),
        mean=mean,
        std=std,
        estimated_noise_rate=state["estimated_noise_rate"],
        forget_rate=state["forget_rate"],
        stopped_early=stopped_early,
    )


def _check_data(
    train_crops: np.ndarray,
    train_labels: np.ndarray,
    val_crops: np.ndarray,
    val_labels: np.ndarray,
    n_classes: int,
    config: TrainConfig,
) -> None:
    for name, crops, labels in (
        ("training", train_crops, train_labels),
        ("validation", val_crops, val_labels),
    ):
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
            raise TrainingError(
                f"The {name} crops must be uint8 (N, h, w, 3), got {crops.dtype} {crops.shape}."
            )
        if len(crops) != len(labels):
            raise TrainingError(
                f"{len(crops)} {name} crops but {len(labels)} labels: give one label per crop."
            )
        if len(labels) == 0:
            raise TrainingError(f"The {name} set is empty: give more cells or slides.")
        if labels.min() < 0 or labels.max() >= n_classes:
            raise TrainingError(f"The {name} labels must be class indices in [0, {n_classes}).")
    present = np.unique(train_labels)
    if present.size < 2:
        raise TrainingError(
            f"The training labels hold one class only ({present.tolist()}): a classifier needs "
            "examples of at least two classes."
        )


def _estimate_from_training_losses(
    network: nn.Module,
    crops: np.ndarray,
    labels: np.ndarray,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
    n_classes: int,
) -> float:
    logits = torch.from_numpy(predict_logits(network, crops, mean, std, device))
    losses = cross_entropy(logits, torch.from_numpy(np.asarray(labels, dtype=np.int64)))
    return estimate_noise_rate(losses.numpy(), n_classes)


def _save_checkpoint(
    path: str | Path,
    identity: dict[str, Any],
    networks: list[nn.Module],
    optimisers: list[torch.optim.Optimizer],
    state: dict[str, Any],
) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "identity": identity,
        "networks": [net.state_dict() for net in networks],
        "optimisers": [optimiser.state_dict() for optimiser in optimisers],
        "state": state,
    }
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, temporary)
    temporary.replace(path)


def _load_checkpoint(
    path: str | Path | None,
    identity: dict[str, Any],
    networks: list[nn.Module],
    optimisers: list[torch.optim.Optimizer],
    state: dict[str, Any],
) -> dict[str, Any]:
    if path is None or not Path(path).is_file():
        raise TrainingError(
            f"Cannot resume: no checkpoint at {path}. Run without --resume to start afresh, or "
            "point --out at the folder of the run to continue."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise TrainingError(
            f"Cannot read the checkpoint {path} ({type(error).__name__}: {error}); it is "
            "corrupt or not a blastscope checkpoint. Start afresh without --resume."
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path} is not a blastscope training checkpoint.")
    if payload["identity"] != identity:
        raise TrainingError(
            f"The checkpoint {path} comes from other settings or data (it recorded "
            f"{payload['identity']}, this run is {identity}). Resume with the same command, or "
            "start afresh without --resume."
        )
    for net, weights in zip(networks, payload["networks"], strict=True):
        net.load_state_dict(weights)
    for optimiser, saved in zip(optimisers, payload["optimisers"], strict=True):
        optimiser.load_state_dict(saved)
    restored = dict(state)
    restored.update(payload["state"])
    if restored["best"] is not None:
        restored["best"] = tuple(restored["best"])
    return restored
