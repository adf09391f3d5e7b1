"""The headless review model: threshold, overrides with their audit, the review queue, the
slide-call preview against the exact result, saving and reopening a review."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from blastscope.export.report import write_report
from blastscope.pipeline import SlideCallSettings, rethreshold
from blastscope.review import REVIEW_FILE, Review, ReviewError, load_review, save_review
from export_cases import BLAST_THRESHOLD, classified_result


@pytest.fixture
def result():
    return classified_result()[0]


def test_threshold_moves_give_the_calls_counts_and_call_of_the_core(result):
    review = Review(result)
    assert review.threshold == BLAST_THRESHOLD
    for threshold in (0.2, 0.5, 0.8):
        review.set_threshold(threshold)
        exact = rethreshold(result, threshold)
        blast_call, is_blast = review.calls()
        assert np.array_equal(blast_call, exact.cells["blast_call"].to_numpy())
        assert np.array_equal(is_blast, exact.cells["is_blast"].to_numpy())
        assert review.counts()["blasts"] == exact.n_blasts
        assert list(review.mutation_calls()) == list(exact.cells["mutation_call"])
        preview = review.preview_call()
        assert preview.call == exact.slide_call.call
        assert preview.n_blasts == exact.slide_call.n_blasts
        for name, probability in preview.probabilities.items():
            assert probability == pytest.approx(exact.slide_call.probabilities[name])
    with pytest.raises(ReviewError, match="between 0 and 1"):
        review.set_threshold(5)


def test_overrides_are_audited_undone_and_carried_into_the_exact_result(result):
    review = Review(result)
    already = review.overridden()
    assert len(already) == 2  # the two calls export_cases made "by hand"
    label = next(
        int(label)
        for label, nucleated in zip(review.labels, review.nucleated, strict=True)
        if nucleated and int(label) not in already
    )
    row = review.row_of(label)
    model_call = bool(review.calls()[0][row])
    review.set_override(label, not model_call, time="2026-12-02T08:00:00Z")
    assert review.calls()[1][row] == (not model_call)
    record = review.audit[-1]
    assert (record.label, record.before, record.after, record.action) == (
        label,
        None,
        not model_call,
        "set",
    )
    assert record.threshold == BLAST_THRESHOLD
    assert record.time == "2026-12-02T08:00:00Z"
    exact = review.exact()
    assert exact.cells.loc[row, "is_blast"] == (not model_call)
    assert exact.cells.loc[row, "blast_override"] == (not model_call)
    assert exact.provenance["review"]["overridden_cells"] == 3
    assert exact.provenance["review"]["overrides"][-1]["label"] == label

    undone = review.undo_override()
    assert undone.label == label
    assert review.calls()[1][row] == model_call
    assert review.audit[-1].action == "undo"
    assert review.audit[-1].after is None
    assert review.undo_override() is None  # nothing set in this review is left to undo
    with pytest.raises(ReviewError, match="not in the cells table"):
        review.set_override(10**6, True)


def test_the_review_queue_gives_undecided_cells_nearest_the_threshold_first(result):
    review = Review(result)
    queue = review.uncertain_labels()
    rows = [review.row_of(label) for label in queue]
    distances = np.abs(review.p_blast[rows] - review.threshold)
    assert np.all(np.diff(distances) >= 0)
    assert not set(queue) & set(review.overridden())
    assert all(review.nucleated[rows])
    assert review.next_uncertain() == queue[0]
    assert review.next_uncertain(queue[0]) == queue[1]
    review.set_override(queue[0], True)
    assert queue[0] not in review.uncertain_labels()
    assert review.next_uncertain(queue[-1]) is None


def test_a_saved_review_reopens_as_it_was_and_the_report_lists_the_overrides(result, tmp_path):
    review = Review(result, settings=SlideCallSettings("mean", 3, 0.0))
    review.set_threshold(0.62)
    label = review.uncertain_labels()[0]
    review.set_override(label, True)
    exact = review.exact()
    folder = save_review(review, tmp_path / "field.review")

    reopened = load_review(folder)
    assert reopened.threshold == 0.62
    assert reopened.settings == SlideCallSettings("mean", 3, 0.0)
    assert reopened.overridden() == review.overridden()
    assert reopened.audit == review.audit
    assert np.array_equal(reopened.result.labels, result.labels)
    again = reopened.exact()
    assert again.slide_call.call == exact.slide_call.call
    assert again.slide_call.n_blasts == exact.slide_call.n_blasts
    assert again.n_blasts == exact.n_blasts

    image = classified_result()[1]
    report = write_report(tmp_path / "report.html", exact, image)[0]
    text = report.read_text(encoding="utf-8")
    assert "Blast calls changed by hand" in text
    assert f"cell {label}" in text

    with pytest.raises(Exception, match="already exists"):
        save_review(review, folder)
    record = json.loads((folder / REVIEW_FILE).read_text())
    record["format"] = "something else"
    (folder / REVIEW_FILE).write_text(json.dumps(record))
    with pytest.raises(ReviewError, match="cannot be read"):
        load_review(folder)
    with pytest.raises(ReviewError, match=r"No review\.json"):
        load_review(tmp_path)


def test_a_review_of_unclassified_cells_refuses_overrides(result):
    cells = result.cells.drop(columns=["p_blast", "blast_call", "is_blast", "blast_override"])
    review = Review(replace(result, cells=cells, slide_call=None))
    assert not review.classified
    assert review.uncertain_labels() == []
    assert review.preview_call() is None
    with pytest.raises(ReviewError, match="Classify the cells first"):
        review.set_override(int(review.labels[0]), True)


def test_undoing_a_change_of_a_cell_that_is_gone_moves_on_to_the_one_before(result):
    review = Review(result)
    first, second = review.uncertain_labels()[:2]
    review.set_override(first, True)
    review.set_override(second, False)
    del review._rows[second]  # the cell was edited away since
    assert review.undo_override().label == second
    assert review.undo_override().label == first  # not stuck on the vanished cell
    assert review.overridden().get(first) is None
