"""Command-line options shared by ``blastscope train blast`` and ``blastscope train mutation``.

Data come from exactly one of ``--synthetic PRESET`` (the generator), ``--folders DIR`` (one
folder per class; ``--folder-map``), ``--bags DIR`` (one folder per slide, with
``--slide-labels CSV``) or ``--cellavision DIR`` (a CellaVision export: one folder per patient,
cell-type folders inside, with ``--patients CSV``; :mod:`blastscope.train.cellavision`). Real
single-cell images are cut to the bundle's window (``--window-um``) and crop pixel size
(``--pixel-size-um``) from their own pixel size (``--source-pixel-size-um``, or the files'
metadata): see :mod:`blastscope.train.datasets`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import torch

from blastscope.classes import MUTATION_CLASSES
from blastscope.devices import resolve_device
from blastscope.errors import BlastscopeError
from blastscope.models.architectures import default_architecture
from blastscope.models.classifier import DEFAULT_CROP_PIXEL_SIZE_UM, DEFAULT_WINDOW_UM
from blastscope.progress import Progress, run_steps
from blastscope.train.augment import AUGMENTATIONS, NO_AUGMENTATION
from blastscope.train.cellavision import (
    DEFAULT_MAX_IMAGE_SIDE_PX,
    cellavision_cells_steps,
    parse_label_names,
    read_patients,
)
from blastscope.train.crossval import format_estimate
from blastscope.train.datasets import (
    CellSet,
    DatasetError,
    load_bags,
    load_class_folders,
    parse_folder_map,
    slide_label_classes,
    synthetic_cells_steps,
)
from blastscope.train.experiment import NOISE_UNITS, NoiseSpec, run_experiment_steps
from blastscope.train.loop import TrainConfig, TrainingError
from blastscope.train.losses import METHODS
from blastscope.train.noise import NOISE_KINDS


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Data, training, noise and output options of both trainers."""
    add_data_arguments(parser)
    add_training_arguments(parser)
    _add_noise_and_output_arguments(parser)


def add_data_arguments(
    parser: argparse.ArgumentParser, *, crop_options: bool = True, split_options: bool = True
) -> None:
    """Where the cells come from (:func:`load_cells`); crop size and split fractions optional."""
    data = parser.add_argument_group("data (one source)")
    source = data.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--synthetic", metavar="PRESET", help="train on the generator's slides (default, easy, ...)"
    )
    source.add_argument("--folders", type=Path, metavar="DIR", help="one folder per class")
    source.add_argument(
        "--bags", type=Path, metavar="DIR", help="one folder per slide; needs --slide-labels"
    )
    source.add_argument(
        "--cellavision",
        type=Path,
        metavar="DIR",
        help="a CellaVision export: DIR/<patient>/.../Signed slides/<cell type>/<image>; needs "
        "--patients",
    )
    data.add_argument("--slide-labels", type=Path, metavar="CSV", help="slide_id,label per slide")
    data.add_argument(
        "--folder-map",
        metavar="MAP",
        help="folder -> class: 'lmu' (AML-Cytomorphology_LMU), FOLDER=CLASS,... or a CSV file "
        "with the header folder,class; default: folders are named after the classes (for "
        "--cellavision: the default cell-type map, classes blast / non-blast / exclude)",
    )
    patients = parser.add_argument_group("patients (--cellavision)")
    patients.add_argument(
        "--patients", type=Path, metavar="CSV", help="one row per patient: id, label, cohort"
    )
    patients.add_argument(
        "--id-column", metavar="NAME", help="patient id column (default: the first column)"
    )
    patients.add_argument(
        "--label-column",
        metavar="NAME",
        help="the label every cell of the patient inherits (diagnosis or mutation)",
    )
    patients.add_argument(
        "--cohort-column", metavar="NAME", help="cohort column (default: a column named cohort)"
    )
    patients.add_argument(
        "--cohort",
        metavar="NAME[,NAME]",
        help="the cohort(s) to use; required when the CSV has a cohort column",
    )
    patients.add_argument(
        "--label-names",
        metavar="LABEL=NAME,...",
        help="rename labels to class names, e.g. APL=PML::RARA,'AML=other AML'",
    )
    patients.add_argument(
        "--max-image-side-px",
        type=int,
        default=DEFAULT_MAX_IMAGE_SIDE_PX,
        help="skip (and count) images larger than this, e.g. overview fields (default "
        f"{DEFAULT_MAX_IMAGE_SIDE_PX})",
    )
    data.add_argument(
        "--source-pixel-size-um",
        type=float,
        metavar="UM",
        help="µm per pixel of the images in the folders (default: from their metadata; for "
        "--cellavision measured from the red cells)",
    )
    data.add_argument("--n-slides", type=int, default=40, help="synthetic slides (default 40)")
    data.add_argument(
        "--cells-per-slide", type=int, default=100, help="synthetic cells per slide (default 100)"
    )
    data.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic slides")
    if crop_options:
        data.add_argument(
            "--window-um", type=float, default=DEFAULT_WINDOW_UM, help="crop window side in µm"
        )
        data.add_argument(
            "--pixel-size-um",
            type=float,
            default=DEFAULT_CROP_PIXEL_SIZE_UM,
            help="µm per pixel of the crops",
        )
    if split_options:
        data.add_argument("--val-fraction", type=float, default=0.15)
        data.add_argument("--test-fraction", type=float, default=0.15)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The method, its parameters, the optimiser, the network widths, seed, threads, device."""
    training = parser.add_argument_group("training")
    training.add_argument(
        "--method", choices=METHODS, default="ce", help="loss or sample selection (default ce)"
    )
    training.add_argument(
        "--loss-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a loss parameter, e.g. q=0.7 (gce), alpha=0.1 (sce), epsilon=0.1 (smoothing)",
    )
    training.add_argument(
        "--forget-rate",
        type=float,
        help="co-teaching's final forget rate (default: estimated from the losses)",
    )
    training.add_argument("--ramp-epochs", type=int, help="co-teaching ramp (default epochs/3)")
    training.add_argument("--epochs", type=int, default=12)
    training.add_argument("--batch-size", type=int, default=128)
    training.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate")
    training.add_argument("--weight-decay", type=float, default=1e-4)
    training.add_argument("--patience", type=int, help="stop after this many epochs without gain")
    training.add_argument(
        "--widths", metavar="W,W,...", help="blastnet stage widths (default: the architecture's)"
    )
    training.add_argument(
        "--augment",
        choices=tuple(AUGMENTATIONS),
        default="standard",
        help="augmentation strength: standard, or strong stain / colour / blur jitter for "
        "models that must hold on other labs' stains",
    )
    training.add_argument("--no-augment", action="store_true", help="train without augmentation")
    training.add_argument("--seed", type=int, default=0)
    training.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's choice; 1 can be much faster on a busy machine)",
    )
    training.add_argument(
        "--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda[:N] or mps"
    )


def _add_noise_and_output_arguments(parser: argparse.ArgumentParser) -> None:
    noise = parser.add_argument_group("label noise (experiments)")
    noise.add_argument("--noise-rate", type=float, default=0.0, help="inject this share of flips")
    noise.add_argument("--noise-kind", choices=NOISE_KINDS, default="symmetric")
    noise.add_argument("--noise-unit", choices=NOISE_UNITS, default="cell")
    noise.add_argument("--noise-seed", type=int, help="default: --seed")
    noise.add_argument(
        "--assumed-noise-rate",
        type=float,
        default=0.0,
        help="share of wrong labels believed to be in the data (calibration through the noise)",
    )

    output = parser.add_argument_group("output")
    output.add_argument(
        "--out", type=Path, required=True, help="run folder: checkpoint.pt, report/, bundle/"
    )
    output.add_argument("--bundle", type=Path, help="bundle folder (default OUT/bundle)")
    output.add_argument("--name", help="bundle name (default: the bundle folder's name)")
    output.add_argument(
        "--demo", action="store_true", help="mark as a demonstration model (not for diagnosis)"
    )
    output.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    output.add_argument("--overwrite", action="store_true", help="replace an existing bundle")


def _loss_params(items: list[str]) -> dict[str, float]:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise TrainingError(
                f"Cannot read --loss-param {item!r}: write KEY=NUMBER, e.g. --loss-param q=0.7."
            )
    return params


def train_config(args: argparse.Namespace, n_classes: int) -> TrainConfig:
    """The TrainConfig the options describe."""
    architecture = default_architecture(n_classes)
    if args.widths:
        try:
            widths = [int(part) for part in args.widths.split(",")]
        except ValueError as error:
            raise TrainingError(
                f"Cannot read --widths {args.widths!r}: give integers separated by commas."
            ) from error
        architecture["args"]["widths"] = widths
    return TrainConfig(
        method=args.method,
        loss_params=_loss_params(args.loss_param),
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        patience=args.patience,
        forget_rate=args.forget_rate,
        ramp_epochs=args.ramp_epochs,
        augment=NO_AUGMENTATION if args.no_augment else AUGMENTATIONS[args.augment],
        architecture=architecture,
        seed=args.seed,
    )


def noise_spec(args: argparse.Namespace) -> NoiseSpec:
    """The injected noise the options describe."""
    seed = args.seed if args.noise_seed is None else args.noise_seed
    return NoiseSpec(rate=args.noise_rate, kind=args.noise_kind, unit=args.noise_unit, seed=seed)


def load_cells(
    args: argparse.Namespace, kind: str, classes: tuple[str, ...] | None, on_progress: Any
) -> CellSet:
    """Read or make the cells the options ask for.

    ``classes`` None (mutation models): the label values of the data (``--bags``,
    ``--cellavision``), the four default mutation classes for ``--synthetic``.
    """
    if args.cellavision:
        return run_steps(cellavision_cells_as_asked(args, kind, classes), on_progress)
    if args.synthetic and classes is None:
        classes = MUTATION_CLASSES
    if args.synthetic:
        return run_steps(
            synthetic_cells_steps(
                kind,
                args.synthetic,
                args.n_slides,
                args.cells_per_slide,
                seed=args.data_seed,
                window_um=args.window_um,
                pixel_size_um=args.pixel_size_um,
                classes=classes,
            ),
            on_progress,
        )
    if args.folders:
        return load_class_folders(
            args.folders,
            classes,
            folder_map=parse_folder_map(args.folder_map) if args.folder_map else None,
            window_um=args.window_um,
            pixel_size_um=args.pixel_size_um,
            source_pixel_size_um=args.source_pixel_size_um,
        )
    if args.slide_labels is None:
        raise DatasetError(
            "--bags needs --slide-labels CSV (columns slide_id,label) giving each slide's label."
        )
    if classes is None:
        classes = slide_label_classes(args.slide_labels)
    return load_bags(
        args.bags,
        args.slide_labels,
        classes,
        window_um=args.window_um,
        pixel_size_um=args.pixel_size_um,
        source_pixel_size_um=args.source_pixel_size_um,
    )


def cellavision_cells_as_asked(
    args: argparse.Namespace, kind: str, classes: tuple[str, ...] | None
) -> Generator[Progress, None, CellSet]:
    """:func:`~blastscope.train.cellavision.cellavision_cells_steps` with the options."""
    if args.patients is None:
        raise DatasetError(
            "--cellavision needs --patients CSV: one row per patient with its id (the patient "
            "folder's name), its label (--label-column) and, where there are several, its cohort."
        )
    patients = read_patients(
        args.patients,
        id_column=args.id_column,
        label_column=args.label_column,
        cohort_column=args.cohort_column,
        cohort=args.cohort,
    )
    return cellavision_cells_steps(
        args.cellavision,
        patients,
        kind=kind,
        window_um=args.window_um,
        pixel_size_um=args.pixel_size_um,
        classes=classes,
        label_names=parse_label_names(args.label_names),
        cell_type_map=parse_folder_map(args.folder_map) if args.folder_map else None,
        source_pixel_size_um=args.source_pixel_size_um,
        max_image_side_px=args.max_image_side_px,
    )


def train_and_report(
    args: argparse.Namespace,
    cells: CellSet,
    kind: str,
    on_progress: Any,
    **experiment_options: Any,
) -> int:
    """Run the experiment the options describe on ``cells`` and print where everything went."""
    config = train_config(args, len(cells.classes))
    result = run_steps(
        run_experiment_steps(
            cells,
            config,
            kind=kind,
            out_dir=args.out,
            noise=noise_spec(args),
            assumed_noise_rate=args.assumed_noise_rate,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            bundle_dir=args.bundle,
            name=args.name,
            demo=args.demo,
            device=args.device,
            resume=args.resume,
            overwrite=args.overwrite,
            provenance={"command": args.command_line} if "command_line" in args else None,
            **experiment_options,
        ),
        on_progress,
    )
    test = result.metrics["test"]
    print(
        f"{kind} model: test accuracy {test['accuracy']:.3f}, balanced accuracy "
        f"{test['balanced_accuracy']:.3f}, ECE {test['ece']:.3f} ({result.metrics['test_labels']}"
        f", {test['n']} cells); best epoch {result.trained.best_epoch + 1} of "
        f"{len(result.trained.history)}; temperature {result.temperature:.3f}"
    )
    slides = result.metrics.get("test_slides")
    if slides and kind == "mutation":
        print(
            f"slide calls: {slides['n_called']} of {slides['n_slides']} test slides called, "
            f"accuracy of calls {_share(slides['accuracy_of_calls'])}"
        )
    patients = result.metrics.get("test_patients")
    if patients:
        print(
            f"test patients ({patients['positive_class']} vs rest, mean of the blasts): AUC "
            f"{format_estimate(patients['auc_called'])}; operating point (90% specificity on "
            f"the validation patients) sensitivity "
            f"{format_estimate(patients['operating_point_sensitivity'], 2)}, specificity "
            f"{format_estimate(patients['operating_point_specificity'], 2)}"
        )
    if slides and kind == "blast":
        print(
            f"blast percentage per test slide: mean absolute error "
            f"{slides['blast_percentage_mean_abs_error']:.1f} points over {slides['n_slides']} "
            "slides"
        )
    print(f"report: {result.report_dir}")
    if result.bundle_dir is not None:
        print(f"bundle: {result.bundle_dir}")
    return 0


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def run_guarded(run: Any, args: argparse.Namespace) -> int:
    """Run a trainer; errors about the inputs print their message (no traceback) and return 2.

    The device is checked first, before any data are read or made.
    """
    try:
        resolve_device(args.device)
        if args.threads is not None:
            if args.threads < 1:
                raise TrainingError(f"--threads must be at least 1, got {args.threads}.")
            torch.set_num_threads(args.threads)
        return run(args)
    # BlastscopeError: every error of ours (DatasetError, TrainingError, DeviceError, ...)
    except (BlastscopeError, ValueError, FileExistsError) as error:
        words = ["blastscope", getattr(args, "command", None), getattr(args, "trainer", None)]
        command = " ".join(word for word in words if word)
        print(f"{command}: error: {error}", file=sys.stderr)
        return 2
