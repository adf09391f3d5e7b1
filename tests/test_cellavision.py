"""The CellaVision export reader: layout, counting what is skipped, cohorts, classes, pixel size."""

import csv

import numpy as np
import pytest

from blastscope.progress import run_steps
from blastscope.synthetic import generate_field
from blastscope.train.cellavision import (
    DEFAULT_CELL_TYPE_MAP,
    RED_CELL_DIAMETER_UM,
    cellavision_cells_steps,
    classes_from_labels,
    index_export,
    measure_pixel_size,
    parse_label_names,
    read_patients,
)
from blastscope.train.datasets import DatasetError, parse_folder_map
from cellavision_cases import (
    BCCD_PIXEL_SIZE_UM,
    CELL_TYPES,
    DISCOVERY,
    white_cell_crops,
    write_export,
)


@pytest.fixture(scope="module")
def export(tmp_path_factory, bccd_fields, bccd_boxes):
    crops = white_cell_crops(bccd_fields[:6], bccd_boxes)
    return write_export(tmp_path_factory.mktemp("cellavision"), crops)


def _discovery(table, **options):
    return read_patients(
        table, id_column="Patient_ID", label_column="Diagnosis", cohort="Discovery", **options
    )


def _cells(export, kind="blast", **options):
    root, table = export
    patients = options.pop("patients", None) or _discovery(table)
    return run_steps(
        cellavision_cells_steps(
            root,
            patients,
            kind=kind,
            window_um=24.0,
            pixel_size_um=0.5,
            source_pixel_size_um=options.pop("source_pixel_size_um", BCCD_PIXEL_SIZE_UM),
            **options,
        )
    )


def test_a_patient_table_with_a_cohort_column_refuses_to_run_without_a_cohort(export):
    _, table = export
    with pytest.raises(
        DatasetError, match=r"cohort column .Cohort. \(Discovery, Validation\).*--cohort"
    ):
        read_patients(table, id_column="Patient_ID", label_column="Diagnosis")
    with pytest.raises(DatasetError, match="Cohort Test is not in"):
        read_patients(table, label_column="Diagnosis", cohort="Test")
    with pytest.raises(DatasetError, match=r"no column 'Diag'.*--label-column"):
        read_patients(table, label_column="Diag", cohort="Discovery")
    patients = _discovery(table)
    assert set(patients.labels) == set(DISCOVERY)
    assert patients.source["patients_of_other_cohorts"] == 2
    assert patients.source["cohort_column"] == "Cohort"  # found without --cohort-column


def test_the_reader_walks_every_level_and_counts_what_it_skips(export):
    cells = _cells(export)
    source = cells.source
    n_patients = len(DISCOVERY)
    used_types = [t for t in CELL_TYPES if DEFAULT_CELL_TYPE_MAP[t] != "exclude"]
    assert len(cells) == n_patients * 3 * len(used_types)  # not the truncated or the overview
    assert set(cells.slide_ids) == set(DISCOVERY)  # the validation cohort is never read
    skipped = source["skipped"]
    assert skipped["unsigned (no cell type)"] == 2 * n_patients
    assert skipped["not an image (e.g. Thumbs.db)"] == n_patients * len(CELL_TYPES)
    assert skipped["unreadable or truncated"] == 1
    assert skipped["larger than 1000 px (overview field)"] == 1
    assert source["excluded_cells_per_cell_type"] == {"Smudge cells": 3 * n_patients}
    # the extra date level of Patient_00 is walked and kept as the slide, never as a class
    slides = cells.annotations.groupby("patient")["slide"].first()
    assert slides["Patient_00"] == "2019-02-11_1635"
    assert (slides.drop("Patient_00") == "").all()
    assert cells.classes == ("non-blast", "blast")
    blasts = cells.annotations["cell_type"].isin(["Blast, no lineage spec", "Promyelocyte"])
    np.testing.assert_array_equal(cells.labels == 1, blasts.to_numpy())
    assert cells.crops.shape[1:] == (48, 48, 3)


def test_one_cell_type_map_for_every_patient(export):
    """No label leakage: a cell's class depends on its cell type only, never on the patient."""
    cells = _cells(export, kind="mutation")
    per_type = cells.annotations.groupby("cell_type")["cell_class"].nunique()
    assert (per_type == 1).all()
    assert DEFAULT_CELL_TYPE_MAP["Lymphocyte, variant"] == "non-blast"
    assert DEFAULT_CELL_TYPE_MAP["Promyelocyte"] == "blast"
    assert DEFAULT_CELL_TYPE_MAP["Promonocyte"] == "blast"


def test_a_cell_type_folder_outside_the_map_is_an_error_naming_it(export):
    root, table = export
    mapping = {t: c for t, c in DEFAULT_CELL_TYPE_MAP.items() if t != "Promyelocyte"}
    with pytest.raises(DatasetError, match=r"'Promyelocyte'.*--folder-map CSV"):
        index_export(root, _discovery(table), mapping)


def test_a_folder_map_file_holds_names_with_commas(export, tmp_path):
    root, table = export
    map_file = tmp_path / "map.csv"
    with open(map_file, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["folder", "class"])
        for cell_type in CELL_TYPES:
            writer.writerow([cell_type, "blast" if cell_type.startswith("Blast") else "exclude"])
    mapping = parse_folder_map(str(map_file))
    assert mapping["Blast, no lineage spec"] == "blast"
    index = index_export(root, _discovery(table), mapping)
    assert set(index.cells.loc[index.cells["cell_class"] != "exclude", "cell_type"]) == {
        "Blast, no lineage spec"
    }
    bad = tmp_path / "bad.csv"
    bad.write_text("folder,class\nLymphocyte,maybe\n")
    with pytest.raises(DatasetError, match="one of blast, non-blast, exclude"):
        index_export(root, _discovery(table), parse_folder_map(str(bad)))


def test_mutation_classes_come_from_the_labels_and_can_be_renamed(export):
    names = parse_label_names("APL=PML::RARA,AML=other AML")
    cells = _cells(export, kind="mutation", label_names=names)
    assert cells.classes == ("other AML", "PML::RARA")
    diagnosis = cells.annotations["label"].to_numpy()
    np.testing.assert_array_equal(cells.labels == 1, diagnosis == "APL")
    assert cells.is_blast.sum() == (cells.annotations["cell_class"] == "blast").sum()
    with pytest.raises(DatasetError, match="not among the classes"):
        _cells(export, kind="mutation", classes=("NPM1", "PML::RARA"), label_names=names)
    with pytest.raises(DatasetError, match="renames CML, which is not a label"):
        classes_from_labels(["AML", "APL"], {"CML": "x"})
    with pytest.raises(DatasetError, match="LABEL=NAME"):
        parse_label_names("APL:PML")


TRUE_PIXEL_SIZE_UM = 0.11


@pytest.fixture(scope="module")
def blood_images():
    """Synthetic blood fields at a known pixel size; their red cells average 7.4 µm across."""
    return [
        generate_field(seed, "blood", shape=(360, 360), pixel_size_um=TRUE_PIXEL_SIZE_UM).image
        for seed in range(40)
    ]


def test_the_pixel_size_is_measured_from_red_cells(blood_images):
    measured = measure_pixel_size(iter(blood_images))
    assert measured.n_red_cells >= 200
    expected = TRUE_PIXEL_SIZE_UM * RED_CELL_DIAMETER_UM / 7.4  # the yardstick is 7.5 µm
    assert measured.pixel_size_um == pytest.approx(expected, rel=0.05)
    with pytest.raises(DatasetError, match="--source-pixel-size-um"):
        measure_pixel_size(iter(blood_images[:2]))


def test_the_reader_measures_the_pixel_size_when_none_is_given(blood_images, tmp_path):
    export = write_export(tmp_path, blood_images, cells_per_type=2)
    cells = _cells(export, source_pixel_size_um=None)
    measurement = cells.source["pixel_size_measurement"]
    assert measurement["n_red_cells"] >= 200
    assert cells.source["source_pixel_size_um"] == measurement["pixel_size_um"]
    assert measurement["pixel_size_um"] == pytest.approx(TRUE_PIXEL_SIZE_UM * 7.5 / 7.4, rel=0.05)
