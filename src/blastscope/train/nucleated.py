"""``blastscope train nucleated``: sort each segmented object into red cell, platelet, white cell.

The stain heuristic of :mod:`blastscope.cells` (share of purple pixels) calls mauve red cells of a
darker stain, or of CellaVision's, nucleated. This trainer learns the call instead, from

- **BCCD's training fields** (real peripheral blood, MIT; ``splits/train.txt`` only, never the
  validation split): each field is segmented with the shipped segmenter, and an object is a
  white cell when its bounding box matches a white-cell box (IoU >= 0.5), a platelet when it
  matches a platelet box, left out when its centre lies in a white-cell box it does not match (a
  piece of a white cell), and a red cell otherwise;
- **synthetic fields** of the ``default`` (marrow) and ``blood`` presets with their true masks
  and cell types, each also in a stain-augmented copy
  (:func:`~blastscope.train.segmenter_fit.augment_stain`).

Every field is stain-normalised against its own objects (:mod:`blastscope.stain`) before crops
are cut, and crops show the object alone (``mask_to_cell``): 24 µm at 0.5 µm per pixel. Red
cells of the synthetic fields are subsampled to :data:`RED_CELLS_PER_WHITE_CELL` per synthetic
white cell; every real object is kept. The split is by field.
After training, the bundle is scored through the pipeline on BCCD's validation fields: white-cell
recall (boxes whose object is called nucleated) and precision (objects called nucleated that are
a boxed white cell).

Example::

    blastscope train nucleated --out runs/nucleated \\
        --bundle src/blastscope/models/shipped/smear-nucleated
"""

from __future__ import annotations

import argparse
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from blastscope.cells import measure_cells
from blastscope.classes import NUCLEATED_CLASSES
from blastscope.crops import extract_crops
from blastscope.models.bundle import read_metadata, update_metadata
from blastscope.progress import Progress, progress_bars, run_steps
from blastscope.samples import BCCD_PIXEL_SIZE_UM
from blastscope.segment import SegmentationParams, segment
from blastscope.stain import normalise_to_cells
from blastscope.train.bccd_masks import bccd_field_ids, bccd_root, read_fields
from blastscope.train.boxes import box_iou_matrix, nucleated_call_scores, object_boxes
from blastscope.train.datasets import CellSet, DatasetError
from blastscope.train.options import add_training_arguments, run_guarded, train_config

HELP = "train the nucleated-cell classifier (red cell / platelet / white cell of every object)"
RED, PLATELET, WHITE = range(3)
RED_CELLS_PER_WHITE_CELL = 3
SYNTHETIC_PRESETS = ("default", "blood")
SYNTHETIC_SEED = 50_000
WINDOW_UM = 24.0
CROP_PIXEL_SIZE_UM = 0.5
CROP_OPTIONS = {"mask_to_cell": True, "stain_normalisation": "cells"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``blastscope train nucleated``."""
    data = parser.add_argument_group("data")
    data.add_argument("--bccd", type=Path, help="BCCD folder (default ../shared/data/bccd_smear)")
    data.add_argument(
        "--bccd-list",
        type=Path,
        help="train on the field ids listed in FILE (default splits/train)",
    )
    data.add_argument(
        "--bccd-fields", type=int, help="use only the first N BCCD training fields (tests)"
    )
    data.add_argument(
        "--synthetic-fields", type=int, default=60, help="synthetic 512 x 512 fields (default 60)"
    )
    data.add_argument("--val-fraction", type=float, default=0.15)
    data.add_argument("--test-fraction", type=float, default=0.15)
    data.add_argument(
        "--eval-list", type=Path, help="score the field ids listed in FILE (default splits/val)"
    )
    data.add_argument(
        "--eval-fields", type=int, help="score only the first N BCCD validation fields (tests)"
    )
    add_training_arguments(parser)
    parser.set_defaults(epochs=10, augment="strong")
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, required=True, help="run folder: report/, bundle/")
    output.add_argument("--bundle", type=Path, help="bundle folder (default OUT/bundle)")
    output.add_argument("--name", help="bundle name (default: the bundle folder's name)")
    output.add_argument("--overwrite", action="store_true", help="replace an existing bundle")


def _object_crops(
    image: np.ndarray, labels: np.ndarray, cells: pd.DataFrame, pixel_size_um: float
) -> np.ndarray:
    return extract_crops(
        normalise_to_cells(image, labels),
        cells[["centroid_y", "centroid_x"]].to_numpy(),
        pixel_size_um=pixel_size_um,
        window_um=WINDOW_UM,
        out_pixel_size_um=CROP_PIXEL_SIZE_UM,
        labels=labels,
        cell_labels=cells["label"].to_numpy(),
        mask_to_cell=True,
    )


def bccd_object_classes(labels: np.ndarray, boxes: pd.DataFrame) -> np.ndarray:
    """The class of each object of ``labels`` (in label order) from BCCD's boxes; -1 = left out
    (see the module docstring)."""
    found, ids = object_boxes(labels)
    classes = np.full(len(ids), RED)
    centres = np.stack([(found[:, 0] + found[:, 2]) / 2, (found[:, 1] + found[:, 3]) / 2], axis=1)
    for name, value in (("Platelets", PLATELET), ("WBC", WHITE)):
        chosen = boxes[boxes["class"] == name][["xmin", "ymin", "xmax", "ymax"]].to_numpy(float)
        if len(chosen) == 0:
            continue
        matched = (box_iou_matrix(found, chosen) >= 0.5).any(axis=1)
        classes[matched] = value
        if value == WHITE:
            inside = (
                (centres[:, None, 0] >= chosen[None, :, 0])
                & (centres[:, None, 0] <= chosen[None, :, 2])
                & (centres[:, None, 1] >= chosen[None, :, 1])
                & (centres[:, None, 1] <= chosen[None, :, 3])
            ).any(axis=1)
            classes[inside & ~matched] = -1
    return classes


def nucleated_cells_steps(
    bccd: Path | None,
    *,
    bccd_list: Path | None = None,
    n_bccd_fields: int | None,
    n_synthetic_fields: int,
    seed: int,
    device: str,
) -> Generator[Progress, None, CellSet]:
    """The training objects (see the module docstring) as a :class:`CellSet`."""
    from blastscope.synthetic import NUCLEATED_TYPES, generate_field
    from blastscope.train.segmenter_fit import augment_stain

    root = bccd_root(bccd)
    train_ids = bccd_field_ids(root, "train", bccd_list, n_bccd_fields)
    crops, classes, fields = [], [], []
    params = SegmentationParams(device=device, nucleated_model=None)
    for index, bccd_field in enumerate(read_fields(root, train_ids)):
        labels = segment(bccd_field.image, BCCD_PIXEL_SIZE_UM, params).labels
        cells = measure_cells(bccd_field.image, labels, BCCD_PIXEL_SIZE_UM)
        if len(cells):
            crops.append(_object_crops(bccd_field.image, labels, cells, BCCD_PIXEL_SIZE_UM))
            classes.append(bccd_object_classes(labels, bccd_field.boxes))
            fields += [f"bccd-{bccd_field.field_id}"] * len(cells)
        yield Progress("BCCD fields", index + 1, len(train_ids), bccd_field.field_id)
    rng = np.random.default_rng(seed)
    for index in range(n_synthetic_fields):
        preset = SYNTHETIC_PRESETS[index % len(SYNTHETIC_PRESETS)]
        truth = generate_field(SYNTHETIC_SEED + index, preset, shape=(512, 512))
        types = truth.cells["cell_type"].to_numpy()
        truth_classes = np.where(
            np.isin(types, NUCLEATED_TYPES), WHITE, np.where(types == "platelet", PLATELET, RED)
        )
        stained = augment_stain(truth.image, rng).round().astype(np.uint8)
        for image in (truth.image, stained):
            crops.append(_object_crops(image, truth.labels, truth.cells, truth.pixel_size_um))
            classes.append(truth_classes)
            fields += [f"synthetic-{preset}-{SYNTHETIC_SEED + index}"] * len(truth_classes)
        yield Progress("synthetic fields", index + 1, n_synthetic_fields, preset)
    labels = np.concatenate(classes).astype(np.int64)
    real = np.char.startswith(np.asarray(fields, dtype=str), "bccd-")
    kept = _balanced(labels, real, rng)
    kept = kept[labels[kept] >= 0]
    counts = np.bincount(labels[kept], minlength=3)
    if counts.min() == 0:
        raise DatasetError(
            "The training objects lack a class "
            f"({dict(zip(NUCLEATED_CLASSES, counts.tolist(), strict=True))});"
            " use more fields."
        )
    return CellSet(
        crops=np.concatenate(crops)[kept],
        labels=labels[kept],
        classes=NUCLEATED_CLASSES,
        window_um=WINDOW_UM,
        pixel_size_um=CROP_PIXEL_SIZE_UM,
        slide_ids=np.asarray(fields, dtype=object)[kept],
        true_labels=labels[kept],
        source={
            "kind": "BCCD training fields (segmented, classes from the boxes) and synthetic fields",
            "bccd_root": str(root),
            "bccd_train_fields": len(train_ids),
            "bccd_fields": f"listed in {bccd_list}"
            if bccd_list
            else "splits/train.txt (val never used)",
            "synthetic_fields": n_synthetic_fields,
            "synthetic_presets": list(SYNTHETIC_PRESETS),
            "synthetic_stain_copies": "each synthetic field also in one augment_stain copy",
            "objects_per_class": dict(zip(NUCLEATED_CLASSES, counts.tolist(), strict=True)),
            "synthetic_red_cells_per_white_cell": RED_CELLS_PER_WHITE_CELL,
            "crops": "stain normalised against the field's objects, the object alone",
        },
    )


def _balanced(labels: np.ndarray, real: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of every real (BCCD) object and every synthetic non-red object, and a random
    share of the synthetic red cells (sorted). Real red objects are all kept: their clumps and
    platelets lying on red cells are the hard negatives the synthetic fields lack."""
    synthetic_red = np.flatnonzero((labels == RED) & ~real)
    kept = np.flatnonzero(real | (labels > RED))
    n_red = min(len(synthetic_red), RED_CELLS_PER_WHITE_CELL * int((labels[~real] == WHITE).sum()))
    return np.sort(np.concatenate([rng.choice(synthetic_red, n_red, replace=False), kept]))


def bccd_validation_scores(
    bundle: Path,
    bccd: Path | None,
    *,
    listed: Path | None = None,
    n_fields: int | None = None,
    device: str = "auto",
) -> Generator[Progress, None, dict[str, Any]]:
    """White-cell precision and recall of the nucleated call on BCCD's validation fields,
    segmented and sorted as the pipeline does
    (:func:`blastscope.train.boxes.nucleated_call_scores`)."""
    from blastscope.pipeline import sort_cells_steps

    root = bccd_root(bccd)
    val_ids = bccd_field_ids(root, "val", listed, n_fields)
    totals = {"boxes": 0, "found": 0, "called": 0, "called_matching_a_box": 0}
    params = SegmentationParams(device=device, nucleated_model=str(bundle))
    for index, bccd_field in enumerate(read_fields(root, val_ids)):
        labels = segment(bccd_field.image, BCCD_PIXEL_SIZE_UM, params).labels
        cells = yield from sort_cells_steps(bccd_field.image, labels, BCCD_PIXEL_SIZE_UM, params)
        for key, value in nucleated_call_scores(labels, cells, bccd_field.boxes).items():
            totals[key] += value
        yield Progress("BCCD validation", index + 1, len(val_ids), bccd_field.field_id)
    return {
        "fields": len(val_ids),
        **totals,
        "white_cell_recall": totals["found"] / max(totals["boxes"], 1),
        "white_cell_precision": totals["called_matching_a_box"] / max(totals["called"], 1),
    }


def _run(args: argparse.Namespace) -> int:
    from blastscope.train.experiment import run_experiment_steps

    show = progress_bars()
    cells = run_steps(
        nucleated_cells_steps(
            args.bccd,
            bccd_list=args.bccd_list,
            n_bccd_fields=args.bccd_fields,
            n_synthetic_fields=args.synthetic_fields,
            seed=args.seed,
            device=args.device,
        ),
        show,
    )
    result = run_steps(
        run_experiment_steps(
            cells,
            train_config(args, len(NUCLEATED_CLASSES)),
            kind="nucleated",
            out_dir=args.out,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            bundle_dir=args.bundle,
            name=args.name,
            demo=True,
            device=args.device,
            overwrite=args.overwrite,
            provenance={"command": args.command_line} if "command_line" in args else None,
            crop_options=CROP_OPTIONS,
        ),
        show,
    )
    test = result.metrics["test"]
    print(
        f"nucleated model: test accuracy {test['accuracy']:.3f}, balanced accuracy "
        f"{test['balanced_accuracy']:.3f} on {test['n']} objects of held-out fields"
    )
    scores = run_steps(
        bccd_validation_scores(
            result.bundle_dir,
            args.bccd,
            listed=args.eval_list,
            n_fields=args.eval_fields,
            device=args.device,
        ),
        show,
    )
    metrics = read_metadata(result.bundle_dir)["metrics"]
    update_metadata(result.bundle_dir, {"metrics": {**metrics, "bccd_validation": scores}})
    print(
        f"BCCD validation fields ({scores['fields']}): white-cell recall "
        f"{scores['white_cell_recall']:.3f} ({scores['found']} of {scores['boxes']} boxes), "
        f"precision {scores['white_cell_precision']:.3f} ({scores['called']} objects called "
        "nucleated)"
    )
    print(f"report: {result.report_dir}\nbundle: {result.bundle_dir}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Train, score and save the nucleated classifier; 0 on success, 2 on bad input."""
    return run_guarded(_run, args)
