"""``blastscope train blast``: the stage-1 classifier, blast vs non-blast, on single-cell crops.

Examples::

    blastscope train blast --synthetic default --n-slides 40 --cells-per-slide 100 --out runs/b
    blastscope train blast --folders AML-Cytomorphology_LMU --folder-map lmu \\
        --source-pixel-size-um 0.1 --method gce --out runs/lmu

Writes ``OUT/checkpoint.pt`` (every epoch; ``--resume`` continues), ``OUT/report/`` (metrics.json
and PNGs) and the bundle (``OUT/bundle`` or ``--bundle``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from blastscope.classes import BLAST_CLASSES
from blastscope.models.classifier import DEFAULT_THRESHOLD
from blastscope.progress import progress_bars
from blastscope.train.datasets import bccd_white_cells
from blastscope.train.options import add_common_arguments, load_cells, run_guarded, train_and_report

HELP = "train the blast classifier (blast vs non-blast) with noise-robust options"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``blastscope train blast``."""
    add_common_arguments(parser)
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="default decision threshold on p_blast stored in the bundle",
    )
    parser.add_argument(
        "--real-negatives",
        choices=("bccd",),
        help="add real normal white cells as non-blasts: the white cells of BCCD's training "
        "fields (normal blood, MIT; --bccd)",
    )
    parser.add_argument("--bccd", type=Path, help="BCCD folder (default ../shared/data/bccd_smear)")
    parser.add_argument(
        "--bccd-list",
        type=Path,
        help="a file listing the BCCD field ids to use (default: splits/train.txt of --bccd)",
    )


def _run(args: argparse.Namespace) -> int:
    show = progress_bars()
    cells = load_cells(args, "blast", BLAST_CLASSES, show)
    if args.real_negatives == "bccd":
        cells = cells.concat(
            bccd_white_cells(
                args.bccd,
                listed=args.bccd_list,
                window_um=args.window_um,
                pixel_size_um=args.pixel_size_um,
            )
        )
    return train_and_report(args, cells, "blast", show, threshold=args.threshold)


def run(args: argparse.Namespace) -> int:
    """Train, evaluate and save a blast bundle; 0 on success, 2 on bad input."""
    return run_guarded(_run, args)
