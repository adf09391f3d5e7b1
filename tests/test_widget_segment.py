"""Segment cells dock, through the plugin manifest on a real viewer (Xvfb), with the shipped
segmenter: layers and features against the core, in-place re-runs, Cancel within one tile of a
tiled field, refused inputs, a grey and placed image, and parameters kept across restarts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from blastscope.pipeline import segment_stage
from blastscope.progress import run_steps
from blastscope.widgets._segment import SegmentWidget
from widget_cases import (
    PLUGIN,
    add_smear,
    cancel_at_first_progress,
    isolate_settings,
    notifications,
    smear,
    wait_for,
)

pytestmark = pytest.mark.gui


@pytest.fixture(autouse=True)
def _settings(monkeypatch, tmp_path):
    isolate_settings(monkeypatch, tmp_path)


def segment_dock(viewer):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Segment cells")
    return widget


def test_segmentation_matches_the_core_and_reruns_in_place(make_napari_viewer_proxy, qtbot):
    viewer = make_napari_viewer_proxy()
    image = add_smear(viewer)
    widget = segment_dock(viewer)
    widget.run()
    wait_for(widget, qtbot)

    field = smear()
    expected = run_steps(segment_stage(field.image, field.pixel_size_um, widget.params()))
    assert expected.n_nucleated > 0
    layer = viewer.layers["smear cells"]
    np.testing.assert_array_equal(layer.data, expected.labels)
    features = layer.features
    assert features["index"].tolist() == expected.cells["label"].tolist()
    pd.testing.assert_frame_equal(features[list(expected.cells.columns)], expected.cells)
    assert layer.metadata["pixel_size_um"] == field.pixel_size_um
    assert layer.metadata["provenance"]["segmentation"]["params"]["tile_size"] == 1024
    assert tuple(layer.scale) == tuple(image.scale)
    assert f"{len(expected.cells)} cells" in widget._status.value
    # the pixel size came with the image, and both lines say so
    assert f"{field.pixel_size_um:g} µm/px (from the image)" in widget._status.value
    assert widget._pixel_source.value == f"pixel size {field.pixel_size_um:g} µm (from the image)"

    names = [item.name for item in viewer.layers]
    widget.run()
    wait_for(widget, qtbot)
    assert [item.name for item in viewer.layers] == names


def test_cancel_stops_a_tiled_field_after_its_first_tile(make_napari_viewer_proxy, qtbot):
    viewer = make_napari_viewer_proxy()
    field = smear()
    tiled = np.tile(field.image, (4, 4, 1))  # 2048 x 2048, 16 tiles of 512
    viewer.add_image(tiled, name="large", rgb=True, metadata={"pixel_size_um": field.pixel_size_um})
    widget = segment_dock(viewer)
    widget._tile_size.value = 512
    probe = cancel_at_first_progress(widget, "segment")
    widget.run()
    wait_for(widget, qtbot, timeout_s=120)
    assert probe.clicked.is_set()
    assert probe.aborted.is_set()
    tiles = [event for event in probe.events if event.stage == "segment"]
    assert tiles[-1].total == 16
    assert tiles[-1].done < tiles[-1].total
    assert [item.name for item in viewer.layers] == ["large"]


def test_a_stack_and_an_empty_image_are_refused_with_the_fix(make_napari_viewer_proxy, qtbot):
    viewer = make_napari_viewer_proxy()
    rng = np.random.default_rng(0)
    stack = viewer.add_image(rng.integers(0, 255, (5, 64, 64), dtype=np.uint8), name="stack")
    empty = viewer.add_image(np.zeros((256, 256, 3), np.uint8), name="empty", rgb=True)
    widget = segment_dock(viewer)
    for layer, text in (
        (stack, "which looks like a stack, not one field"),
        (empty, "The image is empty (every pixel is 0)."),
    ):
        widget._image.value = layer
        with notifications() as messages:
            widget.run()
            wait_for(widget, qtbot)
        assert any(text in message for message in messages), messages
        assert [item.name for item in viewer.layers] == ["stack", "empty"]


def test_grey_image_with_scale_and_translate_is_segmented_with_a_notice(
    make_napari_viewer_proxy,
    qtbot,
):
    viewer = make_napari_viewer_proxy()
    image = add_smear(viewer, grey=True, translate=(3.0, 7.5))
    widget = segment_dock(viewer)
    with notifications() as messages:
        widget.run()
        wait_for(widget, qtbot)
    assert any(m.startswith("Single-channel image: replicated to RGB.") for m in messages)
    layer = viewer.layers["smear cells"]
    assert layer.data.shape == smear().labels.shape
    assert tuple(layer.scale) == tuple(image.scale)
    assert tuple(layer.translate) == (3.0, 7.5)


def test_parameters_persist_across_restarts(make_napari_viewer_proxy):
    viewer = make_napari_viewer_proxy()
    first = SegmentWidget(viewer)
    first._estimate.value = False
    first._diameter.value = 42.0
    first._flow_threshold.value = 0.8
    first._tile_size.value = 768
    first.close()
    again = SegmentWidget(viewer)
    assert again._estimate.value is False
    assert again._diameter.value == 42.0
    assert again._flow_threshold.value == 0.8
    assert again._tile_size.value == 768
    assert again.params().diameter == 42.0
