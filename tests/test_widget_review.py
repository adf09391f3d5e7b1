"""A review saved from the Export dock and reopened in a new viewer (Xvfb): threshold,
overrides and their audit come back; the queue of uncertain cells walks the cells nearest the
threshold first."""

from __future__ import annotations

import numpy as np
import pytest

from blastscope.widgets._session import session_for
from widget_cases import (
    PLUGIN,
    add_classified_smear,
    add_smear,
    isolate_settings,
    notifications,
    wait_for,
)

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def _settings(monkeypatch, tmp_path):
    isolate_settings(monkeypatch, tmp_path)


def test_a_saved_review_reopens_with_threshold_overrides_and_audit(
    make_napari_viewer_proxy, tmp_path, qtbot
):
    viewer = make_napari_viewer_proxy()
    session, classify = add_classified_smear(viewer, qtbot)
    classify.threshold.value = 0.7
    _, inspector = viewer.window.add_plugin_dock_widget(PLUGIN, "Cell inspector and overrides")
    inspector.next_uncertain.native.click()
    first = session.selected_label
    p_blast = session.layer.features.set_index("label")["p_blast"]
    nucleated = session.layer.features.set_index("label")["is_nucleated"]
    distances = (p_blast[nucleated] - 0.7).abs()
    assert distances[first] == pytest.approx(distances.min())
    inspector.mark_blast.native.click()
    inspector.next_uncertain.native.click()
    second = session.selected_label
    assert second != first
    assert distances[second] >= distances[first]
    inspector.mark_non_blast.native.click()
    blasts = session.counts()["blasts"]

    _, export = viewer.window.add_plugin_dock_widget(PLUGIN, "Export")
    export.folder.value = str(tmp_path)
    export.save_review_button.native.click()
    wait_for(export, qtbot)
    folder = tmp_path / "smear.review"
    assert export.paths == [folder]
    with notifications() as messages:
        export.save_review_button.native.click()  # exists: refused with the fix
    assert any("already exists" in message for message in messages)

    again = make_napari_viewer_proxy()
    add_smear(again)
    (layer,) = again.open(str(folder), plugin=PLUGIN)
    reopened = session_for(again, layer)
    assert reopened.threshold == pytest.approx(0.7)
    assert reopened.review.overridden() == {first: True, second: False}
    assert [record.label for record in reopened.review.audit] == [first, second]
    assert reopened.counts()["blasts"] == blasts
    assert np.array_equal(np.asarray(layer.data), session.result.labels)
    assert reopened.colour_layer_name in again.layers  # the overlays come back
    assert tuple(layer.scale) == tuple(session.layer.scale)
