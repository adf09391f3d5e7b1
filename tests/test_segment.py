"""The Cellpose adapter with the shipped smear model: real Cellpose, real torch, real pixels."""

from __future__ import annotations

import json
import shutil
import urllib.error

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from blastscope.io import ImageInputError
from blastscope.models.bundle import BundleError, resolve_bundle_path
from blastscope.progress import Progress
from blastscope.samples import BCCD_PIXEL_SIZE_UM
from blastscope.segment import (
    MAX_RESCALE,
    SegmentationError,
    SegmentationParams,
    cellpose3_masks,
    estimate_memory_bytes,
    load_segmenter,
    recompute_masks,
    segment,
    segment_steps,
    segmenter_choices,
)
from blastscope.segment import memory as segment_memory
from blastscope.synthetic import generate_field
from blastscope.train.boxes import wbc_box_matches
from segmentation_cases import bccd_val_segmentations


def _mask_iou_matches(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Mask IoU of each truth object with its one-to-one (Hungarian) predicted partner."""
    n_true, n_pred = int(truth.max()), int(predicted.max())
    overlap = np.zeros((n_true + 1, n_pred + 1))
    np.add.at(overlap, (truth.ravel(), predicted.ravel()), 1)
    area_true = overlap.sum(axis=1, keepdims=True)
    area_pred = overlap.sum(axis=0, keepdims=True)
    iou = overlap / np.maximum(area_true + area_pred - overlap, 1)
    iou = iou[1:, 1:]
    best = np.zeros(n_true)
    if iou.size:
        rows, cols = linear_sum_assignment(-iou)
        best[rows] = iou[rows, cols]
    present = area_true[1:, 0] > 0
    return best[present]


class ForwardCounter:
    """Counts calls of a real network's forward (wraps it; the network still runs)."""

    def __init__(self, net):
        self.calls = 0
        self._forward = net.forward
        net.forward = self

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self._forward(*args, **kwargs)


@pytest.fixture
def counted_network():
    backend = load_segmenter(SegmentationParams().model, "cpu")
    counter = ForwardCounter(backend.net)
    yield counter
    del backend.net.forward


@pytest.fixture(scope="module")
def synthetic_field():
    return generate_field(11, "default", shape=(384, 384))


@pytest.fixture(scope="module")
def synthetic_segmentation(synthetic_field):
    params = SegmentationParams(device="cpu")
    return segment(synthetic_field.image, synthetic_field.pixel_size_um, params)


def test_segments_a_synthetic_field_finding_most_cells(synthetic_field, synthetic_segmentation):
    labels = synthetic_segmentation.labels
    assert labels.shape == synthetic_field.image.shape[:2]
    assert labels.dtype == np.int32
    assert synthetic_segmentation.dP.shape == (2, *labels.shape)
    assert synthetic_segmentation.cellprob.shape == labels.shape
    assert synthetic_segmentation.model_info["pixel_size_source"] == "given"
    ious = _mask_iou_matches(synthetic_field.labels, labels)
    # Matching: one-to-one (Hungarian) on mask IoU; a truth cell is found at IoU >= 0.5.
    assert (ious >= 0.5).mean() >= 0.8
    nucleated = synthetic_field.cells["is_nucleated"].to_numpy()
    truth_ids = synthetic_field.cells["label"].to_numpy()
    present = np.isin(truth_ids, np.unique(synthetic_field.labels))
    assert (ious[nucleated[present]] >= 0.5).mean() >= 0.9


def test_bccd_val_fields_recall_white_cells_at_box_iou_50():
    """Regression guard on 22 real BCCD val fields: WBC-box recall at box IoU >= 0.5."""
    ious = []
    for field, segmentation in bccd_val_segmentations():
        ious += wbc_box_matches(segmentation.labels, field.boxes)["iou"].tolist()
    assert len(ious) >= 22
    assert np.mean(np.array(ious) >= 0.5) >= 0.9


def test_recompute_masks_changes_masks_without_calling_the_network(
    synthetic_field, counted_network
):
    segmentation = segment(synthetic_field.image, synthetic_field.pixel_size_um)
    calls = counted_network.calls
    assert calls > 0
    stricter = recompute_masks(segmentation, cellprob_threshold=3.0)
    assert counted_network.calls == calls
    assert stricter.params.cellprob_threshold == 3.0
    assert (stricter.labels > 0).sum() < (segmentation.labels > 0).sum()
    same = recompute_masks(segmentation)
    assert counted_network.calls == calls
    assert np.array_equal(same.labels > 0, segmentation.labels > 0)


@pytest.fixture(scope="module")
def large_field():
    return generate_field(21, "default", shape=(2048, 2048))


def test_tiled_large_field_matches_one_pass_without_cut_or_duplicated_cells(large_field):
    """2048 x 2048 in 4 tiles of 1024 versus one pass.

    Measure: one-to-one mask-IoU matching between the two label images. Near the tile borders
    (centroid within 100 px of row or column 1024) at least 95% of the one-pass cells have a
    tiled partner at IoU >= 0.8 (none cut in two), and at most 2% of the tiled cells there have
    no partner at IoU >= 0.5 (no duplicates or fragments).
    """
    image, pixel_size = large_field.image, large_field.pixel_size_um
    tiled = segment(image, pixel_size, SegmentationParams(tile_size=1024, device="cpu"))
    single = segment(image, pixel_size, SegmentationParams(tile_size=2048, device="cpu"))
    assert tiled.model_info["tiles"] == 4
    assert single.model_info["tiles"] == 1

    def near_seam(labels: np.ndarray) -> np.ndarray:
        ids = np.arange(1, labels.max() + 1)
        rows, cols = np.nonzero(labels)
        values = labels[rows, cols]
        counts = np.bincount(values, minlength=len(ids) + 1)[1:]
        centre_y = np.bincount(values, rows, len(ids) + 1)[1:] / np.maximum(counts, 1)
        centre_x = np.bincount(values, cols, len(ids) + 1)[1:] / np.maximum(counts, 1)
        return (np.abs(centre_y - 1024) < 100) | (np.abs(centre_x - 1024) < 100)

    single_to_tiled = _mask_iou_matches(single.labels, tiled.labels)
    tiled_to_single = _mask_iou_matches(tiled.labels, single.labels)
    seam_single = near_seam(single.labels)
    seam_tiled = near_seam(tiled.labels)
    assert seam_single.sum() > 50
    assert (single_to_tiled[seam_single] >= 0.8).mean() >= 0.95
    assert (tiled_to_single[seam_tiled] < 0.5).mean() <= 0.02
    assert (single_to_tiled >= 0.5).mean() >= 0.97
    assert np.array_equal(np.unique(tiled.labels), np.arange(tiled.labels.max() + 1))


def test_closing_the_generator_after_the_first_tile_stops_the_work(large_field, counted_network):
    steps = segment_steps(large_field.image, large_field.pixel_size_um, SegmentationParams())
    first = next(steps)
    assert isinstance(first, Progress)
    assert first.stage == "segment"
    assert first.done < first.total == 4
    calls_at_first_event = counted_network.calls
    steps.close()
    assert counted_network.calls == calls_at_first_event
    with pytest.raises(StopIteration):
        next(steps)


def download_unavailable_offline_stand_in(url, dst, progress=True):
    """Stands in for Cellpose's download (no internet in tests): fails as urllib does offline."""
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_named_cellpose_model_offline_says_so_and_names_the_fix(monkeypatch, tmp_path):
    import cellpose.models
    import cellpose.utils

    empty = tmp_path / "cellpose-models"
    empty.mkdir()
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(empty))
    monkeypatch.setattr(cellpose.models, "MODEL_DIR", empty)
    monkeypatch.setattr(
        cellpose.utils, "download_url_to_file", download_unavailable_offline_stand_in
    )
    image = generate_field(2, "easy", shape=(128, 128)).image
    with pytest.raises(SegmentationError) as raised:
        segment(image, 0.25, SegmentationParams(model="cyto3", device="cpu"))
    message = str(raised.value)
    assert "'cyto3' is not on this computer and could not be downloaded" in message
    assert "smear-cellpose" in message
    assert "give its path" in message
    assert not any(empty.iterdir())


def test_unknown_model_name_lists_the_choices():
    with pytest.raises(SegmentationError, match="Unknown segmentation model 'cyto9'") as raised:
        segment(np.full((64, 64, 3), 200, np.uint8), 0.25, SegmentationParams(model="cyto9"))
    assert "smear-cellpose" in str(raised.value)
    assert segmenter_choices()[0] == "smear-cellpose"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (SegmentationParams(diameter=-5.0), "diameter must be a positive number of pixels"),
        (SegmentationParams(cellprob_threshold=9.0), "cellprob_threshold must be between -6"),
        (SegmentationParams(flow_threshold=-0.1), "flow_threshold must be between 0 and 3"),
        (SegmentationParams(normalize_percentiles=(99.0, 1.0)), "0 <= low < high <= 100"),
        (SegmentationParams(tile_size=64), "tile_size must be at least 256"),
        (SegmentationParams(min_size_px=-1), "min_size_px must be 0 or more"),
    ],
)
def test_bad_parameters_are_refused_with_the_fix(params, message):
    with pytest.raises(SegmentationError, match=message):
        segment(np.full((64, 64, 3), 200, np.uint8), 0.25, params)


@pytest.mark.parametrize("pixel_size", [-0.2, 10.0, 1e9, "abc"])
def test_bad_pixel_size_is_refused(pixel_size):
    with pytest.raises(
        ImageInputError, match=r"pixel_size_um must be a number between 0\.02 and 5"
    ):
        segment(np.full((64, 64, 3), 200, np.uint8), pixel_size)


def test_a_bundle_with_an_impossible_pixel_size_is_refused(tmp_path):
    bundle = tmp_path / "odd-units"
    shutil.copytree(resolve_bundle_path("smear-cellpose"), bundle)
    metadata = json.loads((bundle / "bundle.json").read_text())
    metadata["architecture"]["default_pixel_size_um"] = 80.0  # nm written as µm
    (bundle / "bundle.json").write_text(json.dumps(metadata))
    with pytest.raises(BundleError, match=r"odd-units.*default_pixel_size_um"):
        load_segmenter(str(bundle), "cpu")


def test_a_coarse_pixel_size_caps_the_enlargement_and_says_so(small_field):
    """At 5 µm per pixel the shipped model's 7.2-µm cells are 1.4 pixels across: Cellpose would
    enlarge the image 17x to its 24-pixel cells; the enlargement stops at MAX_RESCALE."""
    params = SegmentationParams(device="cpu")
    backend = load_segmenter(params.model, "cpu")
    diameters = []
    original = backend.network_output_steps

    def recorded(channels, diameter_px, batch_size):
        diameters.append(diameter_px)
        return original(channels, diameter_px, batch_size)

    backend.network_output_steps = recorded  # every network pass goes through it
    try:
        result = segment(small_field.image[:96, :96], 5.0, params)
    finally:
        del backend.network_output_steps
    assert diameters
    assert max(backend.diam_mean / diameter for diameter in diameters) <= MAX_RESCALE + 1e-9
    assert result.diameter_px == pytest.approx(backend.diameter_um / 5.0)
    assert any("enlarged" in notice and "--pixel-size" in notice for notice in result.notices)


def test_the_memory_estimate_grows_with_the_field_and_the_enlargement():
    one = estimate_memory_bytes((1024, 1024), rescale=1.0, tile_size=1024, halo_px=0)
    assert estimate_memory_bytes((4096, 4096), 1.0, tile_size=1024, halo_px=0) > 4 * one
    assert estimate_memory_bytes((1024, 1024), 4.0, tile_size=1024, halo_px=0) > 6 * one
    # issue 9: 10 µm per pixel enlarged a 1024 x 1024 field ~33x and passed 9.4 GB
    assert estimate_memory_bytes((1024, 1024), 33.0, tile_size=1024, halo_px=0) > 9.4e9


def test_a_run_too_large_for_the_memory_is_refused_before_the_network(monkeypatch):
    monkeypatch.setattr(segment_memory, "available_memory_bytes", lambda: 256 * 2**20)
    backend = load_segmenter(SegmentationParams().model, "cpu")

    def no_network(*args, **kwargs):
        raise AssertionError("the network ran on a field that cannot fit in memory")

    monkeypatch.setattr(backend, "network_output_steps", no_network)
    image = np.full((4096, 4096, 3), 200, np.uint8)
    with pytest.raises(SegmentationError, match=r"needs about [\d.]+ GB of memory") as raised:
        segment(image, 0.25, SegmentationParams(device="cpu"))
    message = str(raised.value)
    assert "0.3 GB" in message
    for fix in ("region", "smaller field", "tile_size", "--pixel-size"):
        assert fix in message


@pytest.fixture(scope="module")
def small_field():
    return generate_field(4, "default", shape=(192, 192))


def test_grayscale_image_is_segmented_with_a_notice(small_field):
    grey = small_field.image.mean(axis=-1).astype(np.uint8)
    result = segment(grey, small_field.pixel_size_um, SegmentationParams(device="cpu"))
    assert result.labels.shape == grey.shape
    assert result.labels.max() > 0
    assert any("Single-channel image" in notice for notice in result.notices)


def test_rgba_16_bit_and_float_images_are_converted_with_notices(small_field):
    rgb = small_field.image
    params = SegmentationParams(device="cpu")
    reference = segment(rgb, small_field.pixel_size_um, params).labels
    rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], axis=-1)
    sixteen = rgb.astype(np.uint16) * 257
    floating = rgb.astype(np.float32) / 255.0
    for image, notice in (
        (rgba, "alpha channel was dropped"),
        (sixteen, "16-bit values: scaled to 8-bit"),
        (floating, "Float image in [0, 1]"),
    ):
        result = segment(image, small_field.pixel_size_um, params)
        assert any(notice in text for text in result.notices), notice
        assert np.array_equal(result.labels > 0, reference > 0)


def test_a_stack_and_an_empty_image_are_refused_with_the_fix():
    with pytest.raises(ImageInputError, match="looks like a stack"):
        segment(np.zeros((5, 64, 64, 3), np.uint8), 0.25)
    with pytest.raises(ImageInputError, match="every pixel is 0"):
        segment(np.zeros((64, 64, 3), np.uint8), 0.25)


def test_an_image_without_cells_gives_empty_labels_and_no_cellpose_noise(caplog, capfd):
    rng = np.random.default_rng(0)
    blank = np.clip(rng.normal((226, 222, 232), 2.0, (256, 256, 3)), 0, 255).astype(np.uint8)
    with caplog.at_level("DEBUG"):
        result = segment(blank, 0.25, SegmentationParams(device="cpu"))
    assert result.labels.shape == (256, 256)
    assert result.labels.max() == 0

    # Cellpose logs "no seeds found" for every pass without a cell (here a trial pass of the
    # diameter estimate on a field that has cells); it does not reach the user
    field = generate_field(90_002, "default", shape=(512, 512), pixel_size_um=0.25)
    with caplog.at_level("DEBUG"):
        found = segment(field.image, None, SegmentationParams(device="cpu"))
    assert found.labels.max() > 100
    assert "no seeds" not in caplog.text
    assert "no seeds" not in capfd.readouterr().err


def test_without_a_pixel_size_the_diameter_and_the_pixel_size_are_estimated(small_field):
    result = segment(small_field.image, None, SegmentationParams(device="cpu"))
    assert result.model_info["diameter_source"] == "estimated"
    assert result.model_info["pixel_size_source"] == "pixel size estimated from the cell size"
    expected = result.model_info["diameter_um"] / small_field.pixel_size_um
    assert result.diameter_px == pytest.approx(expected, rel=0.3)
    assert result.pixel_size_um == pytest.approx(small_field.pixel_size_um, rel=0.3)
    assert any("No pixel size" in notice for notice in result.notices)


@pytest.mark.parametrize("pixel_size_um", [0.1, 0.25])
def test_a_field_of_another_scanner_costs_one_quick_trial_and_one_pass(pixel_size_um):
    """Cells shown 1.25x and 3.1x smaller than the network's size: the first quick trial measures
    them (a flow check would drop most of the small cells and bias it), then one pass at the
    estimate: two network passes, the pixel size within 10%."""
    from blastscope.synthetic import generate_field

    field = generate_field(90_000, "default", shape=(512, 512), pixel_size_um=pixel_size_um)
    params = SegmentationParams(device="cpu", nucleated_model=None)
    backend = load_segmenter(params.model, "cpu")
    calls = []
    original = backend.network_output_steps

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    backend.network_output_steps = counted
    try:
        result = segment(field.image, None, params)
    finally:
        del backend.network_output_steps
    assert len(calls) == 2
    assert result.pixel_size_um == pytest.approx(pixel_size_um, rel=0.1)


def test_an_estimate_that_agrees_with_its_trial_reuses_the_trial_pass(bccd_fields):
    """On a BCCD field the first trial (the model's default scale) is right: one network pass,
    and the same masks as with the pixel size given."""
    image = iio.imread(bccd_fields[0])[..., :3]
    params = SegmentationParams(device="cpu", nucleated_model=None)
    backend = load_segmenter(params.model, "cpu")
    calls = []
    original = backend.network_output_steps

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    backend.network_output_steps = counted  # every network pass goes through it
    try:
        known = segment(image, BCCD_PIXEL_SIZE_UM, params)
        passes_known = len(calls)
        estimated = segment(image, None, params)
    finally:
        del backend.network_output_steps
    assert passes_known == 1
    assert len(calls) - passes_known == 1
    assert estimated.diameter_px == pytest.approx(known.diameter_px)
    np.testing.assert_array_equal(estimated.labels, known.labels)


def test_a_segmenter_retrained_into_the_same_folder_is_loaded_afresh(tmp_path):
    from blastscope.models.bundle import load_bundle, save_bundle

    shipped = load_bundle("smear-cellpose", kind="segmenter")
    folder = tmp_path / "my-segmenter"
    save_bundle(folder, shipped.state_dict, shipped.metadata)
    first = load_segmenter(str(folder), "cpu")
    assert load_segmenter(str(folder), "cpu") is first  # cached while the weights are the same
    retrained = {key: value * 0.5 for key, value in shipped.state_dict.items()}
    save_bundle(folder, retrained, shipped.metadata, overwrite=True)  # "retrained" in place
    second = load_segmenter(str(folder), "cpu")
    assert second is not first
    weights = dict(second.net.state_dict())
    key = next(iter(retrained))
    assert torch.equal(weights[key].cpu(), retrained[key])


def test_cancel_stops_between_network_batches_inside_a_tile(large_field, counted_network):
    """A 1024 x 1024 tile is many network batches: the stage yields after each, so a Cancel
    (closing the generator) does not wait for the rest of the tile nor its masks."""
    params = SegmentationParams(batch_size=2)
    steps = segment_steps(large_field.image, large_field.pixel_size_um, params)
    first = next(steps)
    assert "tile 1 of 4: network 1/" in first.message
    batches = int(first.message.rsplit("/", 1)[1])
    assert batches > 4
    assert counted_network.calls == 1
    steps.close()
    assert counted_network.calls == 1
    events = list(segment_steps(large_field.image[:512, :512], large_field.pixel_size_um, params))
    assert any(event.message.endswith(": masks") for event in events)


def test_a_mask_swallowed_by_another_masks_hole_leaves_no_gap_for_the_flow_check():
    """Cellpose fills each mask's holes, so a cell lying in a ring-shaped mask disappears and its
    id leaves a gap; the flow check averaged over the missing id (divide by zero, a warning
    once per such field). The masks are renumbered first: no warning, the separate cell kept."""
    import warnings

    from cellpose import dynamics

    yy, xx = np.mgrid[:120, :120]
    radius = np.hypot(yy - 50, xx - 50)
    labels = np.zeros((120, 120), np.int32)
    labels[radius <= 12] = 1
    labels[(radius > 12) & (radius <= 30)] = 2
    labels[(yy - 100) ** 2 + (xx - 100) ** 2 <= 10**2] = 3
    cpu = torch.device("cpu")
    dP = (dynamics.masks_to_flows(labels, device=cpu) * 5).astype(np.float32)
    cellprob = np.where(labels > 0, 5.0, -5.0).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        found = cellpose3_masks(
            dP, cellprob, flow_threshold=0.4, cellprob_threshold=0.0, niter=200, device=cpu
        )
    assert found[100, 100] > 0
