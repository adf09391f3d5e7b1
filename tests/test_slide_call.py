import json

import numpy as np
import pandas as pd
import pytest

from blastscope.slide_call import SlideCallError, call_slide, pool_probabilities

CLASSES = ("PML::RARA", "NPM1", "CBFB::MYH11", "RUNX1::RUNX1T1")


def _table(probabilities, n_other_nucleated=0, n_red=0):
    """Blasts with the given probabilities (N, 4), plus non-blast nucleated and red cells."""
    probabilities = np.asarray(probabilities, dtype=float)
    n_blasts = len(probabilities)
    n = n_blasts + n_other_nucleated + n_red
    table = pd.DataFrame(
        {
            "label": np.arange(1, n + 1),
            "is_nucleated": [True] * (n_blasts + n_other_nucleated) + [False] * n_red,
            "is_blast": [True] * n_blasts + [False] * (n - n_blasts),
        }
    )
    for index, name in enumerate(CLASSES):
        column = np.full(n, np.nan)
        column[:n_blasts] = probabilities[:, index]
        table[f"p_{name}"] = column
    return table


def _random_probabilities(n, seed, favoured=1):
    rng = np.random.default_rng(seed)
    alpha = np.ones(4)
    alpha[favoured] = 4.0
    return rng.dirichlet(alpha, size=n)


SMALL = [[0.7, 0.1, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1], [0.5, 0.3, 0.1, 0.1]]


def test_mean_pooling_matches_the_hand_computed_mean():
    call = call_slide(_table(SMALL, n_other_nucleated=2, n_red=5), CLASSES, min_blasts=3)
    assert call.probabilities == pytest.approx(
        {"PML::RARA": 1.3 / 3, "NPM1": 1.0 / 3, "CBFB::MYH11": 0.4 / 3, "RUNX1::RUNX1T1": 0.1}
    )
    assert call.call == "PML::RARA"
    assert call.n_blasts == 3
    assert call.n_nucleated == 5
    assert call.blast_percentage == pytest.approx(60.0)
    assert not call.abstained
    assert call.reason == ""


def test_geometric_pooling_matches_the_hand_computed_renormalised_product():
    small = np.array(SMALL)
    geometric = np.prod(small, axis=0) ** (1 / 3)
    expected = geometric / geometric.sum()
    np.testing.assert_allclose(pool_probabilities(small, "geometric"), expected)
    call = call_slide(_table(SMALL), CLASSES, pooling="geometric", min_blasts=3)
    assert [call.probabilities[name] for name in CLASSES] == pytest.approx(expected)
    assert call.pooling == "geometric"


def test_geometric_pooling_punishes_a_class_that_one_cell_rules_out():
    # Class 0 averages highest, but one cell all but rules it out.
    probabilities = [[0.9, 0.1 - 1e-4, 0.0, 1e-4], [0.9, 0.1, 0.0, 0.0], [1e-6, 0.5, 0.5, 0.0]]
    probabilities = np.clip(np.array(probabilities), 1e-6, None)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    mean = pool_probabilities(probabilities, "mean")
    geometric = pool_probabilities(probabilities, "geometric")
    assert mean.argmax() == 0
    assert geometric.argmax() == 1


def test_interval_contains_the_estimate_and_narrows_with_more_cells():
    widths = []
    for n in (30, 600):
        call = call_slide(_table(_random_probabilities(n, seed=n)), CLASSES)
        for name in CLASSES:
            low, high = call.interval[name]
            assert low <= call.probabilities[name] <= high
        widths.append(call.interval["NPM1"][1] - call.interval["NPM1"][0])
    assert widths[1] < widths[0] / 2


def test_bootstrap_is_seeded():
    table = _table(_random_probabilities(50, seed=1))
    first = call_slide(table, CLASSES, seed=7).interval
    assert call_slide(table, CLASSES, seed=7).interval == first
    assert call_slide(table, CLASSES, seed=8).interval != first


def test_too_few_blasts_abstain_with_the_count():
    call = call_slide(_table(_random_probabilities(12, seed=0), n_other_nucleated=40), CLASSES)
    assert call.abstained
    assert call.call is None
    assert call.reason == "insufficient blasts: 12 < 20"
    assert call.probabilities["NPM1"] > 0  # still reported
    assert call.blast_percentage == pytest.approx(100 * 12 / 52)


def test_uncertain_slide_abstains_below_min_probability():
    flat = np.full((40, 4), 0.25) + np.array([0.06, -0.02, -0.02, -0.02])
    call = call_slide(_table(flat), CLASSES, min_probability=0.4)
    assert call.abstained
    assert call.reason == "top probability 0.31 < 0.40"
    assert call_slide(_table(flat), CLASSES, min_probability=0.3).call == "PML::RARA"


def test_several_images_of_one_slide_pool_together():
    first = _random_probabilities(15, seed=2)
    second = _random_probabilities(15, seed=3)
    separate = call_slide([_table(first, n_red=3), _table(second, n_other_nucleated=5)], CLASSES)
    together = call_slide(_table(np.vstack([first, second]), n_other_nucleated=5), CLASSES)
    assert separate.probabilities == pytest.approx(together.probabilities)
    assert separate.n_blasts == 30
    assert separate.n_images == 2
    assert separate.call == "NPM1"


def test_no_blasts_give_no_call_and_json_ready_output():
    call = call_slide(_table(np.zeros((0, 4)), n_other_nucleated=10, n_red=4), CLASSES)
    assert call.abstained
    assert call.reason == "insufficient blasts: 0 < 20"
    assert call.blast_percentage == 0.0
    data = call.to_dict()
    json.dumps(data, allow_nan=False)
    assert data["probabilities"]["NPM1"] is None
    assert data["interval"]["NPM1"] == [None, None]
    assert data["classes"] == list(CLASSES)


def test_bad_inputs_are_refused_with_the_fix():
    table = _table(SMALL)
    with pytest.raises(SlideCallError, match=r"lacks p_KMT2A; run predict\.classify_blasts_steps"):
        call_slide(table, ["KMT2A", "NPM1"])
    with pytest.raises(SlideCallError, match="pooling must be one of mean, geometric"):
        call_slide(table, CLASSES, pooling="median")
    with pytest.raises(SlideCallError, match="min_probability must be between 0 and 1"):
        call_slide(table, CLASSES, min_probability=2)
    with pytest.raises(SlideCallError, match="non-empty list of them"):
        call_slide([], CLASSES)
