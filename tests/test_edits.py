"""Re-measuring and re-classifying only the cells a user edited (no display needed)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from blastscope.cells import measure_cells
from blastscope.edits import EditError, edited_cells, reclassify_stage
from blastscope.models.classifier import load_classifier
from blastscope.pipeline import SlideCallSettings, classify_stage, mutation_stage
from blastscope.progress import run_steps
from blastscope.result import SlideResult
from blastscope.synthetic import generate_field
from forward_counter import ForwardCounter


def test_edited_cells_names_reshaped_new_and_removed_labels():
    before = np.zeros((20, 20), np.int32)
    before[1:5, 1:5] = 1
    before[8:12, 8:12] = 2
    before[15:19, 15:19] = 3
    after = before.copy()
    after[1:5, 1:5] = 0  # cell 1 erased
    after[8:12, 11] = 4  # cell 2 split: 2 reshaped, 4 new
    edits = edited_cells(before, after)
    assert edits.changed.tolist() == [2, 4]
    assert edits.removed.tolist() == [1]
    assert edits.count == 3
    assert edited_cells(before, before.copy()).count == 0


def test_edited_labels_of_another_shape_are_refused_with_the_fix():
    with pytest.raises(EditError, match="edit the cells layer in place"):
        edited_cells(np.zeros((4, 4), np.int32), np.zeros((4, 5), np.int32))


@pytest.fixture(scope="module")
def analysed():
    """(image, classified result with a slide call, blast bundle, mutation bundle)."""
    blast, mutation = "blast-demo", "mutation-demo"
    field = generate_field(5, shape=(320, 320), mutation="NPM1", blast_fraction=0.6)
    cells = measure_cells(field.image, field.labels, field.pixel_size_um)
    result = SlideResult(field.labels, cells, field.pixel_size_um)
    result = run_steps(classify_stage(field.image, result, load_classifier(blast, "blast")))
    settings = SlideCallSettings(min_blasts=1)
    mutation_model = load_classifier(mutation, "mutation")
    result = run_steps(mutation_stage(field.image, result, mutation_model, settings=settings))
    return field.image, result, blast, mutation


def test_only_edited_cells_are_measured_and_classified_and_overrides_stay(analysed):
    image, result, blast_path, mutation_path = analysed
    cells = result.cells.copy()
    nucleated = cells.loc[cells["is_nucleated"], "label"].to_numpy()
    reshaped, untouched = int(nucleated[0]), int(nucleated[1])
    override = cells["blast_override"].copy()
    override[cells["label"] == reshaped] = False
    override[cells["label"] == untouched] = True
    cells["blast_override"] = override
    result = replace(result, cells=cells)
    labels = result.labels.copy()
    rows, cols = np.nonzero(labels == reshaped)
    labels[rows[: len(rows) // 3], cols[: len(cols) // 3]] = 0  # trim the cell

    blast = load_classifier(blast_path, "blast")
    mutation = load_classifier(mutation_path, "mutation")
    counters = [ForwardCounter(blast), ForwardCounter(mutation)]
    updated = run_steps(reclassify_stage(image, result, labels, blast, mutation, threshold=0.5))
    assert [counter.cells for counter in counters] == [1, 1]
    new = updated.cells.set_index("label")
    old = result.cells.set_index("label")
    assert new.loc[reshaped, "area_px"] < old.loc[reshaped, "area_px"]
    assert new.loc[reshaped, "blast_override"] == False  # noqa: E712 (pandas boolean)
    assert not new.loc[reshaped, "is_blast"]
    assert new.loc[untouched, "is_blast"]
    others = old.index != reshaped
    pd.testing.assert_frame_equal(new[others], old[others])
    np.testing.assert_array_equal(updated.labels, labels)
    assert updated.slide_call is not None
    assert updated.provenance["edits"] == [{"changed": [reshaped], "removed": []}]


def test_no_edit_returns_the_result_and_mutation_columns_need_the_model(analysed):
    image, result, blast_path, _ = analysed
    blast = load_classifier(blast_path, "blast")
    assert run_steps(reclassify_stage(image, result, result.labels.copy(), blast)) is result
    labels = result.labels.copy()
    labels[labels == labels.max()] = 0
    with pytest.raises(EditError, match="give the mutation model to re-classify edits"):
        run_steps(reclassify_stage(image, result, labels, blast))
    with pytest.raises(EditError, match="Labels must be integers"):
        run_steps(reclassify_stage(image, result, labels.astype(float), blast))


def test_cells_sorted_by_the_nucleated_model_re_classify_with_the_blast_model_alone():
    """p_nucleated (the nucleated model's) is not a mutation column: an edit needs no mutation
    model (before or after classifying), and the nucleated probability stays in the table."""
    from blastscope.pipeline import segment_stage
    from blastscope.segment import SegmentationParams

    field = generate_field(5, shape=(320, 320), blast_fraction=0.6)
    params = SegmentationParams(device="cpu")
    result = run_steps(segment_stage(field.image, field.pixel_size_um, params))
    assert "p_nucleated" in result.cells
    trimmed = result.labels.copy()
    trimmed[trimmed == 1] = 0
    edited = run_steps(reclassify_stage(field.image, result, trimmed))  # before classifying
    assert 1 not in edited.cells["label"].to_numpy()
    blast = load_classifier("blast-demo", "blast")
    result = run_steps(classify_stage(field.image, result, blast))
    assert "p_nucleated" in result.cells
    labels = result.labels.copy()
    removed = int(labels.max())
    labels[labels == removed] = 0
    updated = run_steps(reclassify_stage(field.image, result, labels, blast))
    assert updated.cells["p_nucleated"].notna().all()
    assert removed not in updated.cells["label"].to_numpy()
