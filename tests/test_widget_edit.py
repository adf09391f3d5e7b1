"""Edit and re-classify dock, through the plugin manifest on a real viewer (Xvfb): a painted cell
is measured and classified again (only the edited cells), by the button and automatically."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from blastscope.edits import edited_cells, reclassify_stage
from blastscope.models.classifier import load_classifier
from blastscope.progress import run_steps
from forward_counter import ForwardCounter
from widget_cases import (
    BLAST_BUNDLE,
    MUTATION_BUNDLE,
    PLUGIN,
    add_classified_smear,
    choose_bundle,
    isolate_settings,
    notifications,
    smear,
    wait_for,
    wait_until,
)

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def _settings(monkeypatch, tmp_path):
    isolate_settings(monkeypatch, tmp_path)


def analysed_viewer(make_viewer, qtbot):
    """(viewer, session, classify, mutation, edit docks): the smear classified, mutation run."""
    viewer = make_viewer()
    session, classify = add_classified_smear(viewer, qtbot)
    _, mutation = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict mutation")
    choose_bundle(mutation, MUTATION_BUNDLE)
    mutation.min_blasts.value = 5
    mutation.run()
    wait_for(mutation, qtbot)
    _, edit = viewer.window.add_plugin_dock_widget(PLUGIN, "Edit and re-classify")
    return viewer, session, classify, mutation, edit


def deepest_pixel(labels: np.ndarray, label: int) -> tuple[int, int]:
    mask = labels == label
    return np.unravel_index(np.argmax(ndi.distance_transform_edt(mask)), mask.shape)


def test_painting_a_cell_reclassifies_only_the_edited_cells(make_napari_viewer_proxy, qtbot):
    _, session, classify, mutation, edit = analysed_viewer(make_napari_viewer_proxy, qtbot)
    before = session.result
    features = session.layer.features
    label = int(features.loc[features["is_nucleated"], "label"].iloc[2])
    new_label = int(before.labels.max()) + 1
    layer = session.layer
    layer.brush_size = 14
    layer.paint(deepest_pixel(before.labels, label), new_label)  # split the cell in two
    painted = np.array(layer.data, copy=True)
    edits = edited_cells(before.labels, painted)
    assert edits.changed.tolist() == [label, new_label]
    assert "cells edited" in edit.status.value
    classifiers = (classify.classifier, mutation.classifier)
    counters = [ForwardCounter(c) for c in classifiers]

    edit.run_button.native.click()
    wait_for(edit, qtbot)

    expected = run_steps(
        reclassify_stage(
            smear().image,
            before,
            painted,
            load_classifier(BLAST_BUNDLE, "blast"),
            load_classifier(MUTATION_BUNDLE, "mutation"),
            threshold=session.threshold,
        )
    )
    pd.testing.assert_frame_equal(session.result.cells, expected.cells, check_exact=False)
    assert session.result.slide_call.n_blasts == expected.slide_call.n_blasts
    np.testing.assert_array_equal(session.result.labels, painted)
    np.testing.assert_array_equal(layer.data, painted)
    nucleated = int(expected.cells.set_index("label").loc[edits.changed, "is_nucleated"].sum())
    assert nucleated >= 1
    for counter in counters:
        assert counter.counts == (1, nucleated)  # only the edited cells, in one pass
    untouched = ~before.cells["label"].isin(edits.changed)
    kept = session.result.cells.set_index("label").loc[before.cells.loc[untouched, "label"]]
    pd.testing.assert_frame_equal(
        kept.reset_index(), before.cells.loc[untouched].reset_index(drop=True)
    )
    assert new_label in layer.features["label"].tolist()
    assert edit.status.value == "2 cells re-classified, 0 removed"


def test_auto_mode_reclassifies_after_an_erase(make_napari_viewer_proxy, qtbot):
    _, session, _, _, edit = analysed_viewer(make_napari_viewer_proxy, qtbot)
    edit.delay_ms.value = 200
    edit.auto.value = True
    features = session.layer.features
    label = int(features.loc[features["is_nucleated"], "label"].iloc[0])
    count = len(features)
    session.layer.fill(deepest_pixel(session.result.labels, label), 0)
    wait_until(lambda: len(session.layer.features) == count - 1, qtbot)
    wait_for(edit, qtbot)
    assert label not in session.layer.features["label"].tolist()
    assert label not in session.result.labels
    assert edit.status.value == "0 cells re-classified, 1 removed"
    assert session.result.provenance["edits"][-1] == {"changed": [], "removed": [label]}


def test_napari_undo_of_an_edit_updates_the_dock_and_auto_mode(make_napari_viewer_proxy, qtbot):
    _, session, _, _, edit = analysed_viewer(make_napari_viewer_proxy, qtbot)
    layer = session.layer
    features = layer.features
    label = int(features.loc[features["is_nucleated"], "label"].iloc[0])
    layer.fill(deepest_pixel(session.result.labels, label), 0)
    assert edit.status.value == "cells edited: re-classify to update them"
    layer.undo()  # napari's Ctrl-Z: the labels are as analysed again
    assert edit.pending() == 0
    assert edit.status.value == "no edited cell: the table is up to date"

    edit.delay_ms.value = 200
    edit.auto.value = True
    count = len(features)
    layer.fill(deepest_pixel(session.result.labels, label), 0)
    wait_until(lambda: len(session.layer.features) == count - 1, qtbot)
    wait_for(edit, qtbot)
    layer.undo()  # brings the erased cell back: auto mode re-classifies it
    wait_until(lambda: len(session.layer.features) == count, qtbot)
    wait_for(edit, qtbot)
    assert label in session.result.labels


def test_reclassify_without_edits_says_so(make_napari_viewer_proxy, qtbot):
    _, session, _, _, edit = analysed_viewer(make_napari_viewer_proxy, qtbot)
    before = session.result
    with notifications() as messages:
        edit.run_button.native.click()
    assert messages == []
    assert edit.status.value == "no edited cell: the table is up to date"
    assert session.result is before
