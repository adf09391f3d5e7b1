"""Cell inspector and overrides dock, through the plugin manifest on a real viewer (Xvfb): a
mouse click on a cell, table rows selecting cells, overrides by key and button that change the
counts, survive threshold changes and can be undone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from qtpy.QtCore import Qt
from scipy import ndimage as ndi

from blastscope.crops import extract_crops
from blastscope.widgets._colours import FORCED_BLAST
from widget_cases import (
    PLUGIN,
    add_classified_smear,
    expected_blasts,
    isolate_settings,
    notifications,
    smear,
    wait_until,
)

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def _settings(monkeypatch, tmp_path):
    isolate_settings(monkeypatch, tmp_path)


def inspected_viewer(make_napari_viewer, qtbot):
    """(viewer, session, classify dock, inspector dock) with the smear's cells classified."""
    viewer = make_napari_viewer(show=True)  # shown: canvas clicks map to the right place
    session, classify = add_classified_smear(viewer, qtbot)
    _, inspector = viewer.window.add_plugin_dock_widget(PLUGIN, "Cell inspector and overrides")
    return viewer, session, classify, inspector


def nucleated_labels(session) -> list[int]:
    features = session.layer.features
    return features.loc[features["is_nucleated"], "label"].astype(int).tolist()


def click_cell(viewer, session, label: int, qtbot) -> None:
    """Centre the view on the deepest pixel of cell ``label`` and click the canvas there."""
    mask = session.result.labels == label
    depth = ndi.distance_transform_edt(mask)
    inside = np.unravel_index(np.argmax(depth), mask.shape)
    viewer.scene.camera.zoom = 4.0
    viewer.scene.camera.center = tuple(session.layer.data_to_world(inside))
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=canvas.rect().center())


def press(viewer, key: Qt.Key, qtbot) -> None:
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    qtbot.keyClick(canvas, key, Qt.KeyboardModifier.ShiftModifier)


def test_clicking_a_cell_shows_its_crop_and_probabilities_and_selects_its_row(
    make_napari_viewer, qtbot
):
    viewer, session, classify, inspector = inspected_viewer(make_napari_viewer, qtbot)
    label = nucleated_labels(session)[3]
    click_cell(viewer, session, label, qtbot)

    assert session.selected_label == label
    row = session.row_of(label)
    assert inspector.table.selected_frame_row() == row
    features = session.layer.features
    assert f"Cell {label}" in inspector.info.text()
    assert f"p_blast {features['p_blast'].iloc[row]:.3f}" in inspector.info.text()
    assert inspector.crop.pixmap().width() == 192
    classifier = classify.classifier
    expected = extract_crops(
        smear().image,
        features[["centroid_y", "centroid_x"]].to_numpy()[row : row + 1],
        pixel_size_um=session.result.pixel_size_um,
        window_um=classifier.input.window_um,
        out_pixel_size_um=classifier.input.pixel_size_um,
        labels=session.result.labels,
        cell_labels=np.array([label]),
        mask_to_cell=classifier.input.mask_to_cell,
    )[0]
    crop = inspector.cell_crop(row)  # cut from the cell's neighbourhood: float32 rounding only
    assert crop.shape == expected.shape
    assert np.abs(crop.astype(int) - expected).max() <= 1


def test_a_table_row_selects_and_centres_its_cell(make_napari_viewer, qtbot):
    viewer, session, _, inspector = inspected_viewer(make_napari_viewer, qtbot)
    table = inspector.table
    # the table opens with the likeliest blasts first (not the red cells of the lowest labels)
    p_blast = session.layer.features["p_blast"].to_numpy()
    assert int(table.model_.order[0]) == int(np.nanargmax(p_blast))
    assert np.isnan(p_blast[table.model_.order[-1]])  # unclassified objects last
    table.horizontalHeader().sectionClicked.emit(0)  # the user's own order is kept from then on
    table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
    table.set_frame(session.layer.features)
    assert table.horizontalHeader().sortIndicatorSection() == 0
    table.sortByColumn(
        list(session.layer.features.columns).index("p_blast"), Qt.SortOrder.DescendingOrder
    )
    table.selectRow(0)
    features = session.layer.features
    top = int(features["p_blast"].idxmax())
    assert session.selected_label == int(features["label"].iloc[top])
    centre = session.layer.data_to_world(
        (features["centroid_y"].iloc[top], features["centroid_x"].iloc[top])
    )
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], centre)
    assert f"Cell {session.selected_label}" in inspector.info.text()


def test_an_override_changes_the_counts_survives_threshold_changes_and_undoes(
    make_napari_viewer, qtbot
):
    viewer, session, classify, inspector = inspected_viewer(make_napari_viewer, qtbot)
    features = session.layer.features
    model_calls = features.set_index("label")["blast_call"]
    first, second = (
        int(label)
        for label in features.loc[~features["blast_call"] & features["is_nucleated"], "label"][:2]
    )
    blasts = session.counts()["blasts"]
    click_cell(viewer, session, first, qtbot)
    press(viewer, Qt.Key.Key_B, qtbot)

    features = session.layer.features.set_index("label")
    assert features.loc[first, "blast_override"]
    assert not features.loc[first, "blast_call"]
    assert features.loc[first, "is_blast"]
    assert session.counts()["blasts"] == blasts + 1
    assert f"{blasts + 1} blasts" in classify._counts.value
    veil = viewer.layers[session.veil_layer_name]
    assert (veil.data[session.result.labels == first] == FORCED_BLAST).all()

    for threshold in (1.0, 0.0, session.threshold):
        classify.threshold.value = threshold
        wait_until(lambda: session.exact, qtbot)
        cells = session.result.cells.set_index("label")
        assert cells.loc[first, "blast_override"]
        assert cells.loc[first, "is_blast"]
        assert session.counts()["blasts"] == expected_blasts(session.layer.features, threshold)
    assert session.counts()["blasts"] == blasts + 1

    session.select(second)
    inspector.mark_blast.native.click()
    assert session.counts()["blasts"] == blasts + 2
    press(viewer, Qt.Key.Key_U, qtbot)
    assert session.counts()["blasts"] == blasts + 1
    inspector.undo.native.click()
    wait_until(lambda: session.exact, qtbot)
    assert session.counts()["blasts"] == blasts
    assert session.result.cells["blast_override"].isna().all()
    assert session.result.cells.set_index("label")["blast_call"].equals(model_calls)
    assert pd.isna(session.layer.features.set_index("label").loc[first, "blast_override"])


def test_override_without_a_selected_cell_says_what_to_do(make_napari_viewer, qtbot):
    _, _, _, inspector = inspected_viewer(make_napari_viewer, qtbot)
    with notifications() as messages:
        inspector.mark_blast.native.click()
    assert "Select a cell first: click it in pan/zoom mode or pick a table row." in messages
