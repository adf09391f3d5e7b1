"""Screenshots of each dock's result on the synthetic NPM1 sample, opened through the plugin's
sample data and analysed through the tabbed dock (Xvfb). They go to a temporary folder, or to
the folder named by BLASTSCOPE_SCREENSHOTS: ``make screenshots`` refreshes the committed
docs/screenshots/ that the README shows."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtWidgets import QApplication

from blastscope.pipeline import DEFAULT_BLAST_MODEL, DEFAULT_MUTATION_MODEL
from widget_cases import PLUGIN, isolate_settings, wait_for

pytestmark = pytest.mark.gui

WINDOW_SIZE = (1366, 768)
"""A common laptop screen: the window and the tabbed dock must fit it."""


@pytest.fixture(autouse=True)
def _settings(monkeypatch, tmp_path):
    isolate_settings(monkeypatch, tmp_path)


@pytest.fixture
def screenshots(tmp_path) -> Path:
    folder = Path(os.environ.get("BLASTSCOPE_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.png"):
        stale.unlink()
    return folder


def save(viewer, folder: Path, name: str) -> np.ndarray:
    for _ in range(5):
        QApplication.processEvents()
    path = folder / f"{name}.png"
    shot = viewer.screenshot(str(path), canvas_only=False, flash=False)
    assert path.is_file()
    return shot


def test_screenshots_of_each_docks_result(make_napari_viewer_proxy, screenshots, tmp_path, qtbot):
    viewer = make_napari_viewer_proxy(show=True)
    viewer.window.resize(*WINDOW_SIZE)
    (image,) = viewer.open_sample(PLUGIN, "synthetic_npm1")
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, "blastscope (all steps)")
    shots = {}

    dock.setCurrentIndex(0)
    dock.segment.run()
    wait_for(dock.segment, qtbot)
    assert viewer.layers["synthetic smear (NPM1) cells"].features["is_nucleated"].sum() > 20
    shots["segment"] = save(viewer, screenshots, "segment")

    dock.setCurrentIndex(1)
    assert dock.classify.bundles.combo.value == DEFAULT_BLAST_MODEL  # the product's default
    dock.classify.run()
    wait_for(dock.classify, qtbot)
    session = dock.classify.session
    shots["classify"] = save(viewer, screenshots, "classify")

    dock.setCurrentIndex(2)
    assert dock.mutation.bundles.combo.value == DEFAULT_MUTATION_MODEL
    dock.mutation.run()
    wait_for(dock.mutation, qtbot)
    shots["mutation"] = save(viewer, screenshots, "mutation")
    dock.mutation.colour_by.value = "mutation class"
    shots["mutation_classes"] = save(viewer, screenshots, "mutation_classes")
    dock.mutation.colour_by.value = "p_blast"

    dock.setCurrentIndex(3)
    features = session.layer.features
    label = int(features.loc[features["is_nucleated"], "label"].iloc[0])
    row = session.row_of(label)
    table = dock.inspector.table
    table.selectRow(table.model_.row_of_frame_row(row))
    assert session.selected_label == label
    session.set_override(label, not bool(features["is_blast"].iloc[row]))
    shots["inspector"] = save(viewer, screenshots, "inspector")

    dock.setCurrentIndex(4)
    layer = session.layer
    layer.brush_size = 12
    layer.paint(tuple(features[["centroid_y", "centroid_x"]].iloc[row].round().astype(int)), 9999)
    dock.edit.run_button.native.click()
    wait_for(dock.edit, qtbot)
    assert 9999 in layer.features["label"].tolist()
    shots["edit"] = save(viewer, screenshots, "edit")

    dock.setCurrentIndex(5)
    dock.export.folder.value = str(tmp_path / "export")
    dock.export.run()
    wait_for(dock.export, qtbot)
    shots["export"] = save(viewer, screenshots, "export")

    assert image.name == "synthetic smear (NPM1)"
    for index in range(dock.count()):  # after every run, every tab fits the dock's width
        dock.setCurrentIndex(index)
        for _ in range(5):
            QApplication.processEvents()
        assert not dock.widget(index).horizontalScrollBar().isVisible(), dock.tabText(index)
    for name, shot in shots.items():
        assert shot.shape[0] >= 600, name
        assert shot.shape[1] >= 1000, name
        assert shot.shape[0] <= WINDOW_SIZE[1], name  # nothing forced the window taller
        assert shot[..., :3].std() > 20, name
