"""The docks follow the user's image (Xvfb, real viewer): a second image's new cells layer, the
layer the user selects, a hidden layer asks first; Segment shows the pixel size it will use and
refuses a second run while one is going."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtWidgets import QApplication, QMessageBox

from blastscope.widgets._session import show_result
from widget_cases import (
    BLAST_BUNDLE,
    PLUGIN,
    add_smear,
    add_smear_with_cells,
    choose_bundle,
    isolate_settings,
    notifications,
    smear,
    smear_cells,
    wait_for,
    wait_until,
)

pytestmark = pytest.mark.gui

CELL_DOCKS = (
    "Classify blasts",
    "Predict mutation",
    "Cell inspector and overrides",
    "Edit and re-classify",
    "Export",
)


@pytest.fixture(autouse=True)
def _settings(monkeypatch, tmp_path):
    isolate_settings(monkeypatch, tmp_path)


def test_every_dock_follows_the_new_image_and_the_cells_layer_the_user_selects(
    make_napari_viewer_proxy,
):
    viewer = make_napari_viewer_proxy()
    first_image, first = add_smear_with_cells(viewer)
    docks = [viewer.window.add_plugin_dock_widget(PLUGIN, name)[1] for name in CELL_DOCKS]
    assert all(dock.cells_layer().name == first.layer.name for dock in docks)

    second_image = add_smear(viewer, name="second smear")
    second = show_result(viewer, second_image, smear_cells())  # what Segment cells leaves
    assert second.layer.name != first.layer.name
    for dock in docks:
        assert dock.cells_layer().name == second.layer.name, dock
        assert dock.image_layer().name == second_image.name, dock

    viewer.layers.selection.active = first_image  # an image: the cells docks stay
    assert all(dock.cells_layer().name == second.layer.name for dock in docks)
    viewer.layers.selection.active = first.layer  # a cells layer: they all switch
    for dock in docks:
        assert dock.cells_layer().name == first.layer.name, dock
        assert dock.image_layer().name == first_image.name, dock


def test_classify_right_after_a_second_image_works_on_it_and_mutation_sees_it(
    make_napari_viewer_proxy,
    qtbot,
):
    viewer = make_napari_viewer_proxy()
    add_smear_with_cells(viewer)
    _, classify = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify blasts")
    _, mutation = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict mutation")
    choose_bundle(classify, BLAST_BUNDLE)
    image = add_smear(viewer, name="second smear")
    second = show_result(viewer, image, smear_cells())
    classify.run()
    wait_for(classify, qtbot)
    assert second.classified
    assert mutation.session is second
    with notifications() as messages:
        mutation.run()
        wait_for(mutation, qtbot)
    assert not any("Classify blasts first" in message for message in messages)


def test_running_on_a_hidden_layer_asks_first(make_napari_viewer_proxy, monkeypatch, qtbot):
    viewer = make_napari_viewer_proxy()
    _, session = add_smear_with_cells(viewer)
    _, classify = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify blasts")
    choose_bundle(classify, BLAST_BUNDLE)
    session.layer.visible = False
    asked = []

    def answer(reply):
        def question(parent, title, text, *args, **kwargs):
            asked.append(text)
            return reply

        return question

    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.No))
    with notifications() as messages:
        classify.run()
    assert not classify.runner.running
    assert session.layer.name in asked[-1]
    assert "hidden" in asked[-1]
    assert any("Not run" in message for message in messages)

    monkeypatch.setattr(QMessageBox, "question", answer(QMessageBox.StandardButton.Yes))
    classify.run()
    wait_for(classify, qtbot)
    assert session.classified


def test_segment_shows_the_pixel_size_in_use_and_refuses_a_second_run(
    make_napari_viewer_proxy, qtbot
):
    viewer = make_napari_viewer_proxy()
    image = add_smear(viewer)
    _, segment = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment cells")
    size = smear().pixel_size_um
    assert segment._pixel_source.value == f"pixel size {size:g} µm (from the image)"
    segment._pixel_size.value = 0.3
    assert segment._pixel_source.value == "pixel size 0.3 µm (given here)"
    segment._pixel_size.value = 0.0
    other = viewer.add_image(np.full((64, 64, 3), 230, np.uint8), rgb=True, name="no size")
    assert segment._image.value.name == other.name  # the selected image is the one to segment
    assert "unknown" in segment._pixel_source.value
    viewer.layers.selection.active = image
    assert segment._image.value.name == image.name

    segment.run()
    assert segment.runner.running
    assert not segment._recompute_button.enabled
    with notifications() as messages:
        segment.run()  # a second run while the first goes: a message, no exception
    assert any("still running" in message for message in messages)
    segment.runner.cancel()
    wait_for(segment, qtbot)
    assert segment._recompute_button.enabled


def test_the_docks_are_in_napari_menus_by_what_they_do(make_napari_viewer_proxy):
    from napari._app_model import get_app_model

    make_napari_viewer_proxy()
    menus = get_app_model().menus

    def commands(menu: str) -> set[str]:
        return {item.command.id for item in menus.get_menu(menu) if hasattr(item, "command")}

    assert "napari-blastscope.segment_widget" in commands("napari/layers/segment")
    assert {"napari-blastscope.classify_widget", "napari-blastscope.mutation_widget"} <= commands(
        "napari/layers/classify"
    )
    assert {"napari-blastscope.inspector_widget", "napari-blastscope.edit_widget"} <= commands(
        "napari/layers/annotate"
    )
    assert "napari-blastscope.export_widget" in commands("napari/file/io_utilities")


def test_columns_other_plugins_add_to_the_features_survive_our_updates(
    make_napari_viewer_proxy,
    qtbot,
):
    viewer = make_napari_viewer_proxy()
    _, session = add_smear_with_cells(viewer)
    _, classify = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify blasts")
    choose_bundle(classify, BLAST_BUNDLE)
    features = session.layer.features.copy()
    features["cluster"] = np.arange(len(features)) % 3  # what another plugin adds
    session.layer.features = features
    classify.run()
    wait_for(classify, qtbot)
    classify.threshold.value = 0.8
    session.flush()
    features = session.layer.features
    assert "p_blast" in features
    assert (features["cluster"].to_numpy() == np.arange(len(features)) % 3).all()
    assert session.layer.metadata.keys().isdisjoint({"blastscope_session"})


def test_closing_the_viewer_mid_run_stops_the_worker_without_a_traceback(
    make_napari_viewer_proxy, monkeypatch, qtbot
):
    import sys

    raised = []
    monkeypatch.setattr(sys, "excepthook", lambda *info: raised.append(info))
    viewer = make_napari_viewer_proxy()
    add_smear_with_cells(viewer)
    _, classify = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify blasts")
    choose_bundle(classify, BLAST_BUNDLE)
    classify._batch_size.value = 1  # many batches: the run is still going when the viewer closes
    runner = classify.runner
    classify.run()
    assert runner.running
    worker = runner.worker
    viewer.close()
    wait_until(lambda: not worker.is_running, qtbot, timeout_s=60)
    for _ in range(20):
        QApplication.processEvents()
    assert raised == []
    assert worker.abort_requested  # stopped, not run to the end


def test_painting_during_a_run_is_kept_when_the_run_returns(make_napari_viewer_proxy, qtbot):
    viewer = make_napari_viewer_proxy()
    _, session = add_smear_with_cells(viewer)
    _, classify = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify blasts")
    choose_bundle(classify, BLAST_BUNDLE)
    classify._batch_size.value = 4
    classify.run()
    layer = session.layer
    layer.brush_size = 10
    layer.paint((20, 20), int(np.asarray(layer.data).max()) + 1)  # a new cell, mid-run
    painted = np.array(layer.data, copy=True)
    with notifications() as messages:
        wait_for(classify, qtbot)
    assert np.array_equal(np.asarray(layer.data), painted)
    assert any("your edits are kept" in message for message in messages)
    assert session.classified
