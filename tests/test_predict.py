import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from skimage.draw import ellipse

from blastscope.cells import measure_cells
from blastscope.crops import CropError
from blastscope.devices import DeviceError
from blastscope.models.classifier import load_classifier, write_random_classifier
from blastscope.predict import (
    PredictionError,
    apply_blast_threshold,
    classify_blasts_steps,
    predict_mutation_steps,
    refresh_mutation_calls,
)
from blastscope.progress import run_steps
from blastscope.samples import BCCD_PIXEL_SIZE_UM
from forward_counter import ForwardCounter

FIELD = "BloodImage_00000"


@pytest.fixture(scope="module")
def field(bccd_fields, bccd_boxes):
    """A real BCCD smear field, labels drawn as ellipses in its annotated boxes, its cells table."""
    path = next(p for p in bccd_fields if p.stem == FIELD)
    image = np.asarray(Image.open(path).convert("RGB"))
    labels = np.zeros(image.shape[:2], np.int32)
    boxes = sorted(bccd_boxes[FIELD], key=lambda box: box["class"] != "WBC")  # WBC on top
    for label, box in reversed(list(enumerate(boxes, start=1))):
        centre = ((box["ymin"] + box["ymax"]) / 2, (box["xmin"] + box["xmax"]) / 2)
        radii = ((box["ymax"] - box["ymin"]) / 2, (box["xmax"] - box["xmin"]) / 2)
        rows, cols = ellipse(*centre, *radii, shape=labels.shape)
        labels[rows, cols] = label
    cells = measure_cells(image, labels, BCCD_PIXEL_SIZE_UM)
    # The annotation marks which cells are white cells; the test needs a few nucleated cells.
    cells["is_nucleated"] = [boxes[label - 1]["class"] == "WBC" for label in cells["label"]]
    cells.loc[cells.index[:4], "is_nucleated"] = True
    return image, labels, cells


@pytest.fixture(scope="module")
def blast_path(tmp_path_factory):
    return write_random_classifier(tmp_path_factory.mktemp("b") / "blast", "blast", seed=1)


@pytest.fixture(scope="module")
def mutation_path(tmp_path_factory):
    return write_random_classifier(tmp_path_factory.mktemp("m") / "mutation", "mutation", seed=2)


def _classify(field, classifier, **options):
    image, labels, cells = field
    events = []
    steps = classify_blasts_steps(image, labels, cells, BCCD_PIXEL_SIZE_UM, classifier, **options)
    return run_steps(steps, events.append), events


def test_blast_classification_fills_the_table_for_nucleated_cells(field, blast_path):
    classifier = load_classifier(blast_path, "blast")
    classifier_count = ForwardCounter(classifier)
    table, events = _classify(field, classifier, device="cpu", batch_size=2)
    nucleated = field[2]["is_nucleated"].to_numpy()
    n_nucleated = int(nucleated.sum())
    assert list(table["label"]) == list(field[2]["label"])
    assert table.loc[nucleated, "p_blast"].between(0, 1).all()
    assert table.loc[~nucleated, "p_blast"].isna().all()
    expected_call = table["p_blast"].fillna(-1).to_numpy() >= 0.5
    np.testing.assert_array_equal(table["blast_call"], expected_call)
    assert str(table["blast_override"].dtype) == "boolean"
    assert table["blast_override"].isna().all()
    np.testing.assert_array_equal(table["is_blast"], expected_call)
    n_batches = -(-n_nucleated // 2)
    assert [(e.stage, e.done, e.total) for e in events] == [
        ("classify", done, n_batches) for done in range(1, n_batches + 1)
    ]
    assert classifier_count.calls == n_batches
    assert classifier_count.cells == n_nucleated
    assert "p_blast" not in field[2].columns  # the input table is not modified


def test_blast_probabilities_do_not_depend_on_batch_size(field, blast_path):
    classifier = load_classifier(blast_path, "blast")
    results = [
        _classify(field, classifier, device="cpu", batch_size=size)[0]["p_blast"].to_numpy()
        for size in (1, 3, 256)
    ]
    np.testing.assert_allclose(results[0], results[1], atol=1e-5)
    np.testing.assert_allclose(results[0], results[2], atol=1e-5)


def test_threshold_change_recomputes_calls_without_inference(field, blast_path):
    classifier = load_classifier(blast_path, "blast")
    classifier_count = ForwardCounter(classifier)
    table, _ = _classify(field, classifier, device="cpu")
    calls = classifier_count.calls
    p_blast = table["p_blast"].dropna().sort_values().to_numpy()
    middle = float(p_blast[len(p_blast) // 2])
    rethresholded = apply_blast_threshold(table, middle)
    assert classifier_count.calls == calls
    nucleated = table["is_nucleated"].to_numpy()
    np.testing.assert_array_equal(
        rethresholded.loc[nucleated, "blast_call"], table.loc[nucleated, "p_blast"] >= middle
    )
    assert not rethresholded.loc[~nucleated, "blast_call"].any()
    everything = apply_blast_threshold(table, 0.0)
    np.testing.assert_array_equal(everything["is_blast"], nucleated)


def test_user_overrides_survive_reclassification(field, blast_path):
    classifier = load_classifier(blast_path, "blast")
    image, labels, cells = field
    with_override = cells.copy()
    with_override["blast_override"] = pd.array([pd.NA] * len(cells), dtype="boolean")
    with_override.loc[with_override.index[0], "blast_override"] = True
    with_override.loc[with_override.index[1], "blast_override"] = False
    table = run_steps(
        classify_blasts_steps(
            image, labels, with_override, BCCD_PIXEL_SIZE_UM, classifier, threshold=0.0
        )
    )
    assert table["blast_override"].iloc[0]
    assert not table["blast_override"].iloc[1]
    assert table["is_blast"].iloc[0]
    assert not table["is_blast"].iloc[1]  # overrides the call (threshold 0 calls all)
    assert table["is_blast"].iloc[2:].to_numpy().tolist() == table["is_nucleated"].iloc[2:].tolist()


def test_closing_the_generator_stops_within_one_batch(field, blast_path):
    classifier = load_classifier(blast_path, "blast")
    classifier_count = ForwardCounter(classifier)
    image, labels, cells = field
    steps = classify_blasts_steps(
        image, labels, cells, BCCD_PIXEL_SIZE_UM, classifier, device="cpu", batch_size=1
    )
    first = next(steps)
    assert (first.done, first.total) == (1, int(cells["is_nucleated"].sum()))
    steps.close()
    assert classifier_count.calls == 1


def test_empty_table_and_single_border_cell_give_sensible_results(field, blast_path):
    classifier = load_classifier(blast_path, "blast")
    classifier_count = ForwardCounter(classifier)
    image, labels, cells = field
    events = []
    empty = run_steps(
        classify_blasts_steps(image, labels, cells.iloc[:0], BCCD_PIXEL_SIZE_UM, classifier),
        events.append,
    )
    assert len(empty) == 0
    assert {"p_blast", "blast_call", "blast_override", "is_blast"} <= set(empty.columns)
    assert [(e.done, e.total) for e in events] == [(0, 0)]
    assert classifier_count.calls == 0
    corner = cells.iloc[:1].copy()
    corner[["centroid_y", "centroid_x"]] = 0.0
    corner["is_nucleated"] = True
    one = run_steps(classify_blasts_steps(image, labels, corner, BCCD_PIXEL_SIZE_UM, classifier))
    assert 0 <= one["p_blast"].iloc[0] <= 1


def test_bad_inputs_are_refused_with_the_fix(field, blast_path, mutation_path):
    blast = load_classifier(blast_path, "blast")
    mutation = load_classifier(mutation_path, "mutation")
    image, labels, cells = field
    with pytest.raises(PredictionError, match=r"threshold must be a number between 0 and 1"):
        run_steps(
            classify_blasts_steps(image, labels, cells, BCCD_PIXEL_SIZE_UM, blast, threshold=1.2)
        )
    with pytest.raises(PredictionError, match=r"threshold must be a number between 0 and 1"):
        apply_blast_threshold(cells.assign(p_blast=0.5), -0.1)
    with pytest.raises(PredictionError, match="lacks p_blast; classify the cells first"):
        apply_blast_threshold(cells, 0.5)
    with pytest.raises(PredictionError, match="is a mutation classifier, but a blast classifier"):
        run_steps(classify_blasts_steps(image, labels, cells, BCCD_PIXEL_SIZE_UM, mutation))
    with pytest.raises(PredictionError, match="lacks is_nucleated; build it with"):
        run_steps(
            classify_blasts_steps(
                image, labels, cells.drop(columns="is_nucleated"), BCCD_PIXEL_SIZE_UM, blast
            )
        )
    with pytest.raises(PredictionError, match="lacks is_blast; classify blasts first"):
        run_steps(predict_mutation_steps(image, labels, cells, BCCD_PIXEL_SIZE_UM, mutation))
    with pytest.raises(PredictionError, match="batch_size must be a positive integer"):
        run_steps(
            classify_blasts_steps(image, labels, cells, BCCD_PIXEL_SIZE_UM, blast, batch_size=0)
        )


def test_cuda_on_a_machine_without_it_names_the_available_devices(field, blast_path):
    classifier = load_classifier(blast_path, "blast")
    image, labels, cells = field
    if torch.cuda.is_available():
        missing, message = f"cuda:{torch.cuda.device_count()}", r"does not exist: this machine has"
    else:
        missing, message = "cuda", r"'cuda' is not available on this machine \(available: .*cpu\)"
    with pytest.raises(DeviceError, match=message):
        run_steps(
            classify_blasts_steps(
                image, labels, cells, BCCD_PIXEL_SIZE_UM, classifier, device=missing
            )
        )


def test_mutation_prediction_covers_blasts_only(field, blast_path, mutation_path):
    image, labels, cells = field
    blast = load_classifier(blast_path, "blast")
    mutation = load_classifier(mutation_path, "mutation")
    mutation_count = ForwardCounter(mutation)
    classified = run_steps(
        classify_blasts_steps(image, labels, cells, BCCD_PIXEL_SIZE_UM, blast, device="cpu")
    )
    classified = apply_blast_threshold(classified, float(classified["p_blast"].median()))
    blasts = classified["is_blast"].to_numpy()
    assert 0 < blasts.sum() < classified["is_nucleated"].sum()
    events = []
    table = run_steps(
        predict_mutation_steps(
            image, labels, classified, BCCD_PIXEL_SIZE_UM, mutation, device="cpu", batch_size=2
        ),
        events.append,
    )
    columns = ["p_PML::RARA", "p_NPM1", "p_CBFB::MYH11", "p_RUNX1::RUNX1T1"]
    probabilities = table[columns].to_numpy()
    np.testing.assert_allclose(probabilities[blasts].sum(axis=1), 1.0, atol=1e-5)
    assert np.isnan(probabilities[~blasts]).all()
    top = np.array(mutation.classes)[probabilities[blasts].argmax(axis=1)]
    np.testing.assert_array_equal(table.loc[blasts, "mutation_call"], top)
    assert (table.loc[~blasts, "mutation_call"] == "").all()
    assert {e.stage for e in events} == {"mutation"}
    assert mutation_count.cells == blasts.sum()


def test_scoring_nucleated_cells_lets_a_lower_threshold_call_new_blasts_without_inference(
    field, blast_path, mutation_path
):
    image, labels, cells = field
    blast = load_classifier(blast_path, "blast")
    mutation = load_classifier(mutation_path, "mutation")
    mutation_count = ForwardCounter(mutation)
    classified = run_steps(
        classify_blasts_steps(image, labels, cells, BCCD_PIXEL_SIZE_UM, blast, device="cpu")
    )
    strict = apply_blast_threshold(classified, float(classified["p_blast"].max()))
    table = run_steps(
        predict_mutation_steps(
            image, labels, strict, BCCD_PIXEL_SIZE_UM, mutation, device="cpu", score="nucleated"
        )
    )
    nucleated = table["is_nucleated"].to_numpy()
    assert mutation_count.cells == nucleated.sum()
    assert table.loc[nucleated, "p_NPM1"].notna().all()
    assert (table.loc[~table["is_blast"], "mutation_call"] == "").all()
    calls_before = mutation_count.calls
    relaxed = refresh_mutation_calls(apply_blast_threshold(table, 0.0), mutation.classes)
    assert mutation_count.calls == calls_before
    assert (relaxed.loc[nucleated, "mutation_call"] != "").all()
    with pytest.raises(PredictionError, match="score must be one of blasts, nucleated"):
        run_steps(
            predict_mutation_steps(
                image, labels, strict, BCCD_PIXEL_SIZE_UM, mutation, score="everything"
            )
        )


def test_masked_bundle_crops_with_the_labels_and_needs_them(field, tmp_path):
    image, labels, cells = field
    masked = load_classifier(
        write_random_classifier(tmp_path / "masked", "blast", seed=1, mask_to_cell=True), "blast"
    )
    plain = load_classifier(write_random_classifier(tmp_path / "plain", "blast", seed=1), "blast")
    with_mask = run_steps(
        classify_blasts_steps(image, labels, cells, BCCD_PIXEL_SIZE_UM, masked, device="cpu")
    )
    without = run_steps(
        classify_blasts_steps(image, labels, cells, BCCD_PIXEL_SIZE_UM, plain, device="cpu")
    )
    nucleated = cells["is_nucleated"].to_numpy()
    assert not np.allclose(with_mask["p_blast"][nucleated], without["p_blast"][nucleated])
    with pytest.raises(CropError, match="mask_to_cell=True needs the labels image"):
        run_steps(classify_blasts_steps(image, None, cells, BCCD_PIXEL_SIZE_UM, masked))


def test_unknown_pixel_size_is_refused_with_the_fix(field, blast_path):
    image, labels, cells = field
    classifier = load_classifier(blast_path, "blast")
    with pytest.raises(CropError, match="give the image's pixel size"):
        run_steps(classify_blasts_steps(image, labels, cells, None, classifier))
