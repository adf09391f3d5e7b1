"""Predict mutation dock, through the plugin manifest on a real viewer (Xvfb): the slide-call
panel against the core, re-pooling without inference, the mutation-class view, Cancel, errors."""

from __future__ import annotations

import numpy as np
import pytest

from blastscope.models.classifier import load_classifier
from blastscope.pipeline import SlideCallSettings, mutation_stage, recall_slide, rethreshold
from blastscope.progress import run_steps
from blastscope.widgets._session import COLOUR_BY
from forward_counter import ForwardCounter
from widget_cases import (
    BLAST_BUNDLE,
    MUTATION_BUNDLE,
    PLUGIN,
    add_classified_smear,
    add_smear_with_cells,
    cancel_at_first_progress,
    choose_bundle,
    isolate_settings,
    notifications,
    smear,
    split_threshold,
    wait_for,
    wait_until,
)

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def _settings(monkeypatch, tmp_path):
    isolate_settings(monkeypatch, tmp_path)


def classified_viewer(make_viewer, qtbot):
    """A viewer with the smear's cells classified; returns (viewer, session, classify, mutation
    docks)."""
    viewer = make_viewer()
    session, classify = add_classified_smear(viewer, qtbot)
    _, mutation = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict mutation")
    choose_bundle(mutation, MUTATION_BUNDLE)
    return viewer, session, classify, mutation


def assert_same_call(shown, expected) -> None:
    assert shown.call == expected.call
    assert shown.reason == expected.reason
    assert shown.n_blasts == expected.n_blasts
    assert shown.n_nucleated == expected.n_nucleated
    for name in expected.classes:
        assert shown.probabilities[name] == pytest.approx(expected.probabilities[name])
        assert shown.interval[name] == pytest.approx(expected.interval[name])


def test_slide_call_panel_shows_the_core_call_and_the_class_view(make_napari_viewer_proxy, qtbot):
    viewer, session, _, widget = classified_viewer(make_napari_viewer_proxy, qtbot)
    widget.min_blasts.value = 5
    widget.min_probability.value = 0.2
    classified = session.result
    widget.run()
    wait_for(widget, qtbot)

    settings = SlideCallSettings(min_blasts=5, min_probability=0.2)
    expected = run_steps(
        mutation_stage(
            smear().image,
            classified,
            load_classifier(MUTATION_BUNDLE, "mutation"),
            settings=settings,
        )
    )
    call = session.result.slide_call
    assert_same_call(call, expected.slide_call)
    features = session.layer.features
    for name in call.classes:
        np.testing.assert_allclose(features[f"p_{name}"], expected.cells[f"p_{name}"], atol=1e-6)
    assert widget.chart.call is call
    assert (
        widget.headline.text()
        == f"Slide call: {call.call} ({call.probabilities[call.call]:.2f}, 95% interval "
        f"{call.interval[call.call][0]:.2f}-{call.interval[call.call][1]:.2f})"
    )
    assert f"{call.n_blasts} blasts used (minimum 5)" in widget.details.text()
    assert f"{call.blast_percentage:.1f} % of {call.n_nucleated} nucleated" in widget.details.text()
    assert session.result.provenance["mutation"]["run"]["params"]["batch_size"] == 256

    widget.colour_by.value = COLOUR_BY[1]
    colours = viewer.layers[session.colour_layer_name]
    probabilities = features[[f"p_{name}" for name in call.classes]].to_numpy()
    row = int(np.flatnonzero(features["is_blast"])[0])
    inside = tuple(np.argwhere(session.result.labels == features["label"].iloc[row])[0])
    assert colours.data[inside] == probabilities[row].argmax() + 0.5
    other = int(np.flatnonzero(features["is_nucleated"] & ~features["is_blast"])[0])
    inside = tuple(np.argwhere(session.result.labels == features["label"].iloc[other])[0])
    assert np.isnan(colours.data[inside])  # not a blast: no mutation colour
    assert tuple(colours.contrast_limits) == (0.0, float(len(call.classes)))
    assert not colours.colorbar.visible


def test_settings_and_threshold_repool_the_call_without_inference(make_napari_viewer_proxy, qtbot):
    _, session, classify, widget = classified_viewer(make_napari_viewer_proxy, qtbot)
    widget.min_blasts.value = 5
    widget.run()
    wait_for(widget, qtbot)
    counters = [ForwardCounter(c) for c in (classify.classifier, widget.classifier)]
    before = session.result

    blasts = before.slide_call.n_blasts
    widget.min_blasts.value = blasts + 1
    assert widget.headline.text() == f"No call: insufficient blasts: {blasts} < {blasts + 1}"
    assert "interval updating" in widget.details.text()
    wait_until(lambda: session.exact, qtbot)
    settings = SlideCallSettings(min_blasts=blasts + 1)
    assert_same_call(session.result.slide_call, recall_slide(before, settings).slide_call)
    assert "95% interval" in widget.details.text()

    widget.pooling.value = "geometric"
    wait_until(lambda: session.exact, qtbot)
    settings = SlideCallSettings(pooling="geometric", min_blasts=blasts + 1)
    assert_same_call(session.result.slide_call, recall_slide(before, settings).slide_call)

    p_blast = session.layer.features["p_blast"].to_numpy()
    threshold = split_threshold(p_blast, session.threshold)
    classify.threshold.value = threshold
    wait_until(lambda: session.exact, qtbot)
    expected = rethreshold(before, threshold, settings)
    assert_same_call(session.result.slide_call, expected.slide_call)
    assert session.result.slide_call.n_blasts != blasts
    assert (
        session.result.cells["mutation_call"].tolist() == expected.cells["mutation_call"].tolist()
    )
    assert [counter.counts for counter in counters] == [(0, 0), (0, 0)]  # no inference


def test_cancel_and_errors_leave_the_layers_unchanged(make_napari_viewer_proxy, qtbot):
    viewer = make_napari_viewer_proxy()
    _, unclassified = add_smear_with_cells(viewer)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict mutation")
    choose_bundle(widget, MUTATION_BUNDLE)
    with notifications() as messages:
        widget.run()
    assert "Classify blasts first: the mutation model runs on the blasts." in messages

    _, classify = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify blasts")
    choose_bundle(classify, BLAST_BUNDLE)
    classify.run()
    wait_for(classify, qtbot)
    features = unclassified.layer.features.copy()
    widget._batch_size.value = 2
    counter = ForwardCounter(widget.bundles.load())
    probe = cancel_at_first_progress(widget, "mutation")
    widget.run()
    wait_for(widget, qtbot)
    assert probe.clicked.is_set()
    assert probe.aborted.is_set()
    total = int(np.ceil(features["is_nucleated"].sum() / 2))
    assert counter.calls == 1 < total  # stopped after the first batch
    assert unclassified.layer.features.equals(features)
    assert unclassified.result.slide_call is None
    assert widget.headline.text() == "No slide call yet"


def test_cells_no_longer_blasts_lose_their_mutation_colour_and_text(
    make_napari_viewer_proxy, qtbot
):
    from blastscope.widgets._inspector import describe_cell

    viewer, session, classify, widget = classified_viewer(make_napari_viewer_proxy, qtbot)
    widget.run()
    wait_for(widget, qtbot)
    widget.colour_by.value = COLOUR_BY[1]
    features = session.layer.features
    blasts = np.flatnonzero(features["is_blast"].to_numpy())
    p_blast = features["p_blast"].to_numpy()
    # raise the threshold above the lowest-scoring blast: it stops being a blast
    demoted = blasts[np.argmin(p_blast[blasts])]
    classify.threshold.value = min(1.0, float(p_blast[demoted]) + 0.01)
    wait_until(lambda: session.exact, qtbot)
    features = session.layer.features
    assert not features["is_blast"].iloc[demoted]
    label = int(features["label"].iloc[demoted])
    inside = tuple(np.argwhere(session.result.labels == label)[0])
    colours = viewer.layers[session.colour_layer_name]
    assert np.isnan(colours.data[inside])
    text = describe_cell(features.iloc[demoted], session.classes)
    assert not any(name in text for name in session.classes)
    still = blasts[blasts != demoted]
    if len(still):
        row = int(still[np.argmax(p_blast[still])])
        assert any(
            name in describe_cell(features.iloc[row], session.classes) for name in session.classes
        )
