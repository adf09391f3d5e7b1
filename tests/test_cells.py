"""The cells table: columns, one row per label, units, and is_nucleated against real truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from blastscope.cells import COLUMNS, measure_cells, nuclear_stain_index, optical_density
from blastscope.synthetic import generate_field
from blastscope.train.boxes import wbc_box_matches
from segmentation_cases import bccd_val_segmentations


def _two_cell_field() -> tuple[np.ndarray, np.ndarray]:
    image = np.full((60, 80, 3), (225, 222, 230), np.uint8)
    labels = np.zeros((60, 80), np.int32)
    labels[10:30, 10:30] = 4  # a purple (nuclear) square
    image[10:30, 10:30] = (110, 80, 190)
    labels[35:60, 50:70] = 9  # a pink (red-cell) block cut by the bottom border
    image[35:60, 50:70] = (215, 140, 150)
    return image, labels


def test_cells_table_has_the_documented_columns_one_row_per_label_in_label_order():
    image, labels = _two_cell_field()
    table = measure_cells(image, labels, pixel_size_um=0.5)
    assert tuple(table.columns) == COLUMNS
    assert table["label"].tolist() == [4, 9]
    first = table.iloc[0]
    assert first["area_px"] == 400
    assert first["area_um2"] == pytest.approx(100.0)
    assert first["diameter_um"] == pytest.approx(2 * np.sqrt(100.0 / np.pi))
    assert (first["centroid_y"], first["centroid_x"]) == pytest.approx((19.5, 19.5))
    assert table["touches_border"].tolist() == [False, True]
    assert table["is_nucleated"].tolist() == [True, False]
    assert table["nuclear_fraction"].tolist() == pytest.approx([1.0, 0.0])


def test_empty_labels_give_an_empty_table_with_the_columns():
    image, labels = _two_cell_field()
    table = measure_cells(image, np.zeros_like(labels), 0.5)
    assert tuple(table.columns) == COLUMNS
    assert len(table) == 0
    assert table["is_nucleated"].dtype == bool


def test_measure_cells_refuses_mismatched_labels_and_non_rgb_images():
    image, labels = _two_cell_field()
    with pytest.raises(ValueError, match="do not match the image"):
        measure_cells(image, labels[:-1], 0.5)
    with pytest.raises(ValueError, match=r"needs an RGB image \(Y, X, 3\)"):
        measure_cells(image[..., 0], labels, 0.5)
    with pytest.raises(ValueError, match="not a positive number"):
        measure_cells(image, labels, 0.0)


def test_optical_density_is_relative_to_the_field_background():
    image, _ = _two_cell_field()
    density = optical_density(image)
    assert density[0, 0] == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)
    index = nuclear_stain_index(image)
    assert index[20, 20] > 0.3  # purple nucleus
    assert index[50, 60] < 0.0  # pink red cell


@pytest.fixture(scope="module")
def synthetic_truth_tables() -> pd.DataFrame:
    """measure_cells on the generator's own labels, merged with its truth, 6 fields."""
    tables = []
    for seed in range(3):
        for preset in ("default", "blood"):
            field = generate_field(seed, preset, shape=(384, 384))
            measured = measure_cells(field.image, field.labels, field.pixel_size_um)
            truth = field.cells[["label", "cell_type", "is_nucleated"]]
            tables.append(measured.merge(truth, on="label", suffixes=("", "_true")))
    return pd.concat(tables, ignore_index=True)


def test_is_nucleated_matches_the_generator_truth(synthetic_truth_tables):
    table = synthetic_truth_tables
    accuracy = (table["is_nucleated"] == table["is_nucleated_true"]).mean()
    assert accuracy >= 0.98
    nucleated = table[table["is_nucleated_true"]]
    assert nucleated["is_nucleated"].mean() >= 0.9
    red_cells = table[table["cell_type"] == "erythrocyte"]
    assert red_cells["is_nucleated"].mean() <= 0.01
    platelets = table[table["cell_type"] == "platelet"]
    assert platelets["is_nucleated"].mean() <= 0.05


def test_is_nucleated_holds_when_the_stain_is_paler_or_darker():
    field = generate_field(5, "default", shape=(384, 384))
    base = measure_cells(field.image, field.labels, field.pixel_size_um)
    background = np.array([235.0, 232.0, 238.0])
    density = np.log(background / np.maximum(field.image.astype(float), 1.0)).clip(0, None)
    for strength in (0.75, 1.3):
        restained = (background * np.exp(-density * strength)).clip(0, 255).astype(np.uint8)
        table = measure_cells(restained, field.labels, field.pixel_size_um)
        agreement = (table["is_nucleated"] == base["is_nucleated"]).mean()
        assert agreement >= 0.97, strength


def test_bccd_white_cells_are_nucleated_and_red_cells_mostly_not():
    """Each WBC box's matched object is nucleated; few other objects are (22 BCCD val fields)."""
    wbc_nucleated, other_nucleated = [], []
    for field, segmentation in bccd_val_segmentations():
        table = measure_cells(field.image, segmentation.labels, segmentation.pixel_size_um)
        matches = wbc_box_matches(segmentation.labels, field.boxes)
        matched = set(matches.loc[matches["iou"] >= 0.5, "label"])
        by_label = table.set_index("label")["is_nucleated"]
        wbc_nucleated += [bool(by_label[label]) for label in matched]
        other_nucleated += by_label[~by_label.index.isin(matched)].tolist()
    assert len(wbc_nucleated) >= 20
    assert all(wbc_nucleated)
    assert np.mean(other_nucleated) <= 0.05
