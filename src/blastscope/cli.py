"""The ``blastscope`` command line: demo, run, batch, train, evaluate, models.

Each command lives in a function ``_cmd_<name>(args) -> int``; the training subcommands and
``evaluate`` are registered by their modules through ``add_arguments(parser)`` and
``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import shlex
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

    run = commands.add_parser(
        "run",
        help="analyse one image (or a folder of fields of one slide) and export everything",
        description="Segment, classify and call one slide; write the GeoJSON, tables, labels, "
        "overlay, report and run.json into OUT/<slide>/.",
    )
    run.add_argument("image", type=Path, help="an image file, or a folder of one slide's fields")
    _add_pipeline_arguments(run)
    run.add_argument(
        "--overwrite", action="store_true", help="replace existing output files of this slide"
    )
    run.set_defaults(handler=_cmd_run)

    batch = commands.add_parser(
        "batch",
        help="analyse every slide in a folder or glob; resumable; writes summary.csv",
        description="Analyse every slide: each image in FOLDER is a slide, each sub-folder of "
        "images is one slide whose fields are pooled into one call. Slides finished by an "
        "earlier run are skipped unless --force; a failing slide is reported and the others go "
        "on. Writes OUT/summary.csv with one row per slide.",
    )
    batch.add_argument("source", help="a folder, or a quoted glob pattern such as 'scans/*.tif'")
    _add_pipeline_arguments(batch)
    batch.add_argument(
        "--force", action="store_true", help="redo slides already done and replace their files"
    )
    batch.set_defaults(handler=_cmd_batch)

    from blastscope.train import assess

    evaluate = commands.add_parser(
        "evaluate", help=assess.HELP, description=assess.__doc__.split("\n\n")[1]
    )
    assess.add_arguments(evaluate)
    evaluate.set_defaults(handler=assess.run)

    from blastscope.train import crossval_command

    crossval = commands.add_parser(
        "crossval",
        help=crossval_command.HELP,
        description=crossval_command.__doc__.split("\n\n")[1],
    )
    crossval_command.add_arguments(crossval)

    models = commands.add_parser("models", help="the model bundles blastscope can use")
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    listing = model_commands.add_parser(
        "list", help="list shipped bundles (and those in --dir) with their provenance"
    )
    listing.add_argument(
        "--dir", type=Path, action="append", default=[], help="a folder of your own bundles"
    )
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(handler=_cmd_models_list)

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
    (
        "nucleated",
        "blastscope.train.nucleated",
        "train the nucleated-cell classifier (red cell / platelet / white cell)",
    ),
]


def _add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    from blastscope.export import ALL_FORMATS, DEFAULT_FORMATS
    from blastscope.pipeline import DEFAULT_BLAST_MODEL, DEFAULT_MUTATION_MODEL
    from blastscope.segment import SHIPPED_SEGMENTER
    from blastscope.slide_call import DEFAULT_MIN_BLASTS, DEFAULT_MIN_PROBABILITY, POOLINGS

    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--segmenter",
        default=SHIPPED_SEGMENTER,
        help="shipped segmenter, Cellpose model name (e.g. cyto3) or model file",
    )
    parser.add_argument("--blast-model", default=DEFAULT_BLAST_MODEL, help="bundle name or folder")
    parser.add_argument(
        "--mutation-model", default=DEFAULT_MUTATION_MODEL, help="bundle name or folder"
    )
    parser.add_argument(
        "--threshold", type=float, default=None, help="blast threshold (default: the bundle's)"
    )
    parser.add_argument("--pixel-size", type=float, default=None, help="µm per pixel")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--batch-size", type=int, default=256, help="cells per network batch")
    parser.add_argument("--min-blasts", type=int, default=DEFAULT_MIN_BLASTS)
    parser.add_argument("--min-probability", type=float, default=DEFAULT_MIN_PROBABILITY)
    parser.add_argument("--pooling", choices=POOLINGS, default="mean")
    parser.add_argument(
        "--formats",
        default=",".join(DEFAULT_FORMATS),
        help=f"comma-separated, from {', '.join(ALL_FORMATS)}",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


def _pipeline_config(args: argparse.Namespace):
    from blastscope.pipeline import PipelineConfig, SlideCallSettings, loaded
    from blastscope.segment import SegmentationParams

    config = PipelineConfig(
        segmentation=SegmentationParams(model=args.segmenter, device=args.device),
        blast_model=args.blast_model,
        mutation_model=args.mutation_model,
        blast_threshold=args.threshold,
        device=args.device,
        batch_size=args.batch_size,
        slide_call=SlideCallSettings(args.pooling, args.min_blasts, args.min_probability),
    )
    return loaded(config)


def _formats(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(name.strip() for name in args.formats.split(",") if name.strip())


def _report(outcomes, args: argparse.Namespace) -> int:
    """Print each slide's outcome (or JSON with --json); 1 when any slide failed."""
    import json

    failed = [outcome for outcome in outcomes if outcome.status == "failed"]
    if args.json:
        rows = [outcome.summary_row() for outcome in outcomes]
        print(json.dumps({"slides": rows, "failed": len(failed)}, indent=2, default=_json_value))
    else:
        for outcome in outcomes:
            print(_describe(outcome))
    for outcome in failed:
        print(f"error: {outcome.slide.slide_id}: {outcome.error}", file=sys.stderr)
    return 1 if failed else 0


def _json_value(value):
    import math

    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def _describe(outcome) -> str:
    slide_id, status = outcome.slide.slide_id, outcome.status
    if status == "failed":
        return f"{slide_id}: FAILED"
    counts = outcome.counts
    text = (
        f"{slide_id}: {status}; {counts.get('cells', 0)} cells, "
        f"{counts.get('nucleated', 0)} nucleated, {counts.get('blasts', 0)} blasts"
    )
    call = outcome.slide_call
    if call is not None:
        verdict = call.call if call.call else f"no call ({call.reason})"
        text += f"; slide call: {verdict}"
        if call.call:
            low, high = call.interval[call.call]
            probability = call.probabilities[call.call]
            text += f" p={probability:.2f} [{low:.2f}, {high:.2f}], {call.n_blasts} blasts"
    return text


def _cmd_run(args: argparse.Namespace) -> int:
    from blastscope.batch import Slide, find_slides, slide_steps
    from blastscope.progress import run_steps

    if args.image.is_dir():
        slides = find_slides(args.image)
        fields = tuple(path for slide in slides for path in slide.fields)
        slide = Slide(args.image.name, fields)
    else:
        (slide,) = find_slides(args.image)
    steps = slide_steps(
        slide,
        args.out,
        _pipeline_config(args),
        pixel_size_um=args.pixel_size,
        formats=_formats(args),
        overwrite=args.overwrite,
    )
    outcome = run_steps(steps, progress_bars())
    code = _report([outcome], args)
    if not args.json:
        print(f"wrote {len(outcome.outputs)} files to {args.out / slide.slide_id}")
    return code


def _cmd_batch(args: argparse.Namespace) -> int:
    from blastscope.batch import SUMMARY_NAME, batch_steps, find_slides
    from blastscope.progress import run_steps

    slides = find_slides(args.source)
    steps = batch_steps(
        slides,
        args.out,
        _pipeline_config(args),
        pixel_size_um=args.pixel_size,
        formats=_formats(args),
        force=args.force,
    )
    outcomes = run_steps(steps, progress_bars())
    code = _report(outcomes, args)
    if not args.json:
        print(f"summary: {args.out / SUMMARY_NAME}")
    return code


def _cmd_models_list(args: argparse.Namespace) -> int:
    import json

    from blastscope.models import read_metadata, shipped_bundles

    entries = [(name, path, "shipped") for name, path in shipped_bundles().items()]
    for folder in args.dir:
        if not folder.is_dir():
            raise FileNotFoundError(f"No folder at {folder}: give a folder of bundles to --dir.")
        entries += [
            (path.name, path, str(folder))
            for path in sorted(folder.iterdir())
            if (path / "bundle.json").is_file()
        ]
    rows = []
    for name, path, source in entries:
        metadata = read_metadata(path)
        training = metadata.get("training", {}) or {}
        rows.append(
            {
                "name": name,
                "kind": metadata["kind"],
                "demo": bool(metadata.get("demo", False)),
                "source": source,
                "path": str(path),
                "classes": metadata.get("classes"),
                "sha256": metadata["weights_sha256"],
                "dataset": training.get("dataset") or training.get("data"),
                "command": training.get("command"),
                "git_commit": training.get("git_commit"),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        demo = " (demonstration model, not for diagnosis)" if row["demo"] else ""
        print(f"{row['name']}  [{row['kind']}] {row['source']}{demo}")
        print(f"    sha256 {row['sha256'][:16]}…  {row['path']}")
        if row["dataset"]:
            print(f"    trained on: {_describe_dataset(row['dataset'])}")
        if row["command"]:
            print(f"    made by: {row['command']}")
    return 0


def _describe_dataset(dataset: dict) -> str:
    """One line for a bundle's ``training.dataset`` record (the JSON listing has all of it)."""
    if "bccd_train_fields" in dataset:  # a segmenter
        return (
            f"{dataset['bccd_train_fields']} BCCD training fields (masks derived from the boxes) "
            f"and {dataset.get('synthetic_fields')} synthetic fields"
        )
    source = dataset.get("source", {})
    if source.get("kind") == "synthetic":
        words = [
            f"synthetic preset {source.get('preset')}, {source.get('n_slides')} slides x "
            f"{source.get('cells_per_slide')} cells, data seed {source.get('seed')}"
        ]
    else:
        words = [str(source.get("kind", "unknown source"))]
        if source.get("root"):
            words[0] += f" at {source['root']}"
    if source.get("blast_filter"):
        words.append(f"blasts by {source['blast_filter']} ({source.get('cells_kept')} cells kept)")
    split = dataset.get("split", {})
    if split:
        words.append(
            f"split by {split.get('by')}: train / val / test {split.get('train_cells')} / "
            f"{split.get('val_cells')} / {split.get('test_cells')} cells"
        )
    return "; ".join(words)


def progress_bars(stream=None) -> Callable[[Progress], None]:
    """A Progress handler that keeps one tqdm line per stage on ``stream`` (stderr).

    Where the stream is not a terminal (a log file, CI) it prints a plain line per stage at each
    tenth of the way and at the end instead of redrawing bars.
    """
    from tqdm import tqdm

    out = stream or sys.stderr
    if not getattr(out, "isatty", lambda: False)():
        tenths: dict[str, int] = {}

        def log(event: Progress) -> None:
            tenth = 10 * event.done // max(event.total, 1)
            finished = event.done >= event.total
            if finished or tenth > tenths.get(event.stage, 0):
                note = f" ({event.message})" if event.message else ""
                print(f"{event.stage}: {event.done}/{event.total}{note}", file=out, flush=True)
            # a finished stage starts from zero when it runs again (the next slide of a batch)
            tenths[event.stage] = 0 if finished else tenth

        return log

    bars: dict[str, tqdm] = {}
    layout = "{desc}: {percentage:3.0f}%|{bar:30}| {n}/{total} {postfix}"

    def show(event: Progress) -> None:
        bar = bars.get(event.stage)
        if bar is None:
            bar = bars[event.stage] = tqdm(
                total=event.total,
                desc=event.stage,
                position=len(bars),
                leave=False,
                bar_format=layout,
                file=out,
            )
        if bar.total != event.total:
            bar.reset(total=event.total)
        bar.n = event.done
        bar.set_postfix_str(event.message, refresh=False)
        bar.refresh()

    return show


def _cmd_demo(args: argparse.Namespace) -> int:
    from blastscope.export import export_result
    from blastscope.pipeline import PipelineConfig, analyse, loaded
    from blastscope.samples import bccd_sample, synthetic_sample
    from blastscope.segment import SegmentationParams

    synthetic = synthetic_sample("NPM1")
    bccd = bccd_sample()
    samples = [
        ("synthetic_NPM1", synthetic.image, synthetic.pixel_size_um),
        ("bccd_BloodImage_00010", bccd.image, bccd.pixel_size_um),
    ]
    config = loaded(
        PipelineConfig(segmentation=SegmentationParams(device=args.device), device=args.device)
    )
    print("Demonstration models, not for diagnosis: trained on synthetic smears.")
    print(f"The synthetic sample carries {synthetic.mutation}; the BCCD field is normal blood.")
    for stem, image, pixel_size_um in samples:
        result = analyse(image, pixel_size_um, config, on_progress=progress_bars())
        outputs = export_result(result, image, args.out / stem, stem=stem, overwrite=True)
        call = result.slide_call
        verdict = "-" if call is None else call.call or f"no call ({call.reason})"
        print(
            f"{stem}: {result.n_cells} cells, {result.n_nucleated} nucleated, "
            f"{result.n_blasts} blasts; slide call: {verdict}"
        )
        print(f"  wrote {len(outputs)} files to {args.out / stem}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``blastscope`` command: 0 on success, 1 with a message on failure."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["blastscope", *argv])
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
