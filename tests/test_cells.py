"""The cells table: columns, one row per label, units, and is_nucleated against real truth."""

from __future__ import annotations

import tracemalloc

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


def _reference_field() -> tuple[np.ndarray, np.ndarray]:
    """A 120x160 textured field of 8 cells: label ids with gaps, touching neighbours, cells cut by
    the border, purple nuclei inside pink cytoplasm, a small purple platelet."""
    rows, cols = np.mgrid[0:120, 0:160]
    texture = ((rows * 7 + cols * 13) % 17).astype(np.int16) - 8
    image = np.clip(np.array([226, 220, 232]) + texture[..., None], 0, 255).astype(np.uint8)
    labels = np.zeros((120, 160), np.int32)
    # label, centre y, centre x, radius, nucleus radius, cytoplasm RGB, nucleus RGB
    cells = [
        (3, 20, 25, 13, 8, (200, 150, 185), (105, 75, 185)),
        (5, 62, 78, 18, 0, (215, 140, 150), (0, 0, 0)),
        (7, 2, 140, 11, 6, (205, 160, 190), (115, 85, 195)),
        (8, 112, 8, 14, 0, (212, 138, 148), (0, 0, 0)),
        (12, 96, 122, 4, 4, (0, 0, 0), (140, 95, 200)),
        (20, 45, 128, 16, 11, (198, 150, 190), (100, 70, 180)),
        (21, 70, 103, 10, 0, (218, 145, 152), (0, 0, 0)),
        (40, 100, 159, 9, 5, (200, 155, 188), (120, 90, 198)),
    ]
    for label, cy, cx, radius, nucleus, cytoplasm, nucleus_rgb in cells:
        distance = np.hypot(rows - cy, cols - cx)
        inside = distance <= radius
        labels[inside] = label
        shade = (texture[inside] // 2)[:, None]
        image[inside] = np.clip(np.array(cytoplasm) + shade, 0, 255)
        core = distance <= nucleus
        image[core] = np.clip(np.array(nucleus_rgb) + (texture[core] // 2)[:, None], 0, 255)
    return image, labels


# measure_cells(*_reference_field(), 0.5) as computed by the full-image implementation (ndimage
# sums over whole-image float64 arrays) before measuring moved to per-cell bounding boxes.
REFERENCE_TABLE = {
    "label": [3, 5, 7, 8, 12, 20, 21, 40],
    "centroid_y": [
        20.0,
        61.947947947947945,
        5.359504132231405,
        109.58177570093459,
        96.0,
        45.0,
        70.0,
        100.0,
    ],
    "centroid_x": [
        25.0,
        77.83683683683684,
        140.0,
        9.97429906542056,
        122.0,
        128.0,
        103.0,
        155.46323529411765,
    ],
    "area_px": [529, 999, 242, 428, 49, 797, 317, 136],
    "area_um2": [132.25, 249.75, 60.5, 107.0, 12.25, 199.25, 79.25, 34.0],
    "diameter_um": [
        12.976360421598395,
        17.83231830967603,
        8.77673016883152,
        11.67204486311899,
        3.949327084834294,
        15.927742441679586,
        10.045109950630787,
        6.579524642479541,
    ],
    "touches_border": [False, False, True, True, False, False, False, True],
    "nuclear_fraction": [
        0.3724007561436673,
        0.001001001001001001,
        0.3512396694214876,
        0.002336448598130841,
        1.0,
        0.4730238393977415,
        0.0031545741324921135,
        0.3382352941176471,
    ],
    "nuclear_index_mean": [
        0.2677884639182704,
        -0.1471279009475603,
        0.2241878820475468,
        -0.13600568539489097,
        0.42348853605134146,
        0.3617633645851609,
        -0.1481986124808856,
        0.21722780978854964,
    ],
    "mean_od": [
        1.3394331777704236,
        1.0626336704861294,
        1.1418067426228327,
        1.1244831622760987,
        1.5762046526889413,
        1.5343661673993358,
        1.0331781544143845,
        1.1315324806115206,
    ],
    "is_nucleated": [True, False, True, False, False, True, False, True],
}


def test_measure_cells_reproduces_the_full_image_reference_values():
    table = measure_cells(*_reference_field(), pixel_size_um=0.5)
    expected = pd.DataFrame(REFERENCE_TABLE)
    pd.testing.assert_frame_equal(table, expected, check_exact=False, rtol=1e-12, atol=1e-15)


def test_measure_cells_builds_no_full_image_float_arrays():
    """A 2048x2048 field (the reference field tiled) with 8 cells labelled: the full-image
    arrays of the former implementation took 57-90 bytes a pixel."""
    image, labels = _reference_field()
    big_image = np.ascontiguousarray(np.tile(image, (18, 13, 1))[:2048, :2048])
    big_labels = np.zeros((2048, 2048), np.int32)
    big_labels[240:360, 480:640] = labels
    tracemalloc.start()
    try:
        table = measure_cells(big_image, big_labels, 0.5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(table) == 8
    assert peak < big_labels.size  # under one byte a pixel


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
