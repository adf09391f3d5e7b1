"""Patient-grouped cross-validation, patient-bootstrap intervals, attention MIL pooling."""

import json

import numpy as np
import pytest
import torch

from blastscope.cli import main
from blastscope.models.classifier import BLAST_CLASSES, load_classifier
from blastscope.progress import run_steps
from blastscope.train.crossval import (
    Arm,
    crossval_blast_steps,
    crossval_mutation_steps,
    plan_folds,
    stratified_patient_folds,
)
from blastscope.train.datasets import DatasetError, synthetic_cells_steps
from blastscope.train.loop import TrainConfig
from blastscope.train.mil import bag_probabilities, train_attention_mil
from blastscope.train.resampling import (
    auc,
    balanced_threshold,
    cluster_bootstrap,
    paired_cluster_bootstrap,
    sensitivity_at_specificity,
    threshold_at_specificity,
)
from cellavision_cases import BCCD_PIXEL_SIZE_UM, white_cell_crops, write_export

SMALL = {"widths": [16, 32, 64], "blocks_per_stage": 1, "dropout": 0.1}


def _config(method="ce", epochs=2, classes=2):
    architecture = {"name": "blastnet", "args": {**SMALL, "num_classes": classes}}
    return TrainConfig(method=method, epochs=epochs, batch_size=64, architecture=architecture)


STRATA = {f"P{k:02d}": ("APL" if k % 3 == 0 else "AML") for k in range(20)}


def test_patient_folds_are_stratified_and_hold_each_patient_once():
    folds = stratified_patient_folds(STRATA, 5, seed=1)
    assert set(folds) == set(STRATA)
    for fold in range(5):
        members = [p for p, f in folds.items() if f == fold]
        assert {STRATA[p] for p in members} == {"APL", "AML"}
    for plan in plan_folds(STRATA, 5, 0.2, seed=1):
        parts = [set(plan.test), set(plan.train), set(plan.val)]
        assert sum(map(len, parts)) == len(STRATA)
        assert set.union(*parts) == set(STRATA)  # disjoint and complete
        assert {STRATA[p] for p in plan.val} == {"APL", "AML"}
    with pytest.raises(DatasetError, match="cannot fill 30 folds"):
        stratified_patient_folds(STRATA, 30)


def test_the_patient_bootstrap_interval_reflects_patients_not_cells():
    """Four patients of 500 identical cells carry the information of four, not 2,000."""
    values = np.repeat([0.0, 0.0, 1.0, 1.0], 500)
    clustered = cluster_bootstrap(
        lambda i: values[i].mean(), np.repeat(["a", "b", "c", "d"], 500), n_bootstrap=300
    )
    independent = cluster_bootstrap(
        lambda i: values[i].mean(), np.arange(2000).astype(str), n_bootstrap=300
    )
    assert clustered.value == independent.value == 0.5
    assert clustered.high - clustered.low > 0.4
    assert independent.high - independent.low < 0.1


def test_a_paired_bootstrap_prefers_the_better_scores():
    rng = np.random.default_rng(0)
    truth = rng.uniform(size=60) < 0.3
    good = truth + rng.normal(0, 0.4, size=60)
    noise = rng.normal(0, 1, size=60)
    delta, p_value = paired_cluster_bootstrap(
        lambda i: auc(good[i], truth[i]),
        lambda i: auc(noise[i], truth[i]),
        np.arange(60).astype(str),
        n_bootstrap=300,
    )
    assert delta.low > 0
    assert p_value < 0.05


def test_operating_points_on_scores():
    negatives = np.arange(10, dtype=float)
    scores = np.r_[negatives, [7.5, 9.5, 20.0]]
    positive = np.r_[np.zeros(10, bool), np.ones(3, bool)]
    threshold = threshold_at_specificity(scores, positive, 0.9)
    assert ((scores >= threshold) & ~positive).sum() == 1  # 90% specificity: one of ten
    assert sensitivity_at_specificity(scores, positive, 0.9) == pytest.approx(2 / 3)
    assert 4.0 < balanced_threshold(np.r_[0, 1, 2, 5, 6], np.r_[0, 0, 0, 1, 1] == 1) <= 5.0


def test_attention_pooling_finds_the_few_cells_that_decide_a_bag():
    """Positive bags hold 3 'key' cells among 30; attention must find and weigh them."""
    rng = np.random.default_rng(0)

    def bag(positive: bool) -> np.ndarray:
        cells = rng.normal(size=(30, 8)).astype(np.float32)
        if positive:
            cells[:3, 0] += 4.0
        return cells

    labels = np.arange(80) % 2
    bags = [bag(bool(label)) for label in labels]
    model, history = train_attention_mil(
        bags[:50], labels[:50], bags[50:60], labels[50:60], 2, epochs=40, seed=0
    )
    assert min(row["val_loss"] for row in history) < history[0]["val_loss"]
    probabilities = bag_probabilities(model, bags[60:])
    assert auc(probabilities[:, 1], labels[60:] == 1) >= 0.95
    _, weights = model(torch.from_numpy(bags[61]))
    assert float(weights[:3].sum()) > 3 / 30 * 2  # the key cells weigh more than their share


@pytest.fixture(scope="module")
def binary_mutation_cells():
    """12 'easy' synthetic slides (patients), NPM1 or PML::RARA, 40 nucleated cells each."""
    return run_steps(
        synthetic_cells_steps(
            "mutation",
            "easy",
            12,
            40,
            seed=5,
            window_um=24.0,
            pixel_size_um=0.5,
            classes=("NPM1", "PML::RARA"),
            field_shape=(512, 512),
        )
    )


def test_blast_crossval_scores_every_cell_once_out_of_fold(binary_mutation_cells):
    cells = binary_mutation_cells.subset(np.arange(len(binary_mutation_cells)))
    cells.labels = cells.is_blast.astype(np.int64)
    cells.classes = BLAST_CLASSES
    result = run_steps(
        crossval_blast_steps(cells, _config(), n_folds=3, n_bootstrap=100, device="cpu")
    )
    table = result.cells
    assert len(table) == len(cells)
    assert table.groupby("patient")["fold"].nunique().max() == 1  # a patient in one fold
    assert len(result.folds) == 3
    assert all(0.0 <= fold["threshold"] <= 1.0 for fold in result.folds)
    balanced = result.metrics["balanced_accuracy"]
    assert balanced["low"] <= balanced["value"] <= balanced["high"]
    assert result.metrics["auc"]["value"] > 0.5


def test_mutation_crossval_compares_arms_on_the_same_patients(binary_mutation_cells):
    configs = {"ce": _config("ce"), "gce": _config("gce")}
    result = run_steps(
        crossval_mutation_steps(
            binary_mutation_cells,
            configs,
            poolings=("mean", "geometric", "attention"),
            primary=Arm("gce", "attention"),
            baseline=Arm("ce", "mean"),
            min_blasts=3,
            n_folds=3,
            n_bootstrap=100,
            device="cpu",
        )
    )
    patients = result.patients
    assert set(patients["arm"]) == {
        f"{m}+{p}" for m in ("ce", "gce") for p in ("mean", "geometric", "attention")
    }
    assert (patients.groupby("arm")["patient"].nunique() == 12).all()
    metrics = result.metrics
    assert metrics["positive_class"] == "PML::RARA"
    comparison = metrics["primary_comparison"]
    assert comparison["primary"] == "gce+attention"
    assert comparison["baseline"] == "ce+mean"
    assert comparison["delta_auc_called"]["n_resamples"] == 100
    assert [row["min_blasts"] for row in metrics["min_blasts_table"]] == [1, 2, 3, 5, 10, 20]
    # the cells pooled are the test patients' blasts only
    assert set(result.cells["method"]) == {"ce", "gce"}
    blasts = binary_mutation_cells.is_blast.sum()
    assert (result.cells.groupby("method").size() == blasts).all()


def test_an_arm_that_was_not_run_is_refused(binary_mutation_cells):
    with pytest.raises(DatasetError, match="sce\\+mean is not among"):
        run_steps(
            crossval_mutation_steps(
                binary_mutation_cells,
                {"ce": _config()},
                primary=Arm("sce", "mean"),
                baseline=Arm("ce", "mean"),
            )
        )


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory, bccd_fields, bccd_boxes):
    crops = white_cell_crops(bccd_fields[:6], bccd_boxes)
    return write_export(tmp_path_factory.mktemp("export"), crops, cells_per_type=2)


def _export_options(tiny_export):
    root, table = tiny_export
    return [
        "--cellavision",
        str(root),
        "--patients",
        str(table),
        "--id-column",
        "Patient_ID",
        "--label-column",
        "Diagnosis",
        "--cohort",
        "Discovery",
        "--source-pixel-size-um",
        str(BCCD_PIXEL_SIZE_UM),
        "--widths",
        "8,16",
        "--epochs",
        "1",
        "--device",
        "cpu",
    ]


def test_crossval_commands_run_on_a_cellavision_export(tiny_export, tmp_path, capsys):
    options = _export_options(tiny_export)
    assert main(["crossval", "blast", *options, "--folds", "3", "--bootstrap", "100",
                 "--out", str(tmp_path / "blast")]) == 0  # fmt: skip
    metrics = json.loads((tmp_path / "blast" / "metrics.json").read_text())
    assert metrics["data"]["cohort"] == ["Discovery"]
    assert "Promyelocyte" in metrics["called_blast"]["by_cell_type"]
    assert (tmp_path / "blast" / "summary.md").read_text().startswith("Blast classifier")
    code = main(
        ["crossval", "mutation", *options, "--folds", "3", "--bootstrap", "100",
         "--methods", "ce,gce", "--label-names", "APL=PML::RARA,AML=other AML",
         "--min-blasts", "2", "--out", str(tmp_path / "mutation")]
    )  # fmt: skip
    assert code == 0
    summary = (tmp_path / "mutation" / "summary.md").read_text()
    assert "Primary comparison (declared in advance): gce+attention vs ce+mean" in summary
    assert "positive class PML::RARA" in summary
    assert (tmp_path / "mutation" / "roc.png").stat().st_size > 1000


def test_train_and_evaluate_read_a_cellavision_export(tiny_export, tmp_path, capsys):
    options = _export_options(tiny_export)
    names = ["--label-names", "APL=PML::RARA,AML=other AML"]
    assert main(["train", "mutation", *options, *names, "--out", str(tmp_path / "m")]) == 0
    classifier = load_classifier(tmp_path / "m" / "bundle", "mutation")
    assert classifier.classes == ("other AML", "PML::RARA")
    source = classifier.metadata["training"]["dataset"]["source"]
    assert source["blast_filter"] == "folder-map"
    assert source["skipped"]["unsigned (no cell type)"] == 20
    evaluate = ["evaluate", str(tmp_path / "m" / "bundle"), *options[:12], *names]
    assert main([*evaluate, "--out", str(tmp_path / "e"), "--device", "cpu"]) == 0
    evaluated = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert evaluated["kind"] == "mutation"
    threshold = classifier.metadata["metrics"]["operating_point"]["threshold"]
    assert evaluated["patients"]["operating_threshold"] == threshold
    assert evaluated["patients"]["n_patients"] == 10
    assert "patients" not in classifier.metadata["metrics"]["test_patients"]  # rows stay out
    root, table = tiny_export
    refused = ["train", "blast", "--cellavision", str(root), "--patients", str(table)]
    assert main([*refused, "--out", str(tmp_path / "b")]) == 2
    assert "choose the cohort to use with --cohort" in capsys.readouterr().err
