"""Sample selection: co-teaching (Han et al. 2018) and estimating the noise rate from losses.

Co-teaching trains two networks; in each batch, each network picks the ``1 - forget_rate``
share of samples with the smallest loss *under itself* and hands them to the other network, which
updates on them. Networks learn clean (easy) samples before they memorise noisy ones, so small-loss
samples are mostly clean; the two networks' different errors keep one from confirming its own
mistakes. The forget rate ramps linearly from 0 to its final value over the first epochs.

The final forget rate is the noise rate, given or estimated by :func:`estimate_noise_rate`: a
two-component Gaussian mixture fitted to the per-sample losses after a warm-up epoch; the weight
of the high-loss component estimates the share of wrong labels.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def forget_rate_schedule(epoch: int, final_rate: float, ramp_epochs: int) -> float:
    """Forget rate at ``epoch`` (0-based): ``final_rate * min(epoch / ramp_epochs, 1)``."""
    if not 0.0 <= final_rate < 1.0:
        raise ValueError(f"The forget rate must be in [0, 1), got {final_rate}.")
    if ramp_epochs <= 0:
        return final_rate
    return final_rate * min(epoch / ramp_epochs, 1.0)


def small_loss_indices(losses: torch.Tensor, forget_rate: float) -> torch.Tensor:
    """Indices of the ``ceil((1 - forget_rate) * N)`` (at least 1) samples of smallest loss."""
    n_keep = max(1, math.ceil((1.0 - forget_rate) * losses.numel()))
    return torch.argsort(losses.detach())[:n_keep]


def coteaching_losses(
    per_sample_1: torch.Tensor, per_sample_2: torch.Tensor, forget_rate: float
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One co-teaching step's two losses from the networks' per-sample losses (N,) each.

    Network 1 learns from the samples network 2 finds easy and vice versa. Returns the two mean
    losses and the share of samples the two selections agree on.
    """
    keep_1 = small_loss_indices(per_sample_1, forget_rate)
    keep_2 = small_loss_indices(per_sample_2, forget_rate)
    loss_1 = per_sample_1[keep_2].mean()
    loss_2 = per_sample_2[keep_1].mean()
    agreement = np.intersect1d(keep_1.cpu().numpy(), keep_2.cpu().numpy()).size / keep_1.numel()
    return loss_1, loss_2, float(agreement)


def estimate_noise_rate(
    losses: np.ndarray, n_classes: int, iterations: int = 200, seed: int = 0
) -> float:
    """Share of wrong labels estimated from per-sample cross-entropy losses (N,).

    A two-component 1-D Gaussian mixture is fitted by EM to the losses scaled to [0, 1] (as in
    DivideMix, Li et al. 2020); the estimate is the weight of the high-loss component. A skewed
    loss distribution without noise also splits in two, so the high component only counts as
    noise when its mean loss is above ``log(n_classes)``, i.e. when on average the network gives
    those labels less than chance probability; otherwise the estimate is 0.
    """
    values = np.asarray(losses, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size < 10:
        raise ValueError(
            f"Estimating the noise rate needs the losses of at least 10 samples, got {values.size}."
        )
    low, high = values.min(), values.max()
    if high - low < 1e-12:
        return 0.0
    x = (values - low) / (high - low)
    rng = np.random.default_rng(seed)
    x = x + rng.normal(0.0, 1e-6, size=x.size)  # breaks exact ties without moving the fit
    means = np.percentile(x, [10.0, 90.0])
    variances = np.full(2, x.var() / 4.0 + 1e-6)
    weights = np.array([0.5, 0.5])
    for _ in range(iterations):
        log_density = (
            -0.5 * (x[:, None] - means) ** 2 / variances
            - 0.5 * np.log(2.0 * np.pi * variances)
            + np.log(weights)
        )
        log_norm = np.logaddexp(log_density[:, 0], log_density[:, 1])
        responsibility = np.exp(log_density - log_norm[:, None])
        counts = responsibility.sum(axis=0) + 1e-12
        weights = counts / x.size
        means = (responsibility * x[:, None]).sum(axis=0) / counts
        variances = (responsibility * (x[:, None] - means) ** 2).sum(axis=0) / counts + 1e-6
    high_component = int(np.argmax(means))
    mean_loss = low + means[high_component] * (high - low)
    if mean_loss <= math.log(n_classes):
        return 0.0
    return float(weights[high_component])
