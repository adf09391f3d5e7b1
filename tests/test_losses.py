"""Robust losses against values computed by hand, and on a toy problem with 40% label noise."""

import math

import numpy as np
import pytest
import torch

from blastscope.train.losses import (
    bootstrapping,
    cross_entropy,
    generalized_cross_entropy,
    label_smoothing,
    loss_parameters,
    make_loss,
    symmetric_cross_entropy,
)
from blastscope.train.noise import inject_label_noise
from blastscope.train.selection import coteaching_losses, forget_rate_schedule

# logits (0, ln 3) give the probabilities (0.25, 0.75).
LOGITS = torch.tensor([[0.0, math.log(3.0)]])
LABEL_1 = torch.tensor([1])
LABEL_0 = torch.tensor([0])


def close(value: torch.Tensor, expected: float) -> bool:
    return abs(float(value.item()) - expected) < 1e-6


def test_cross_entropy_is_minus_log_probability_of_the_label():
    assert close(cross_entropy(LOGITS, LABEL_1), 0.2876821)  # -ln 0.75
    assert close(cross_entropy(LOGITS, LABEL_0), 1.3862944)  # -ln 0.25


def test_label_smoothing_uses_the_smoothed_target():
    # epsilon 0.2, 2 classes: target (0.1, 0.9); -(0.1 ln 0.25 + 0.9 ln 0.75)
    assert close(label_smoothing(LOGITS, LABEL_1, epsilon=0.2), 0.3975433)
    # epsilon 0 is plain cross-entropy
    assert close(label_smoothing(LOGITS, LABEL_1, epsilon=0.0), 0.2876821)


def test_generalized_cross_entropy_matches_its_formula():
    # q = 0.5: (1 - 0.75 ** 0.5) / 0.5
    assert close(generalized_cross_entropy(LOGITS, LABEL_1, q=0.5), 0.2679492)
    # q = 1 is the mean absolute error 1 - p_y
    assert close(generalized_cross_entropy(LOGITS, LABEL_0, q=1.0), 0.75)


def test_symmetric_cross_entropy_clamps_log_zero():
    # 0.1 * (-ln 0.75) + 1.0 * (-(-4)) * (1 - 0.75) = 0.0287682 + 1
    assert close(symmetric_cross_entropy(LOGITS, LABEL_1, 0.1, 1.0, -4.0), 1.0287682)
    # with log 0 clamped to ln 1e-4 (the reference code): 9.2103404 * 0.75 for label 0
    value = symmetric_cross_entropy(LOGITS, LABEL_0, 0.0, 1.0, math.log(1e-4))
    assert close(value, 6.9077553)


def test_bootstrapping_soft_and_hard_targets():
    # soft, beta 0.95, label 1: target (0.0125, 0.9875)
    assert close(bootstrapping(LOGITS, LABEL_1, beta=0.95), 0.3014147)
    # hard, beta 0.8, label 0; the arg-max is class 1: target (0.8, 0.2)
    assert close(bootstrapping(LOGITS, LABEL_0, beta=0.8, hard=True), 1.1665719)


def test_bootstrapping_does_not_backpropagate_through_its_target():
    logits = LOGITS.clone().requires_grad_(True)
    bootstrapping(logits, LABEL_1, beta=0.95).sum().backward()
    # gradient of -sum t log softmax = softmax - t, with t fixed
    expected = torch.tensor([[0.25 - 0.0125, 0.75 - 0.9875]])
    assert torch.allclose(logits.grad, expected, atol=1e-6)


def test_losses_are_per_sample_over_a_batch():
    logits = torch.zeros(3, 3)  # uniform probabilities
    targets = torch.tensor([0, 1, 2])
    for name in ("ce", "smoothing", "gce", "sce", "bootstrap-soft", "bootstrap-hard"):
        values = make_loss(name)(logits, targets)
        assert values.shape == (3,)
        assert torch.allclose(values, values[0].expand(3))
    assert close(cross_entropy(logits[:1], targets[:1]), math.log(3.0))


def test_unknown_loss_and_parameter_are_refused_by_name():
    with pytest.raises(ValueError, match="Unknown loss 'focal': choose one of ce, smoothing"):
        make_loss("focal")
    with pytest.raises(ValueError, match=r"Loss 'gce' takes no parameter beta \(it takes: q\)"):
        make_loss("gce", beta=0.5)
    with pytest.raises(ValueError, match=r"GCE q must be in \(0, 1\]"):
        generalized_cross_entropy(LOGITS, LABEL_1, q=0.0)
    assert loss_parameters("sce", {"alpha": 1}) == {"alpha": 1.0, "beta": 1.0, "log_zero": -4.0}


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Four 2-D Gaussian blobs at the corners of a square (side 3, sd 0.8)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    centres = np.array([[0.0, 0.0], [0.0, 3.0], [3.0, 0.0], [3.0, 3.0]])
    points = centres[labels] + rng.normal(0.0, 0.8, (n, 2))
    return torch.tensor(points, dtype=torch.float32), labels


def _mlp() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(2, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 4),
    )


@pytest.fixture(scope="module")
def noisy_blobs():
    """400 training points with 40% symmetric label noise, 2000 clean test points."""
    train_x, train_y = _blobs(400, seed=0)
    test_x, test_y = _blobs(2000, seed=1)
    noisy = inject_label_noise(train_y, 4, 0.4, "symmetric", seed=0)
    return train_x, torch.tensor(noisy.labels), test_x, test_y


def _train_full_batch(name: str, data, steps: int = 1000) -> float:
    """Clean test accuracy of an over-parameterised MLP trained until it memorises."""
    train_x, train_y, test_x, test_y = data
    torch.manual_seed(0)
    network = _mlp()
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-2)
    loss = make_loss(name)
    for _ in range(steps):
        optimiser.zero_grad()
        loss(network(train_x), train_y).mean().backward()
        optimiser.step()
    with torch.no_grad():
        return float((network(test_x).argmax(1).numpy() == test_y).mean())


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny full-batch MLPs here run fastest on one thread; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ce_accuracy(noisy_blobs):
    """Clean accuracy of the cross-entropy baseline on the noisy blobs."""
    return _train_full_batch("ce", noisy_blobs)


def test_gce_beats_cross_entropy_by_20_points_at_40_percent_noise(noisy_blobs, ce_accuracy):
    ce = ce_accuracy
    gce = _train_full_batch("gce", noisy_blobs)
    assert gce >= 0.85
    assert gce - ce >= 0.20, (ce, gce)


def test_coteaching_beats_cross_entropy_by_15_points_at_40_percent_noise(noisy_blobs, ce_accuracy):
    train_x, train_y, test_x, test_y = noisy_blobs
    ce = ce_accuracy
    torch.manual_seed(0)
    networks = (_mlp(), _mlp())
    optimisers = [torch.optim.Adam(net.parameters(), lr=1e-2) for net in networks]
    for step in range(1000):
        forget = forget_rate_schedule(step, final_rate=0.4, ramp_epochs=200)
        loss_1, loss_2, _ = coteaching_losses(
            cross_entropy(networks[0](train_x), train_y),
            cross_entropy(networks[1](train_x), train_y),
            forget,
        )
        for optimiser in optimisers:
            optimiser.zero_grad()
        (loss_1 + loss_2).backward()
        for optimiser in optimisers:
            optimiser.step()
    with torch.no_grad():
        accuracy = float((networks[0](test_x).argmax(1).numpy() == test_y).mean())
    assert accuracy - ce >= 0.15, (ce, accuracy)
