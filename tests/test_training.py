"""Training end to end on synthetic slides, resume, the CLI, augmentations and evaluation."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from blastscope.cli import main
from blastscope.models.classifier import (
    BLAST_CLASSES,
    MUTATION_CLASSES,
    load_classifier,
    write_random_classifier,
)
from blastscope.progress import run_steps
from blastscope.train.augment import NO_AUGMENTATION, AugmentConfig, augment_batch
from blastscope.train.datasets import DatasetError, synthetic_cells_steps
from blastscope.train.evaluate import (
    classification_metrics,
    expected_calibration_error,
    fit_temperature,
    roc_curve,
)
from blastscope.train.experiment import NoiseSpec, inject_noise, run_experiment_steps
from blastscope.train.loop import TrainConfig, TrainingError, train_steps
from blastscope.train.mutation import filter_blasts
from blastscope.train.noise import transition_matrix


@pytest.fixture(scope="module")
def easy_blast_cells():
    """Nucleated cells of 10 'easy' synthetic slides, 60 per slide (600 crops of 48 px)."""
    return run_steps(
        synthetic_cells_steps(
            "blast",
            "easy",
            10,
            60,
            seed=3,
            window_um=24.0,
            pixel_size_um=0.5,
            classes=BLAST_CLASSES,
            field_shape=(768, 768),
        )
    )


SMALL = {"widths": [16, 32, 64], "num_classes": 2, "blocks_per_stage": 1, "dropout": 0.1}


def test_blast_training_on_easy_slides_reaches_85_percent(easy_blast_cells, tmp_path):
    config = TrainConfig(epochs=4, batch_size=64, learning_rate=3e-3, seed=0)
    result = run_steps(
        run_experiment_steps(
            easy_blast_cells,
            config,
            kind="blast",
            out_dir=tmp_path / "run",
            device="cpu",
            name="easy-test",
        )
    )
    test = result.metrics["test"]
    assert test["n"] >= 100
    assert test["accuracy"] >= 0.85, test
    assert result.metrics["test_slides"]["n_slides"] >= 1
    # the report folder and the bundle, with metrics and provenance
    for name in ("metrics.json", "confusion_matrix.png", "roc_curves.png", "reliability.png"):
        assert (tmp_path / "run" / "report" / name).stat().st_size > 0
    assert (tmp_path / "run" / "report" / "training_curves.png").is_file()
    classifier = load_classifier(tmp_path / "run" / "bundle", "blast")
    training = classifier.metadata["training"]
    for key in ("command", "git_commit", "seed", "dataset", "noise_method", "noise_rate", "epochs"):
        assert key in training
    assert training["dataset"]["source"]["preset"] == "easy"
    assert classifier.metadata["metrics"]["test"]["accuracy"] == test["accuracy"]
    assert classifier.temperature == pytest.approx(result.temperature)


def _interrupt_after_first_epoch(steps, batches_per_epoch: int) -> None:
    """Drive a training generator into its second epoch, then close it (a cancel)."""
    for event in steps:
        if event.stage == "train" and event.done > batches_per_epoch:
            steps.close()
            return
    raise AssertionError("training ended before its second epoch")


def test_resumed_training_ends_with_the_weights_of_an_uninterrupted_run(easy_blast_cells, tmp_path):
    crops, labels = easy_blast_cells.crops[:192], easy_blast_cells.labels[:192]
    val_crops, val_labels = easy_blast_cells.crops[192:256], easy_blast_cells.labels[192:256]
    config = TrainConfig(
        epochs=2, batch_size=64, seed=5, architecture={"name": "blastnet", "args": SMALL}
    )

    def steps(checkpoint, resume=False):
        return train_steps(
            crops, labels, val_crops, val_labels, 2, config,
            device="cpu", checkpoint=checkpoint, resume=resume,
        )  # fmt: skip

    straight = run_steps(steps(tmp_path / "a.pt"))
    _interrupt_after_first_epoch(steps(tmp_path / "b.pt"), batches_per_epoch=3)
    resumed = run_steps(steps(tmp_path / "b.pt", resume=True))
    assert len(resumed.history) == 2
    assert resumed.history[0] == straight.history[0] | {"seconds": resumed.history[0]["seconds"]}
    for key, value in straight.network.state_dict().items():
        assert torch.allclose(value.float(), resumed.network.state_dict()[key].float(), atol=1e-6)


def test_checkpoint_of_other_settings_is_refused(easy_blast_cells, tmp_path):
    crops, labels = easy_blast_cells.crops[:64], easy_blast_cells.labels[:64]
    arch = {"name": "blastnet", "args": SMALL}
    first = TrainConfig(epochs=1, batch_size=32, architecture=arch)
    run_steps(train_steps(crops, labels, crops, labels, 2, first, checkpoint=tmp_path / "c.pt"))
    other = TrainConfig(epochs=1, batch_size=32, architecture=arch, method="gce")
    with pytest.raises(TrainingError, match="comes from other settings or data"):
        run_steps(
            train_steps(
                crops, labels, crops, labels, 2, other, checkpoint=tmp_path / "c.pt", resume=True
            )
        )
    with pytest.raises(TrainingError, match="Cannot resume: no checkpoint at"):
        run_steps(
            train_steps(
                crops, labels, crops, labels, 2, other, checkpoint=tmp_path / "none.pt", resume=True
            )
        )


def test_coteaching_estimates_its_forget_rate_when_none_is_given(easy_blast_cells, tmp_path):
    cells = easy_blast_cells
    noisy = inject_noise(cells.labels, cells.slide_ids, 2, NoiseSpec(rate=0.3, seed=1))
    config = TrainConfig(
        method="coteaching",
        epochs=2,
        batch_size=64,
        architecture={"name": "blastnet", "args": SMALL},
    )
    train, val = slice(0, 256), slice(256, 384)
    trained = run_steps(
        train_steps(
            cells.crops[train], noisy.labels[train], cells.crops[val], noisy.labels[val], 2, config
        )
    )
    assert trained.estimated_noise_rate is not None
    assert 0.0 < trained.forget_rate <= 0.5
    assert trained.history[1]["forget_rate"] == pytest.approx(trained.forget_rate)
    assert 0.0 <= trained.history[1]["selection_agreement"] <= 1.0


def test_last_epoch_selection_keeps_the_final_weights(easy_blast_cells):
    cells = easy_blast_cells
    train, val = slice(0, 256), slice(256, 384)
    arguments = (cells.crops[train], cells.labels[train], cells.crops[val], cells.labels[val], 2)
    config = TrainConfig(
        epochs=3, batch_size=64, architecture={"name": "blastnet", "args": SMALL}, seed=4
    )
    best = run_steps(train_steps(*arguments, config))
    last = run_steps(train_steps(*arguments, replace(config, epoch_selection="last")))
    assert last.best_epoch == 2
    assert [row["val_accuracy"] for row in last.history] == [
        row["val_accuracy"] for row in best.history
    ]
    chosen = max(best.history, key=lambda row: row["val_accuracy"])
    assert best.history[best.best_epoch]["val_accuracy"] == chosen["val_accuracy"]
    final = last.network.state_dict()
    if best.best_epoch != 2:
        assert any(
            not torch.equal(value, final[name]) for name, value in best.network.state_dict().items()
        )


def test_bad_training_settings_name_the_fix():
    with pytest.raises(TrainingError, match="epoch_selection must be one of best, last"):
        TrainConfig(epoch_selection="middle")
    with pytest.raises(TrainingError, match="Unknown training method 'mixup'"):
        TrainConfig(method="mixup")
    with pytest.raises(TrainingError, match="takes no parameter beta"):
        TrainConfig(method="gce", loss_params={"beta": 1.0})
    with pytest.raises(TrainingError, match="co-teaching trains with per-sample cross-entropy"):
        TrainConfig(method="coteaching", loss_params={"q": 0.5})
    crops = np.zeros((4, 48, 48, 3), np.uint8)
    with pytest.raises(TrainingError, match="hold one class only"):
        run_steps(train_steps(crops, np.zeros(4, int), crops, np.zeros(4, int), 2, TrainConfig()))


def test_slide_noise_flips_whole_slides():
    labels = np.repeat([0, 1, 2, 3], 10)
    slides = np.repeat([f"s{i}" for i in range(8)], 5)
    # two slides per class; at rate 0.5 one slide of each class flips, with all its cells
    noisy = inject_noise(labels, slides, 4, NoiseSpec(rate=0.5, unit="slide", seed=2))
    flipped_slides = {s for s, f in zip(slides, noisy.flipped, strict=True) if f}
    assert len(flipped_slides) == 4
    for slide in flipped_slides:
        assert noisy.flipped[slides == slide].all()


def test_cli_trains_a_mutation_bundle_and_refuses_bad_input(tmp_path, capsys):
    out = tmp_path / "mutation"
    code = main(
        ["train", "mutation", "--synthetic", "easy", "--n-slides", "8", "--cells-per-slide",
         "40", "--blast-filter", "truth", "--epochs", "1", "--widths", "16,32", "--batch-size",
         "32", "--noise-rate", "0.2", "--out", str(out), "--device", "cpu", "--name", "m-test"]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "mutation model: test accuracy" in captured.out
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["noise"]["realised_rate"] == pytest.approx(0.2, abs=0.02)
    assert metrics["test_slides"]["n_slides"] >= 1
    classifier = load_classifier(out / "bundle", "mutation")
    assert classifier.classes == MUTATION_CLASSES
    assert classifier.metadata["training"]["noise_rate"] == 0.2

    code = main(["train", "mutation", "--bags", str(tmp_path), "--out", str(tmp_path / "x")])
    assert code == 2
    assert "--bags needs --slide-labels CSV" in capsys.readouterr().err
    code = main(
        ["train", "blast", "--synthetic", "easy", "--n-slides", "3", "--cells-per-slide", "4",
         "--epochs", "1", "--noise-rate", "0.6", "--out", str(tmp_path / "y")]
    )  # fmt: skip
    assert code == 2
    assert "symmetric noise rate 0.6 is outside [0, 0.5)" in capsys.readouterr().err


def test_blast_filter_refuses_a_model_with_another_crop_size(easy_blast_cells, tmp_path):
    bundle = write_random_classifier(tmp_path / "b", "blast", window_um=32.0, pixel_size_um=0.5)
    with pytest.raises(DatasetError, match=r"takes 32 µm crops at 0\.5 µm/px, but these cells"):
        filter_blasts(easy_blast_cells, "model", blast_model=str(bundle))
    kept = filter_blasts(easy_blast_cells, "truth")
    assert len(kept) == int(easy_blast_cells.is_blast.sum())
    assert kept.source["blast_filter"] == "truth"


def test_augmentations_are_seeded_and_keep_shape_and_range():
    crops = torch.rand(16, 3, 32, 32)
    first = augment_batch(crops, torch.Generator().manual_seed(4))
    again = augment_batch(crops, torch.Generator().manual_seed(4))
    assert torch.equal(first, again)
    assert first.shape == crops.shape
    assert float(first.min()) >= 0.0
    assert float(first.max()) <= 1.0
    assert not torch.equal(first, crops)
    assert torch.equal(augment_batch(crops, torch.Generator(), NO_AUGMENTATION), crops)


def test_flips_and_rotations_only_permute_pixels():
    crops = torch.rand(8, 3, 16, 16)
    only_geometry = AugmentConfig(
        hed_scale=0, hed_shift=0, brightness=0, contrast=0, blur_sigma_px=0, scale=0
    )
    moved = augment_batch(crops, torch.Generator().manual_seed(0), only_geometry)
    assert torch.equal(moved.flatten(1).sort(dim=1).values, crops.flatten(1).sort(dim=1).values)


def test_roc_auc_and_ece_match_hand_values():
    # scores of 2 positives (0.8, 0.35) and 2 negatives (0.4, 0.1): 3 of 4 pairs ordered
    _, _, auc = roc_curve(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    assert auc == pytest.approx(0.75)
    # two samples at confidence 0.9 (one right) and two at 0.6 (both right):
    # ECE = 0.5 * |0.5 - 0.9| + 0.5 * |1.0 - 0.6| = 0.4
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    assert expected_calibration_error(probabilities, np.array([0, 1, 1, 1])) == pytest.approx(0.4)
    metrics = classification_metrics(probabilities, np.array([0, 1, 1, 1]), BLAST_CLASSES)
    assert metrics["confusion_matrix"] == [[1, 0], [1, 2]]
    assert metrics["per_class"]["blast"]["recall"] == pytest.approx(2 / 3)
    assert metrics["balanced_accuracy"] == pytest.approx((1.0 + 2 / 3) / 2)


def test_temperature_scaling_recovers_a_known_temperature_also_through_noise():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0.0, 2.0, (20000, 3))
    probabilities = torch.softmax(torch.from_numpy(true_logits), 1).numpy()
    clean = (probabilities.cumsum(1) > rng.random((20000, 1))).argmax(1)
    # the network's logits are 3x too confident: the temperature that fixes them is 3
    assert fit_temperature(3.0 * true_logits, clean) == pytest.approx(3.0, rel=0.05)
    # 30% symmetric noise on the labels: fitted through the noise model it is still ~3
    flip = rng.random(20000) < 0.3
    noisy = np.where(flip, (clean + rng.integers(1, 3, 20000)) % 3, clean)
    matrix = transition_matrix("symmetric", 0.3, 3)
    assert fit_temperature(3.0 * true_logits, noisy, matrix) == pytest.approx(3.0, rel=0.1)
    assert fit_temperature(3.0 * true_logits, noisy) > 4.0  # ignoring the noise flattens


def test_probabilities_of_wrong_shape_are_refused():
    with pytest.raises(ValueError, match=r"probabilities must be \(N, 2\) for 3 labels"):
        classification_metrics(np.zeros((3, 3)), np.zeros(3, int), BLAST_CLASSES)
    assert math.isnan(roc_curve(np.array([0.2, 0.3]), np.array([1, 1]))[2])
