"""Export dock, through the plugin manifest on a real viewer (Xvfb): the chosen formats written
with the user's overrides and current threshold, the paths shown, and refusals that say what
to do."""

from __future__ import annotations

import json

import pytest

from blastscope.export import export_paths, read_cells_table, read_geojson
from widget_cases import (
    BLAST_BUNDLE,
    PLUGIN,
    add_smear_with_cells,
    choose_bundle,
    expected_blasts,
    isolate_settings,
    notifications,
    wait_for,
)

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def _settings(monkeypatch, tmp_path):
    isolate_settings(monkeypatch, tmp_path)


def export_dock(viewer, folder, formats):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Export")
    if folder is not None:
        widget.folder.value = str(folder)
    for name, box in widget.formats.items():
        box.value = name in formats
    return widget


def test_export_writes_the_chosen_formats_with_the_users_calls(
    make_napari_viewer_proxy, tmp_path, qtbot
):
    viewer = make_napari_viewer_proxy()
    _, session = add_smear_with_cells(viewer)
    _, classify = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify blasts")
    choose_bundle(classify, BLAST_BUNDLE)
    classify.run()
    wait_for(classify, qtbot)
    classify.threshold.value = 0.9
    features = session.layer.features
    label = int(features.loc[features["is_nucleated"] & ~features["is_blast"], "label"].iloc[0])
    session.set_override(label, True)
    blasts = expected_blasts(session.layer.features, 0.9)
    out = tmp_path / "out"

    widget = export_dock(viewer, out, ("csv", "geojson"))
    assert widget.stem.value == "smear"
    widget.run_button.native.click()
    wait_for(widget, qtbot)

    targets = export_paths(out, "smear")
    expected = [targets["geojson"], targets["csv"], out / "smear_cells.csv.json", targets["run"]]
    assert sorted(widget.paths) == sorted(expected)
    assert all(path.is_file() for path in expected)
    for path in expected:
        assert str(path) in widget.written.text()
    table, sidecar = read_cells_table(targets["csv"])
    cells = table.set_index("label")
    assert cells.loc[label, "blast_override"]
    assert cells.loc[label, "is_blast"]
    assert int(cells["is_blast"].sum()) == blasts
    assert sidecar["provenance"]["blast"]["threshold"] == 0.9
    _, geo_cells, _ = read_geojson(targets["geojson"])
    assert geo_cells.set_index("label").loc[label, "blast_override"]

    # a second export draws the cells as points, one per nucleated cell
    widget.overwrite.value = True
    widget.geojson_shapes.value = "centroid"
    widget.run_button.native.click()
    wait_for(widget, qtbot)
    features = json.loads(targets["geojson"].read_text())["features"]
    points = [f for f in features if f["properties"]["objectType"] == "detection"]
    assert {f["geometry"]["type"] for f in points} == {"Point"}
    assert len(points) == int(table["is_nucleated"].sum())


def test_export_refusals_say_what_to_do(make_napari_viewer_proxy, tmp_path, qtbot):
    viewer = make_napari_viewer_proxy()
    add_smear_with_cells(viewer)
    widget = export_dock(viewer, None, ("csv",))
    with notifications() as messages:
        widget.run_button.native.click()
    assert "Choose the folder to export to." in messages

    widget.folder.value = str(tmp_path)
    widget.run_button.native.click()
    wait_for(widget, qtbot)
    with notifications() as messages:
        widget.run_button.native.click()
    csv = export_paths(tmp_path, "smear")["csv"]
    fix = "tick 'replace existing files', or choose another folder or file name."
    assert f"{csv} already exists: {fix}" in messages
    assert not widget.runner.running

    widget.overwrite.value = True
    widget.run_button.native.click()
    wait_for(widget, qtbot)
    assert csv in widget.paths
