"""Classify blasts dock, through the plugin manifest on a real viewer (Xvfb): results against the
core, a threshold slider that runs no inference, Cancel, errors, grey and placed images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from napari.utils.status_messages import format_feature_value

from blastscope.models import shipped_bundles
from blastscope.models.classifier import load_classifier
from blastscope.pipeline import classify_stage, rethreshold
from blastscope.progress import run_steps
from blastscope.widgets._base import DEMO_TEXT
from blastscope.widgets._colours import VEIL_RGBA
from blastscope.widgets._session import DEMO_NOTICE
from forward_counter import ForwardCounter
from widget_cases import (
    BLAST_BUNDLE,
    MUTATION_BUNDLE,
    PLUGIN,
    add_smear,
    add_smear_with_cells,
    cancel_at_first_progress,
    choose_bundle,
    isolate_settings,
    notifications,
    smear,
    smear_cells,
    split_threshold,
    wait_for,
    wait_until,
)

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def _settings(monkeypatch, tmp_path):
    isolate_settings(monkeypatch, tmp_path)


def classify_dock(viewer, bundle: str = BLAST_BUNDLE):
    """The Classify blasts dock with a shipped bundle, or a bundle folder."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify blasts")
    if bundle in shipped_bundles():
        choose_bundle(widget, bundle)
    else:
        widget.bundles.folder.value = bundle
    return widget


def veil_alpha(veil, p_blast: float) -> float:
    """The veil's alpha over a cell of ``p_blast`` as drawn now (colormap over the limits)."""
    low, high = veil.contrast_limits
    return float(veil.colormap.map(np.array([(p_blast - low) / (high - low)]))[0, 3])


def test_classify_matches_the_core_and_reruns_in_place(make_napari_viewer_proxy, qtbot):
    viewer = make_napari_viewer_proxy()
    _, session = add_smear_with_cells(viewer)
    widget = classify_dock(viewer)
    counter = ForwardCounter(widget.bundles.load())
    widget.run()
    wait_for(widget, qtbot)

    expected = run_steps(
        classify_stage(smear().image, smear_cells(), load_classifier(BLAST_BUNDLE, "blast"))
    )
    features = session.layer.features
    assert list(features["index"]) == list(expected.cells["label"])
    np.testing.assert_allclose(features["p_blast"], expected.cells["p_blast"], atol=1e-6)
    assert features["is_blast"].tolist() == expected.cells["is_blast"].tolist()
    assert features["blast_override"].isna().all()
    recorded = session.result.provenance["blast"]
    assert recorded["sha256"] == expected.provenance["blast"]["sha256"]
    assert (
        recorded["threshold"] == widget.threshold.value == expected.provenance["blast"]["threshold"]
    )
    run = recorded["run"]
    assert run["params"] == {"device": "auto", "batch_size": 256}
    assert run["software"]["torch"]
    assert run["created"]

    colours = viewer.layers[session.colour_layer_name]
    label = int(features.loc[features["is_nucleated"], "label"].iloc[0])
    inside = np.argwhere(session.result.labels == label)[0]
    p_blast = features.set_index("label").loc[label, "p_blast"]
    assert colours.data[tuple(inside)] == pytest.approx(p_blast, abs=1e-6)
    assert np.isnan(colours.data[session.result.labels == 0]).all()
    assert colours.colorbar.visible

    names = [layer.name for layer in viewer.layers]
    widget.run()
    wait_for(widget, qtbot)
    assert [layer.name for layer in viewer.layers] == names
    assert counter.calls == 2


def test_threshold_slider_recolours_and_recounts_without_the_network(
    make_napari_viewer_proxy, qtbot
):
    viewer = make_napari_viewer_proxy()
    _, session = add_smear_with_cells(viewer)
    widget = classify_dock(viewer)
    counter = ForwardCounter(widget.bundles.load())
    widget.run()
    wait_for(widget, qtbot)
    classified = session.result
    counted = counter.counts
    p_blast = session.layer.features["p_blast"].to_numpy()
    start = session.threshold
    threshold = split_threshold(p_blast, start)
    low_cell, high_cell = float(np.nanmin(p_blast)), float(np.nanmax(p_blast))
    veil = viewer.layers[session.veil_layer_name]
    assert veil_alpha(veil, start) == 0.0
    assert veil_alpha(veil, start - 0.01) == pytest.approx(VEIL_RGBA[3])
    before = widget._counts.value

    widget.threshold.value = threshold
    features = session.layer.features
    expected_blasts = (p_blast >= threshold) & np.isfinite(p_blast)
    assert 0 < expected_blasts.sum() < np.isfinite(p_blast).sum()
    assert features["is_blast"].tolist() == expected_blasts.tolist()
    assert widget._counts.value != before
    assert f"{int(expected_blasts.sum())} blasts" in widget._counts.value
    assert veil_alpha(veil, low_cell) == pytest.approx(VEIL_RGBA[3])
    assert veil_alpha(veil, high_cell) == 0.0
    assert veil_alpha(veil, threshold) == 0.0  # p >= t is a blast: not dimmed

    wait_until(lambda: session.exact, qtbot)
    expected = rethreshold(classified, threshold)
    pd.testing.assert_frame_equal(session.result.cells, expected.cells, check_exact=True)
    assert session.result.provenance["blast"]["threshold"] == threshold
    assert counter.counts == counted


def test_cancel_mid_run_leaves_the_layers_unchanged(make_napari_viewer_proxy, qtbot):
    viewer = make_napari_viewer_proxy()
    _, session = add_smear_with_cells(viewer)
    widget = classify_dock(viewer)
    widget._batch_size.value = 2
    counter = ForwardCounter(widget.bundles.load())
    features = session.layer.features.copy()
    names = [layer.name for layer in viewer.layers]
    probe = cancel_at_first_progress(widget, "classify")
    widget.run()
    wait_for(widget, qtbot)
    assert probe.clicked.is_set()
    assert probe.aborted.is_set()
    total = int(np.ceil(features["is_nucleated"].sum() / 2))
    assert counter.calls == 1 < total  # stopped after the first batch
    pd.testing.assert_frame_equal(session.layer.features, features)
    assert [layer.name for layer in viewer.layers] == names
    assert not session.classified


def test_errors_are_shown_with_what_to_do(make_napari_viewer_proxy):
    viewer = make_napari_viewer_proxy()
    add_smear(viewer)
    widget = classify_dock(viewer, str(shipped_bundles()[MUTATION_BUNDLE]))  # wrong kind
    with notifications() as messages:
        widget.run()
    assert any("Choose a cells layer: segment the image first" in m for m in messages)
    assert len(viewer.layers) == 1

    image, session = add_smear_with_cells(viewer, name="second")
    widget._image.value = image
    with notifications() as messages:
        widget.run()
    assert any("is a mutation bundle, but a blast bundle is needed here" in m for m in messages)
    assert not session.classified


def test_grey_image_with_scale_and_translate_is_classified_in_place(
    make_napari_viewer_proxy, qtbot
):
    viewer = make_napari_viewer_proxy()
    image, session = add_smear_with_cells(viewer, grey=True, translate=(12.5, -4.0))
    widget = classify_dock(viewer)
    with notifications() as messages:
        widget.run()
        wait_for(widget, qtbot)
    assert any(m.startswith("Single-channel image: replicated to RGB.") for m in messages)
    assert session.classified
    for name in (session.layer.name, session.colour_layer_name, session.veil_layer_name):
        layer = viewer.layers[name]
        assert tuple(layer.scale) == tuple(image.scale)
        assert tuple(layer.translate) == (12.5, -4.0)


def test_hovering_a_cell_shows_its_probabilities(make_napari_viewer_proxy, qtbot):
    viewer = make_napari_viewer_proxy()
    _, session = add_smear_with_cells(viewer)
    widget = classify_dock(viewer)
    widget.run()
    wait_for(widget, qtbot)
    features = session.layer.features
    row = features[features["is_nucleated"]].iloc[0]
    inside = np.argwhere(session.result.labels == row["label"])[0]
    world = session.layer.data_to_world(inside)
    status = session.layer.get_status(world, world=True)["coordinates"]
    assert f"p_blast: {format_feature_value(row['p_blast'])}" in status
    assert status.index("p_blast") < status.index("area_px")


def test_a_demo_bundle_shows_the_not_for_diagnosis_notice(make_napari_viewer_proxy, qtbot):
    viewer = make_napari_viewer_proxy()
    _, session = add_smear_with_cells(viewer)
    widget = classify_dock(viewer, BLAST_BUNDLE)  # shipped bundles are demonstration models
    assert not widget._demo.native.isHidden()  # shown (the test window itself is hidden)
    assert widget._demo.value == DEMO_TEXT
    widget.run()
    wait_for(widget, qtbot)
    assert session.demo
    notice = viewer.canvas.overlays["text"]
    assert notice.visible
    assert notice.text == DEMO_NOTICE
