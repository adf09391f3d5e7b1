"""``blastscope train mutation``: the stage-2 mutation classifier, on blasts with bag labels.

Every cell inherits its slide's mutation (bag label). Training and evaluation use only the cells
that stage 1 calls blasts: ``--blast-filter model`` runs a blast bundle (``--blast-model``, the
shipped ``blast-demo`` by default) at its threshold (or ``--blast-threshold``); ``truth`` uses the
generator's truth (synthetic data only); ``folder-map`` the technologist's cell types of a
CellaVision export mapped by the cell-type map (the default with ``--cellavision``); ``none``
keeps every cell (folders that hold blasts only). The classes default to the labels of the data
(``--bags``, ``--cellavision``; renamed with ``--label-names``), the four AML subtypes for
``--synthetic``.
The split is by slide, never by cell; the report scores cells and the pooled slide calls.

Example::

    blastscope train mutation --synthetic default --n-slides 60 --cells-per-slide 150 \\
        --blast-filter truth --out runs/mutation
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from blastscope.classes import MUTATION_CLASSES
from blastscope.models.classifier import load_classifier
from blastscope.progress import progress_bars, run_steps
from blastscope.slide_call import DEFAULT_MIN_BLASTS
from blastscope.train.datasets import CellSet, DatasetError
from blastscope.train.evaluate import probabilities_steps
from blastscope.train.options import add_common_arguments, load_cells, run_guarded, train_and_report

HELP = "train the mutation classifier on blasts with slide (bag) labels, noise-robust options"
BLAST_FILTERS = ("model", "truth", "folder-map", "none")
_FILTER_BATCH = 512


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``blastscope train mutation``."""
    add_common_arguments(parser)
    group = parser.add_argument_group("mutation model")
    group.add_argument(
        "--classes",
        help="classes in logit order, comma-separated (default: the labels of the data; the "
        f"four AML subtypes {','.join(MUTATION_CLASSES)} for --synthetic)",
    )
    add_blast_filter_arguments(group)
    group.add_argument(
        "--min-blasts",
        type=int,
        default=DEFAULT_MIN_BLASTS,
        help="slide calls abstain below this many blasts",
    )


def add_blast_filter_arguments(group: Any) -> None:
    """``--blast-filter``, ``--blast-model``, ``--blast-threshold`` on a parser or argument group
    (see :func:`filter_blasts`)."""
    group.add_argument(
        "--blast-filter",
        choices=BLAST_FILTERS,
        help="which cells count as blasts: a blast model's calls, the generator's truth, the "
        "cell-type map of a CellaVision export, or all (default: folder-map for --cellavision, "
        "else model)",
    )
    group.add_argument(
        "--blast-model", default="blast-demo", help="blast bundle for --blast-filter model"
    )
    group.add_argument(
        "--blast-threshold", type=float, help="p_blast threshold (default: the blast bundle's)"
    )


def filter_blasts_as_asked(cells: CellSet, args: argparse.Namespace) -> CellSet:
    """:func:`filter_blasts` with the options of :func:`add_blast_filter_arguments`."""
    how = args.blast_filter or ("folder-map" if args.cellavision else "model")
    return filter_blasts(
        cells,
        how,
        blast_model=args.blast_model,
        threshold=args.blast_threshold,
        device=args.device,
    )


def filter_blasts(
    cells: CellSet,
    how: str,
    *,
    blast_model: str = "blast-demo",
    threshold: float | None = None,
    device: str = "auto",
) -> CellSet:
    """The cells that count as blasts (see the module docstring), with the filter recorded."""
    if how == "none":
        kept = np.ones(len(cells), dtype=bool)
        record: dict[str, Any] = {"blast_filter": "none"}
    elif how in ("truth", "folder-map"):
        expected = "synthetic" if how == "truth" else "cellavision"
        if cells.is_blast is None or cells.source.get("kind") != expected:
            needs = "the generator's truth" if how == "truth" else "a CellaVision export"
            raise DatasetError(
                f"--blast-filter {how} needs {needs}, which these cells do not come from. Use "
                "--blast-filter model (a blast bundle) or none (every cell is a blast)."
            )
        kept = cells.is_blast.copy()
        record = {"blast_filter": how}
    else:
        classifier = load_classifier(blast_model, "blast")
        if (classifier.input.window_um, classifier.input.pixel_size_um) != (
            cells.window_um,
            cells.pixel_size_um,
        ):
            raise DatasetError(
                f"The blast model {classifier.name} takes {classifier.input.window_um:g} µm crops "
                f"at {classifier.input.pixel_size_um:g} µm/px, but these cells are "
                f"{cells.window_um:g} µm at {cells.pixel_size_um:g} µm/px. Train the mutation "
                "model with the same --window-um and --pixel-size-um, or use another blast model."
            )
        cutoff = classifier.threshold if threshold is None else threshold
        if not 0.0 <= cutoff <= 1.0:
            raise DatasetError(f"--blast-threshold must be in [0, 1], got {cutoff}.")
        p_blast = run_steps(
            probabilities_steps(classifier, cells.crops, device=device, batch_size=_FILTER_BATCH)
        )[:, 1]
        kept = p_blast >= cutoff
        record = {
            "blast_filter": "model",
            "blast_model": classifier.name,
            "blast_model_sha256": classifier.metadata["weights_sha256"],
            "blast_threshold": cutoff,
        }
    record["cells_before_filter"] = len(cells)
    record["cells_kept"] = int(kept.sum())
    if cells.is_blast is not None and how not in ("truth", "folder-map"):
        record["kept_that_are_true_blasts"] = (
            float(cells.is_blast[kept].mean()) if kept.any() else None
        )
        record["true_blasts_kept"] = (
            float(kept[cells.is_blast].mean()) if cells.is_blast.any() else None
        )
    if not kept.any():
        raise DatasetError(
            "No cell passed the blast filter, so there is nothing to train the mutation model on. "
            "Check the blast model and threshold, or the data."
        )
    filtered = cells.subset(kept)
    filtered.source = {**cells.source, **record}
    return filtered


def parse_classes(text: str | None) -> tuple[str, ...] | None:
    """``--classes`` as a tuple of distinct names; None when not given (classes from the data)."""
    if text is None:
        return None
    classes = tuple(name.strip() for name in text.split(",") if name.strip())
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise DatasetError(f"--classes needs two or more distinct names, got {text!r}.")
    return classes


def _run(args: argparse.Namespace) -> int:
    classes = parse_classes(args.classes)
    show = progress_bars()
    cells = load_cells(args, "mutation", classes, show)
    cells = filter_blasts_as_asked(cells, args)
    return train_and_report(
        args, cells, "mutation", show, threshold=None, min_blasts=args.min_blasts
    )


def run(args: argparse.Namespace) -> int:
    """Train, evaluate and save a mutation bundle; 0 on success, 2 on bad input."""
    return run_guarded(_run, args)
