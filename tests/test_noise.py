"""Injected label noise (rates, kinds, seeding) and the noise-rate estimate from losses."""

import numpy as np
import pytest
import torch

from blastscope.train.noise import inject_label_noise, transition_matrix
from blastscope.train.selection import (
    estimate_noise_rate,
    forget_rate_schedule,
    small_loss_indices,
)


def test_symmetric_noise_flips_the_asked_share_of_each_class_to_other_classes():
    labels = np.repeat(np.arange(4), 250)
    noisy = inject_label_noise(labels, 4, 0.2, "symmetric", seed=3)
    assert noisy.realised_rate == pytest.approx(0.2)
    for k in range(4):
        assert noisy.flipped[labels == k].sum() == 50
    # a flipped label never stays in its class, and lands in every other class
    assert np.all(noisy.labels[noisy.flipped] != labels[noisy.flipped])
    assert set(noisy.labels[noisy.flipped & (labels == 0)]) == {1, 2, 3}
    assert noisy.describe()["n_flipped"] == 200


def test_pair_noise_moves_class_k_to_the_next_class():
    labels = np.repeat(np.arange(3), 100)
    noisy = inject_label_noise(labels, 3, 0.3, "pair", seed=0)
    assert noisy.realised_rate == pytest.approx(0.3)
    assert np.all(noisy.labels[noisy.flipped] == (labels[noisy.flipped] + 1) % 3)


def test_noise_is_seeded():
    labels = np.repeat(np.arange(2), 500)
    first = inject_label_noise(labels, 2, 0.4, seed=7).labels
    assert np.array_equal(first, inject_label_noise(labels, 2, 0.4, seed=7).labels)
    assert not np.array_equal(first, inject_label_noise(labels, 2, 0.4, seed=8).labels)


def test_zero_noise_changes_nothing():
    labels = np.array([0, 1, 1, 0])
    noisy = inject_label_noise(labels, 2, 0.0)
    assert np.array_equal(noisy.labels, labels)
    assert noisy.realised_rate == 0.0


def test_transition_matrices_are_stochastic():
    symmetric = transition_matrix("symmetric", 0.3, 4)
    assert np.allclose(symmetric.sum(axis=1), 1.0)
    assert symmetric[0, 0] == pytest.approx(0.7)
    assert symmetric[0, 1] == pytest.approx(0.1)
    pair = transition_matrix("pair", 0.2, 3)
    assert pair[2, 0] == pytest.approx(0.2)
    assert pair[2, 1] == 0.0


def test_bad_noise_settings_name_the_fix():
    with pytest.raises(ValueError, match="Unknown noise kind 'gaussian'"):
        inject_label_noise(np.zeros(4, int), 2, 0.1, "gaussian")
    with pytest.raises(ValueError, match=r"symmetric noise rate 0.5 is outside \[0, 0.5\)"):
        inject_label_noise(np.zeros(4, int), 2, 0.5)
    with pytest.raises(ValueError, match=r"Labels must be class indices in \[0, 2\)"):
        inject_label_noise(np.array([0, 2]), 2, 0.1)


def _mixture_losses(rate: float, seed: int) -> np.ndarray:
    """Clean losses ~ exponential (scale 0.15), wrong-label losses ~ N(2, 0.6), 2000 samples."""
    rng = np.random.default_rng(seed)
    n_noisy = int(rate * 2000)
    clean = rng.exponential(0.15, 2000 - n_noisy)
    noisy = rng.normal(2.0, 0.6, n_noisy).clip(0.01)
    return np.concatenate([clean, noisy])


def test_noise_rate_estimate_from_losses_is_near_the_truth():
    assert estimate_noise_rate(_mixture_losses(0.0, 0), n_classes=2) == 0.0
    for rate in (0.2, 0.4):
        estimate = estimate_noise_rate(_mixture_losses(rate, 1), n_classes=2)
        assert abs(estimate - rate) <= 0.1, (rate, estimate)


def test_forget_rate_ramps_up_then_stays():
    rates = [forget_rate_schedule(epoch, 0.4, 4) for epoch in range(6)]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.4])
    with pytest.raises(ValueError, match=r"forget rate must be in \[0, 1\)"):
        forget_rate_schedule(0, 1.0, 4)


def test_small_loss_selection_keeps_the_smallest():
    losses = torch.tensor([0.9, 0.1, 0.5, 0.2, 2.0])
    assert small_loss_indices(losses, 0.4).tolist() == [1, 3, 2]
    assert small_loss_indices(losses, 0.99).tolist() == [1]
