"""The segmenter trainer, its BCCD mask derivation and its evaluation helpers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from blastscope.cli import main
from blastscope.models.bundle import load_bundle
from blastscope.segment import SHIPPED_SEGMENTER, load_segmenter
from blastscope.train.bccd_masks import derive_masks, read_fields
from blastscope.train.boxes import box_iou, mask_box, wbc_box_matches, wbc_recall_summary
from blastscope.train.segmenter_fit import augment_stain, weighted_cellpose_loss

BCCD_DIR = Path(__file__).parent / "data" / "bccd"


def test_tiny_training_run_writes_a_bundle_with_the_shipped_architecture(tmp_path):
    out = tmp_path / "tiny-segmenter"
    code = main(
        [
            "train",
            "segmenter",
            "--out",
            str(out),
            "--bccd",
            str(BCCD_DIR),
            "--bccd-list",
            str(BCCD_DIR / "fields.txt"),
            "--bccd-fields",
            "2",
            "--synthetic-fields",
            "1",
            "--synthetic-size",
            "256",
            "--epochs",
            "1",
            "--val-fields",
            "0",
            "--synthetic-eval-fields",
            "0",
        ]
    )
    assert code == 0
    trained = load_bundle(out, kind="segmenter")
    shipped = load_bundle(SHIPPED_SEGMENTER, kind="segmenter")
    assert trained.metadata["architecture"]["widths"] == shipped.metadata["architecture"]["widths"]
    assert {k: v.shape for k, v in trained.state_dict.items()} == {
        k: v.shape for k, v in shipped.state_dict.items()
    }
    training = trained.metadata["training"]
    assert training["seed"] == 0
    assert "train segmenter" in training["command"]
    assert training["data"]["bccd_train_fields"] == 2
    assert training["data"]["synthetic_fields"] == 2
    assert len(training["epoch_losses"]) == 1
    backend = load_segmenter(str(out), "cpu")
    assert backend.info["sha256"] == trained.sha256
    json.dumps(trained.metadata)


def test_shipped_bundle_records_its_provenance_and_metrics():
    shipped = load_bundle(SHIPPED_SEGMENTER, kind="segmenter")
    metadata = shipped.metadata
    assert metadata["demo"] is True
    architecture = metadata["architecture"]
    assert architecture["diameter_um"] == pytest.approx(
        architecture["diam_mean"] * architecture["net_pixel_size_um"]
    )
    training = metadata["training"]
    assert training["command"].startswith("blastscope train segmenter")
    assert training["command"] in (shipped.path.parent / "TRAINING.md").read_text(encoding="utf-8")
    assert len(training["git_commit"]) == 40
    assert "val never used" in training["data"]["bccd_split"]
    assert metadata["metrics"]["bccd_val"]["n_boxes"] >= 87
    assert (shipped.path / "model.safetensors").stat().st_size < 8_000_000


def test_derived_white_cell_masks_follow_their_boxes():
    fields = read_fields(BCCD_DIR, (BCCD_DIR / "fields.txt").read_text().split()[:8])
    ious = []
    for field in fields:
        labels, weight = derive_masks(field.image, field.boxes)
        assert labels.dtype == np.int32
        assert weight.shape == labels.shape
        wbc = field.boxes[field.boxes["class"] == "WBC"]
        for box in wbc[["xmin", "ymin", "xmax", "ymax"]].itertuples(index=False):
            inside = np.unique(labels[box.ymin : box.ymax, box.xmin : box.xmax])
            ious.append(max(box_iou(mask_box(labels == i), tuple(box)) for i in inside if i > 0))
    assert np.median(ious) >= 0.8
    assert min(ious) >= 0.7


def test_wbc_box_matching_is_one_to_one_and_reports_border_boxes():
    labels = np.zeros((100, 100), np.int32)
    labels[10:30, 10:30] = 1
    labels[60:100, 50:90] = 2
    boxes = pd.DataFrame(
        {
            "class": ["WBC", "WBC", "WBC", "RBC"],
            "xmin": [10, 12, 50, 0],
            "ymin": [10, 12, 60, 0],
            "xmax": [30, 30, 90, 5],
            "ymax": [30, 30, 100, 5],
        }
    )
    matches = wbc_box_matches(labels, boxes)
    assert len(matches) == 3
    assert sorted(matches["label"].tolist()) == [0, 1, 2]
    assert matches["iou"].max() == pytest.approx(1.0)
    assert matches["touches_border"].tolist() == [False, False, True]
    summary = wbc_recall_summary(matches)
    assert summary["all"]["recall_iou50"] == pytest.approx(2 / 3, abs=1e-3)
    assert summary["border"]["n"] == 1


def test_weighted_loss_equals_cellposes_loss_when_every_weight_is_one():
    from cellpose.train import _loss_fn_seg

    generator = torch.Generator().manual_seed(0)
    prediction = torch.randn(2, 3, 16, 16, generator=generator)
    cell = (torch.rand(2, 1, 16, 16, generator=generator) > 0.5).float()
    flows = torch.randn(2, 2, 16, 16, generator=generator)
    target = torch.cat([cell, torch.ones_like(cell), flows], dim=1)
    cellpose_target = torch.cat([cell, flows], dim=1).numpy()
    expected = _loss_fn_seg(cellpose_target, prediction, torch.device("cpu"))
    assert weighted_cellpose_loss(prediction, target).item() == pytest.approx(expected.item())
    target[:, 1] = 0.0
    target[0, 1, :8] = 1.0
    half = weighted_cellpose_loss(prediction, target)
    assert half.item() != pytest.approx(expected.item())


def test_stain_augmentation_changes_colours_but_keeps_the_background_bright():
    image = np.full((64, 64, 3), (228, 224, 232), np.uint8)
    image[20:40, 20:40] = (110, 80, 190)
    rng = np.random.default_rng(1)
    outputs = [augment_stain(image, rng) for _ in range(6)]
    assert all(out.shape == image.shape and out.dtype == np.float32 for out in outputs)
    nucleus = np.array([out[30, 30] for out in outputs])
    assert nucleus.std(axis=0).max() > 3.0
    assert all(out[2, 2].mean() > 180 for out in outputs)
