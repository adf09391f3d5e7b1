"""The learned nucleated-cell call: stain normalisation, the shipped model on real and restained
fields, and the command that makes it."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from blastscope.cells import background_rgb
from blastscope.cli import main
from blastscope.models.bundle import SHIPPED_DIR
from blastscope.models.classifier import NUCLEATED_CLASSES, load_classifier
from blastscope.pipeline import segment_stage, sort_cells_steps
from blastscope.progress import run_steps
from blastscope.samples import BCCD_PIXEL_SIZE_UM
from blastscope.segment import SHIPPED_NUCLEATED_MODEL, SegmentationParams
from blastscope.stain import normalise_to_cells
from blastscope.synthetic import NUCLEATED_TYPES, generate_field
from blastscope.train.bccd_masks import read_fields
from blastscope.train.boxes import nucleated_call_scores

BCCD_DIR = Path(__file__).parent / "data" / "bccd"
MAUVE = np.array([[1.0, 0.0, 0.0], [0.45, 1.0, 0.0], [0.1, 0.0, 1.0]], dtype=np.float32)
"""Optical-density mixing (rows: absorbance in R, G, B; columns: what it adds to R, G, B) that
gives red cells the mauve, darker look of another lab's stain: what absorbs green now absorbs
red too, as in CellaVision's May-Grünwald-Giemsa crops."""


def restain(image: np.ndarray, mixing: np.ndarray, strength: float) -> np.ndarray:
    """``image`` as another stain would show it: optical densities mixed and scaled."""
    background = background_rgb(image)
    density = np.log(background / np.maximum(image.astype(np.float32), 1.0)).clip(0, None)
    density = (density @ mixing) * strength
    return (background * np.exp(-density)).clip(0, 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def blood_field():
    return generate_field(21, "blood", shape=(512, 512))


@pytest.fixture(scope="module")
def marrow_field():
    """A marrow field: many white cells among the red cells."""
    return generate_field(22, "default", shape=(512, 512))


def test_stain_normalisation_undoes_a_stronger_stain(blood_field):
    field = blood_field
    darker = restain(field.image, np.eye(3, dtype=np.float32), 1.6)
    before = np.abs(darker.astype(float) - field.image).mean()
    after = np.abs(
        normalise_to_cells(darker, field.labels).astype(float)
        - normalise_to_cells(field.image, field.labels)
    ).mean()
    assert after < before / 4
    assert normalise_to_cells(field.image, field.labels * 0).tolist() == field.image.tolist()


def _truth_and_calls(field, image, params):
    result = run_steps(segment_stage(image, field.pixel_size_um, params))
    # each segmented object's truth: the true cell under its centroid
    rows = result.cells["centroid_y"].round().astype(int).clip(0, field.labels.shape[0] - 1)
    cols = result.cells["centroid_x"].round().astype(int).clip(0, field.labels.shape[1] - 1)
    true_label = field.labels[rows, cols]
    types = field.cells.set_index("label")["cell_type"]
    truth = pd.Series(true_label).map(types).isin(NUCLEATED_TYPES).to_numpy()
    return truth, result.cells["is_nucleated"].to_numpy(bool)


def test_red_cells_of_a_darker_mauve_stain_stay_not_nucleated(marrow_field):
    """The stain heuristic calls the restained red cells nucleated; the learned model does not."""
    image = restain(marrow_field.image, MAUVE, 1.3)
    truth, learned = _truth_and_calls(marrow_field, image, SegmentationParams(device="cpu"))
    _, heuristic = _truth_and_calls(
        marrow_field, image, SegmentationParams(device="cpu", nucleated_model=None)
    )
    assert truth.sum() >= 3
    assert learned[~truth].mean() <= 0.05
    assert learned[truth].mean() >= 0.9
    assert heuristic[~truth].mean() > 0.2  # what the heuristic did on this stain


def test_white_cells_wider_than_the_window_are_shown_shrunk_and_stay_nucleated():
    """Fields read as 1.5x their pixel size: monocytes and blasts become 20-27 µm, wider than
    the model's 24 µm window allows (as CellaVision's promyelocytes and promonocytes are).
    Shown shrunk to fit they stay white cells (cut by the window, 80% did); red cells stay."""
    from blastscope.cells import measure_cells
    from blastscope.pipeline import nucleated_classifier
    from blastscope.predict import classify_nucleated_steps

    classifier = nucleated_classifier(SHIPPED_NUCLEATED_MODEL)
    big_white, red = [], []
    for seed in (7000, 7001, 7002):
        field = generate_field(seed, "default", shape=(768, 768))
        pixel_size = field.pixel_size_um * 1.5
        cells = measure_cells(field.image, field.labels, pixel_size)
        calls = run_steps(
            classify_nucleated_steps(
                field.image, field.labels, cells, pixel_size, classifier, device="cpu"
            )
        )
        types = field.cells.set_index("label").loc[calls["label"], "cell_type"].to_numpy()
        diameter = 2 * np.sqrt(calls["area_um2"].to_numpy() / np.pi)
        nucleated = calls["is_nucleated"].to_numpy()
        big_white.append(nucleated[np.isin(types, NUCLEATED_TYPES) & (diameter > 18)])
        red.append(nucleated[types == "erythrocyte"])
    big_white, red = np.concatenate(big_white), np.concatenate(red)
    assert len(big_white) >= 50
    assert big_white.mean() >= 0.95
    assert red.mean() <= 0.01


def test_shipped_model_finds_the_white_cells_of_real_bccd_fields():
    """BCCD validation fields (tests/data/bccd, never trained on): precision and recall >= 0.95."""
    params = SegmentationParams(device="cpu")
    totals = {"boxes": 0, "found": 0, "called": 0, "called_matching_a_box": 0}
    names = (BCCD_DIR / "fields.txt").read_text().split()
    for field in read_fields(BCCD_DIR, names):
        result = run_steps(segment_stage(field.image, BCCD_PIXEL_SIZE_UM, params))
        scores = nucleated_call_scores(result.labels, result.cells, field.boxes)
        for key, value in scores.items():
            totals[key] += value
    assert totals["found"] / totals["boxes"] >= 0.95
    assert totals["called_matching_a_box"] / totals["called"] >= 0.95


def test_sorting_edited_cells_normalises_against_the_whole_field(blood_field):
    field = blood_field
    params = SegmentationParams(device="cpu")
    everything = run_steps(sort_cells_steps(field.image, field.labels, field.pixel_size_um, params))
    some = everything["label"].to_numpy()[:2]
    edited = run_steps(
        sort_cells_steps(field.image, field.labels, field.pixel_size_um, params, only=some)
    )
    assert edited["label"].tolist() == some.tolist()
    np.testing.assert_allclose(
        edited["p_nucleated"], everything.set_index("label").loc[some, "p_nucleated"], atol=1e-5
    )


def test_shipped_nucleated_bundle_records_how_it_was_made_and_scored():
    classifier = load_classifier(SHIPPED_NUCLEATED_MODEL, "nucleated")
    assert classifier.classes == NUCLEATED_CLASSES
    assert classifier.input.mask_to_cell
    assert classifier.input.stain_normalisation == "cells"
    metadata = classifier.metadata
    assert "blastscope train nucleated" in metadata["training"]["command"]
    scores = metadata["metrics"]["bccd_validation"]
    assert scores["fields"] == 87
    assert scores["white_cell_recall"] >= 0.95
    assert scores["white_cell_precision"] >= 0.95
    text = (SHIPPED_DIR / "TRAINING.md").read_text(encoding="utf-8")
    assert "blastscope train nucleated" in text


def test_tiny_nucleated_training_run_makes_a_bundle_like_the_shipped_one(tmp_path):
    out = tmp_path / "nucleated"
    argv = [
        "train",
        "nucleated",
        "--bccd",
        str(BCCD_DIR),
        "--bccd-list",
        str(BCCD_DIR / "fields.txt"),
    ]
    argv += ["--bccd-fields", "3", "--synthetic-fields", "2", "--epochs", "1", "--eval-list"]
    argv += [str(BCCD_DIR / "fields.txt"), "--eval-fields", "2", "--device", "cpu"]
    assert main([*argv, "--out", str(out)]) == 0
    made = json.loads((out / "bundle" / "bundle.json").read_text())
    shipped = json.loads((SHIPPED_DIR / SHIPPED_NUCLEATED_MODEL / "bundle.json").read_text())
    for key in ("kind", "architecture", "classes", "input", "threshold"):
        if key == "input":
            assert made[key] | {"normalisation": None} == shipped[key] | {"normalisation": None}
        else:
            assert made[key] == shipped[key], key
    assert made["metrics"]["bccd_validation"]["fields"] == 2
