"""The ``blastscope`` command line: demo, run, batch, train, evaluate, models.

Each command lives in a function ``_cmd_<name>(args) -> int``; training subcommands are registered
by their modules through ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from blastscope import __version__
from blastscope.progress import Progress


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="blastscope",
        description="Blast detection and AML mutation prediction on stained smears.",
    )
    parser.add_argument("--version", action="version", version=f"blastscope {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="run the pipeline on the shipped sample fields and write the results",
        description="Run the whole pipeline on the shipped samples (a synthetic marrow smear and "
        "a real BCCD blood field) with the shipped demonstration models.",
    )
    demo.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    demo.set_defaults(handler=_cmd_demo)

    train = commands.add_parser("train", help="train the models that blastscope ships")
    trainers = train.add_subparsers(dest="trainer", required=True, metavar="MODEL")
    for name, module_name, help_text in _TRAINERS:
        module = __import__(module_name, fromlist=["add_arguments", "run"])
        sub = trainers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


# (subcommand, module with add_arguments/run, help)
_TRAINERS: list[tuple[str, str, str]] = [
    ("blast", "blastscope.train.blast", "train the blast classifier (blast vs non-blast)"),
    ("mutation", "blastscope.train.mutation", "train the mutation classifier (bag labels)"),
    ("segmenter", "blastscope.train.segmenter", "train the smear segmenter (Cellpose 3 CPnet)"),
]


def progress_bars(stream=None) -> Callable[[Progress], None]:
    """A Progress handler that shows one tqdm bar per stage on ``stream`` (stderr)."""
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def show(event: Progress) -> None:
        bar = bars.get(event.stage)
        if bar is None:
            for other in bars.values():
                other.close()
            bars.clear()
            bar = bars[event.stage] = tqdm(
                total=event.total, desc=event.stage, file=stream or sys.stderr, leave=False
            )
        if bar.total != event.total:
            bar.total = event.total
        bar.n = event.done
        bar.set_postfix_str(event.message, refresh=False)
        bar.refresh()

    return show


def _cmd_demo(args: argparse.Namespace) -> int:
    import tifffile

    from blastscope.pipeline import PipelineConfig, analyse
    from blastscope.samples import bccd_sample, synthetic_sample

    args.out.mkdir(parents=True, exist_ok=True)
    synthetic = synthetic_sample("NPM1")
    bccd = bccd_sample()
    samples = [
        ("synthetic_NPM1", synthetic.image, synthetic.pixel_size_um),
        ("bccd_BloodImage_00010", bccd.image, bccd.pixel_size_um),
    ]
    config = PipelineConfig()
    config.segmentation.device = args.device
    for stem, image, pixel_size_um in samples:
        result = analyse(image, pixel_size_um, config, on_progress=progress_bars())
        labels_path = args.out / f"{stem}_labels.tif"
        table_path = args.out / f"{stem}_cells.csv"
        tifffile.imwrite(labels_path, result.labels, compression="zlib")
        result.cells.to_csv(table_path, index=False)
        print(
            f"{stem}: {result.n_cells} cells, {result.n_nucleated} nucleated "
            f"({result.pixel_size_um:g} µm/px)"
        )
        print(f"  wrote {labels_path} and {table_path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``blastscope`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
