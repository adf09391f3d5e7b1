"""The ``blastscope`` command line: demo, run, batch, train, evaluate, crossval, models.

Each command lives in a function ``_cmd_<name>(args) -> int``; the training subcommands,
``evaluate`` and ``crossval`` are registered by their modules through ``add_arguments(parser)``
and ``run(args) -> int``, imported only when that command is used (:class:`_DeferredParser`).
Building the parser imports no heavy module (torch, cellpose, pandas, the pipeline), so
``blastscope --help`` is quick, and every option value is checked as it is parsed (the
``_check_*`` argparse types), before any model loads.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from blastscope import __version__
from blastscope.errors import BlastscopeError
from blastscope.io import PIXEL_SIZE_RANGE_UM, ImageInputError, check_pixel_size
from blastscope.progress import progress_bars
from blastscope.slide import DEFAULT_TILE_PX

# The pipeline's defaults, repeated here so that building the parser imports none of the
# modules that define them; tests/test_cli.py checks that they agree.
SHIPPED_SEGMENTER = "smear-cellpose"  # blastscope.segment
DEFAULT_BLAST_MODEL = "blast-smear"  # blastscope.pipeline
DEFAULT_MUTATION_MODEL = "mutation-demo"  # blastscope.pipeline
DEFAULT_MIN_BLASTS = 20  # blastscope.slide_call
DEFAULT_MIN_PROBABILITY = 0.40  # blastscope.slide_call
POOLINGS = ("mean", "geometric")  # blastscope.slide_call
DEFAULT_BATCH_SIZE = 256  # blastscope.predict
DEFAULT_TILE_SIZE = 1024  # blastscope.segment.SegmentationParams
MIN_TILE_SIZE = 256  # blastscope.segment.SegmentationParams.validate
ALL_FORMATS = ("geojson", "csv", "parquet", "labels", "overlay", "report")  # blastscope.export
DEFAULT_FORMATS = ("geojson", "csv", "labels", "overlay", "report")  # blastscope.export
GEOJSON_SHAPES = ("outline", "simplified", "centroid")  # blastscope.export.geojson_writer
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")  # blastscope.devices


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Ends every option's help with its default ("(default: off)" for a flag, "(required)"
    for a required option) unless the help names it already."""

    def __init__(self, prog: str, **kwargs) -> None:
        kwargs.setdefault("max_help_position", 40)
        super().__init__(prog, **kwargs)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            not action.option_strings
            or action.default is argparse.SUPPRESS
            or "default" in text.lower()
        ):
            return text
        if action.required:
            return f"{text} (required)"
        if action.nargs == 0 and action.default is False:
            return f"{text} (default: off)"
        return f"{text} (default: %(default)s)"


class _DeferredParser(argparse.ArgumentParser):
    """A parser whose options ``module`` adds (``add_arguments``, ``run`` as the handler) the
    first time it parses or prints its help, so that building the whole command line imports
    none of the command modules. ``module=None`` is a plain parser."""

    def __init__(self, *args, module: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._module = module

    def _load(self) -> None:
        if self._module is None:
            return
        module = importlib.import_module(self._module)
        self._module = None
        if self.description is None and module.__doc__:
            self.description = module.__doc__.split("\n\n")[1]
        module.add_arguments(self)
        self.set_defaults(handler=module.run)

    def parse_known_args(self, args=None, namespace=None):
        self._load()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._load()
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command (imports no command module; see the module text)."""
    parser = argparse.ArgumentParser(
        prog="blastscope",
        description="Blast detection and AML mutation prediction on stained smears.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"blastscope {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_DeferredParser
    )

    demo = commands.add_parser(
        "demo",
        help="run the pipeline on the shipped sample fields and write the results",
        description="Run the whole pipeline on the shipped samples (a synthetic marrow smear and "
        "a real BCCD blood field) with the shipped demonstration models.",
        formatter_class=_HelpFormatter,
    )
    demo.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder")
    demo.add_argument(
        "--device", type=_check_device, default="auto", help="auto, cpu, cuda, cuda:N or mps"
    )
    demo.set_defaults(handler=_cmd_demo)

    run = commands.add_parser(
        "run",
        help="analyse one image (or a folder of fields of one slide) and export everything",
        description="Segment, classify and call one slide; write the GeoJSON, tables, labels, "
        "overlay, report and run.json into OUT/<slide>/.",
        formatter_class=_HelpFormatter,
    )
    run.add_argument("image", type=Path, help="an image file, or a folder of one slide's fields")
    _add_pipeline_arguments(run)
    run.add_argument(
        "--overwrite", action="store_true", help="replace existing output files of this slide"
    )
    run.add_argument(
        "--roi",
        type=_region,
        metavar="X,Y,W,H",
        help="analyse only this rectangle of a whole slide (pyramidal TIFF, OME-TIFF, SVS): "
        "x,y,width,height in level-0 pixels, as QuPath shows them; read lazily, the GeoJSON in "
        "level-0 coordinates",
    )
    run.add_argument(
        "--tiled",
        action="store_true",
        help="stream a slide (or its --roi) tile by tile to OUT/<slide>.tiled/: labels.zarr, "
        "a cells table per tile, tiles_done.json (a rerun resumes), slide.json last; a whole "
        "slide without --roi always is",
    )
    scope = "tiled runs (--tiled, or a whole slide without --roi): "
    _add_whole_slide_arguments(run, scope, scope)
    run.set_defaults(handler=_cmd_run)

    batch = commands.add_parser(
        "batch",
        help="analyse every slide in a folder or glob; resumable; writes summary.csv",
        description="Analyse every slide: each image in FOLDER is a slide, each sub-folder of "
        "images is one slide whose fields are pooled into one call. Slides finished by an "
        "earlier run are skipped unless --force; a failing slide is reported and the others go "
        "on. Writes OUT/summary.csv with one row per slide.",
        formatter_class=_HelpFormatter,
    )
    batch.add_argument("source", help="a folder, or a quoted glob pattern such as 'scans/*.tif'")
    _add_pipeline_arguments(batch)
    batch.add_argument(
        "--force", action="store_true", help="redo slides already done and replace their files"
    )
    batch.add_argument(
        "--tiled",
        action="store_true",
        help="analyse every one-file slide tile by tile (whole-slide files always are)",
    )
    _add_whole_slide_arguments(
        batch,
        "whole slides: ",
        "whole slides' tiles, and slides of fields when --workers N or a scheduler is given: ",
    )
    batch.set_defaults(handler=_cmd_batch)

    for name, module, help_text in _MODULE_COMMANDS:
        commands.add_parser(name, help=help_text, module=module, formatter_class=_HelpFormatter)

    models = commands.add_parser("models", help="the model bundles blastscope can use")
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    listing = model_commands.add_parser(
        "list",
        help="list shipped bundles (and those in --dir) with their provenance",
        formatter_class=_HelpFormatter,
    )
    listing.add_argument(
        "--dir", type=Path, action="append", default=[], help="a folder of your own bundles"
    )
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(handler=_cmd_models_list)

    train = commands.add_parser("train", help="train the models that blastscope ships")
    trainers = train.add_subparsers(dest="trainer", required=True, metavar="MODEL")
    for name, module, help_text in _TRAINERS:
        trainers.add_parser(
            name,
            help=help_text,
            description=help_text,
            module=module,
            formatter_class=_HelpFormatter,
        )
    return parser


# (command, module with add_arguments/run, help); the module loads when the command is used
_MODULE_COMMANDS: list[tuple[str, str, str]] = [
    (
        "evaluate",
        "blastscope.train.assess",
        "score a trained blast or mutation bundle on held-out cells and write its report",
    ),
    (
        "crossval",
        "blastscope.train.crossval_command",
        "patient-grouped cross-validation of the blast or mutation model on a real cohort",
    ),
]

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


def _check_fraction(text: str) -> float:
    """argparse type: a number from 0 to 1 (a probability or threshold)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number; give one between 0 and 1"
        ) from None
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value:g}")
    return value


def _whole_number(least: int) -> Callable[[str], int]:
    """argparse type: a whole number of at least ``least``."""

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a whole number; give one of at least {least}"
            ) from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value

    return check


def _check_pixel_size(text: str) -> float:
    """argparse type: µm per pixel within :data:`blastscope.io.PIXEL_SIZE_RANGE_UM`."""
    try:
        return check_pixel_size(text, "the pixel size")
    except ImageInputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _check_device(text: str) -> str:
    """argparse type: auto, cpu, cuda, cuda:N or mps (whether it exists is checked later)."""
    name = text.strip().lower()
    kind, _, index = name.partition(":")
    if kind not in DEVICE_CHOICES or (index and not (kind == "cuda" and index.isdigit())):
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}: choose one of auto, cpu, cuda, cuda:N or mps"
        )
    return name


def _check_formats(text: str) -> str:
    """argparse type: comma-separated export formats, each one of :data:`ALL_FORMATS`."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ALL_FORMATS]
    if unknown or not names:
        wrong = f"unknown format {unknown[0]!r}" if unknown else "no format given"
        raise argparse.ArgumentTypeError(f"{wrong}; choose from {', '.join(ALL_FORMATS)}")
    return ",".join(names)


def _add_whole_slide_arguments(
    parser: argparse.ArgumentParser, scope: str, cluster_scope: str
) -> None:
    """--slide-tile and where tiles (and slides) run: --workers, --threads, --scheduler."""
    parser.add_argument(
        "--slide-tile",
        type=_whole_number(256),
        default=None,
        metavar="PX",
        help=f"{scope}tile side in level-0 pixels (default: {DEFAULT_TILE_PX})",
    )
    parser.add_argument(
        "--no-labels",
        action="store_true",
        help=f"{scope}write no labels.zarr, only the tables, GeoJSON and report",
    )
    parser.add_argument(
        "--workers",
        type=_whole_number(0),
        metavar="N",
        help=f"{cluster_scope}worker processes of a dask LocalCluster (default: one per --threads "
        "cores, "
        "as memory allows; 0: in this process, often as fast on a machine of 2-4 cores)",
    )
    parser.add_argument(
        "--threads",
        type=_whole_number(1),
        metavar="N",
        help=f"{cluster_scope}torch threads per worker (default: 1; with --workers 0, torch's own)",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help=f"{cluster_scope}run on the workers of a running dask scheduler, e.g. "
        "tcp://host:8786 (default: $DASK_SCHEDULER_ADDRESS unless --workers is given, else a "
        "LocalCluster); workers read the slides at the same paths (and write slides of fields "
        "into --out: share it)",
    )


def _cluster_settings(args: argparse.Namespace):
    """Where tiles and slides run (refuses --workers with --scheduler before any model loads)."""
    from blastscope.distributed import ClusterSettings

    return ClusterSettings(args.workers, args.threads, args.scheduler, args.device)


def _add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    low, high = PIXEL_SIZE_RANGE_UM
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--segmenter",
        default=SHIPPED_SEGMENTER,
        metavar="MODEL",
        help="shipped segmenter, Cellpose model name (e.g. cyto3) or model file",
    )
    parser.add_argument(
        "--blast-model", default=DEFAULT_BLAST_MODEL, metavar="BUNDLE", help="bundle name or folder"
    )
    parser.add_argument(
        "--mutation-model",
        default=DEFAULT_MUTATION_MODEL,
        metavar="BUNDLE",
        help="bundle name or folder",
    )
    parser.add_argument(
        "--threshold",
        type=_check_fraction,
        default=None,
        metavar="P",
        help="blast threshold on p_blast, 0-1 (default: the bundle's own)",
    )
    parser.add_argument(
        "--pixel-size",
        type=_check_pixel_size,
        default=None,
        metavar="UM",
        help=f"µm per pixel, {low:g}-{high:g} (default: from the file's metadata, else estimated "
        "from the cell size)",
    )
    parser.add_argument(
        "--tile-size",
        type=_whole_number(MIN_TILE_SIZE),
        default=DEFAULT_TILE_SIZE,
        metavar="PX",
        help=f"segment larger fields in tiles of at most this many pixels a side (at least "
        f"{MIN_TILE_SIZE}); smaller tiles need less memory",
    )
    parser.add_argument(
        "--device", type=_check_device, default="auto", help="auto, cpu, cuda, cuda:N or mps"
    )
    parser.add_argument(
        "--batch-size",
        type=_whole_number(1),
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help="cells per network batch",
    )
    parser.add_argument(
        "--min-blasts",
        type=_whole_number(0),
        default=DEFAULT_MIN_BLASTS,
        metavar="N",
        help="fewest blasts for a slide call (fewer: no call)",
    )
    parser.add_argument(
        "--min-probability",
        type=_check_fraction,
        default=DEFAULT_MIN_PROBABILITY,
        metavar="P",
        help="lowest pooled probability of the top class for a slide call, 0-1",
    )
    parser.add_argument(
        "--pooling",
        choices=POOLINGS,
        default="mean",
        help="how the blasts' mutation probabilities are pooled into the slide call",
    )
    parser.add_argument(
        "--formats",
        type=_check_formats,
        default=",".join(DEFAULT_FORMATS),
        metavar="LIST",
        help=f"comma-separated, from {', '.join(ALL_FORMATS)}",
    )
    parser.add_argument(
        "--geojson-shapes",
        choices=GEOJSON_SHAPES,
        default="outline",
        metavar="SHAPE",
        help="the GeoJSON's cells: outline (QuPath draws, measures and reopens them), "
        "simplified (outlines within 1 pixel, about half the bytes) or centroid (a point each, "
        "with its measurements)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


def _pipeline_config(args: argparse.Namespace):
    from blastscope.pipeline import PipelineConfig, SlideCallSettings, loaded
    from blastscope.segment import SegmentationParams

    config = PipelineConfig(
        segmentation=SegmentationParams(
            model=args.segmenter, device=args.device, tile_size=args.tile_size
        ),
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
    """Print each slide's outcome (or JSON with --json) and its notes and errors (on stderr);
    1 when any slide failed."""
    import json

    from blastscope.jsonable import jsonable

    failed = [outcome for outcome in outcomes if outcome.status == "failed"]
    if args.json:
        rows = [outcome.summary_row() for outcome in outcomes]
        report = {"slides": rows, "failed": len(failed)}
        print(json.dumps(jsonable(report, "the summary"), indent=2))
    else:
        for outcome in outcomes:
            print(_describe(outcome))
    for outcome in outcomes:
        for note in outcome.notes:
            print(f"note: {outcome.slide.slide_id}: {note}", file=sys.stderr)
    for outcome in failed:
        print(f"error: {outcome.slide.slide_id}: {outcome.error}", file=sys.stderr)
    return 1 if failed else 0


def _describe(outcome) -> str:
    """One line per slide: status, counts and the slide call."""
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
        from blastscope.slide_call import call_headline

        text += f"; {call_headline(call)}; {call.n_blasts} blasts used"
    return text


def _region(text: str):
    """``--roi``: x,y,width,height in level-0 pixels."""
    from blastscope.slide import Region, SlideError

    try:
        return Region.parse(text)
    except SlideError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _cmd_run(args: argparse.Namespace) -> int:
    from blastscope.batch import find_slide, slide_steps
    from blastscope.progress import run_steps
    from blastscope.slide import is_whole_slide, slide_stem

    if args.tiled:
        return _run_tiled(args)
    if args.roi is None and args.image.is_file() and is_whole_slide(args.image):
        print(  # a notice, on stderr: stdout stays the result (--json)
            f"note: {args.image.name} is a whole slide: analysed tile by tile into "
            f"{args.out / slide_stem(args.image)}.tiled/ (--roi x,y,w,h for a region as a field)",
            file=sys.stderr,
        )
        return _run_tiled(args)
    for given, option in (
        (args.slide_tile is not None, "--slide-tile"),
        (args.no_labels, "--no-labels"),
        (args.workers is not None, "--workers"),
        (args.threads is not None, "--threads"),
        (args.scheduler is not None, "--scheduler"),
    ):
        if given:
            raise BlastscopeError(
                f"{option} applies to --tiled runs (and whole slides without --roi): add --tiled "
                "or drop it."
            )
    slide = find_slide(args.image)
    if args.roi is not None and len(slide.fields) != 1:
        raise BlastscopeError(
            f"--roi reads a region of one whole-slide file; {args.image} is a folder of "
            f"{len(slide.fields)} fields. Give the slide file."
        )
    steps = slide_steps(
        slide,
        args.out,
        _pipeline_config(args),
        pixel_size_um=args.pixel_size,
        formats=_formats(args),
        overwrite=args.overwrite,
        flag="--overwrite",
        region=args.roi,
        geojson_shapes=args.geojson_shapes,
    )
    outcome = run_steps(steps, progress_bars())
    code = _report([outcome], args)
    if not args.json:
        print(f"wrote {len(outcome.outputs)} files to {args.out / slide.slide_id}")
    return code


def _run_tiled(args: argparse.Namespace) -> int:
    """``run --tiled`` (or a whole slide without --roi): the slide or its region tile by tile,
    resumable."""
    from blastscope.distributed import cluster
    from blastscope.progress import run_steps
    from blastscope.slide_call import call_headline
    from blastscope.wholeslide import whole_slide_steps

    settings = _cluster_settings(args)
    config = _pipeline_config(args)
    with cluster(settings) as workers:
        _say_where(workers)
        steps = whole_slide_steps(
            args.image,
            args.out,
            config,
            region=args.roi,
            pixel_size_um=args.pixel_size,
            tile_px=args.slide_tile or DEFAULT_TILE_PX,
            cluster=workers,
            write_labels=not args.no_labels,
            geojson_shapes=args.geojson_shapes,
            overwrite=args.overwrite,
            flag="--overwrite",
        )
        outcome = run_steps(steps, progress_bars())
    if args.json:  # the summary batch and field runs print, one slide
        from blastscope.batch import Slide, whole_slide_outcome
        from blastscope.slide import slide_stem

        slide = Slide(slide_stem(args.image), (args.image,))
        return _report([whole_slide_outcome(slide, outcome)], args)
    counts = outcome.counts
    print(
        f"{args.image.name}: {counts['cells']} cells, {counts['nucleated']} nucleated, "
        f"{counts['blasts']} blasts over {outcome.area_mm2:.2f} mm²; "
        f"{call_headline(outcome.slide_call)} ({outcome.tiles_text()})"
    )
    print(f"wrote {outcome.folder}")
    return 0


def _say_where(workers) -> None:
    """A note on stderr of the dask workers the run uses (none: in this process)."""
    if workers is not None:
        count = len(workers.client.nthreads())
        address = workers.client.scheduler.address
        print(f"note: running on {count} dask worker(s), scheduler {address}", file=sys.stderr)


def _cmd_batch(args: argparse.Namespace) -> int:
    from blastscope.batch import SUMMARY_NAME, batch_steps, find_slides, runs_tiled
    from blastscope.distributed import cluster
    from blastscope.progress import run_steps

    settings = _cluster_settings(args)
    slides = find_slides(args.source)
    config = _pipeline_config(args)
    whole = [slide for slide in slides if runs_tiled(slide, args.tiled)]
    if not whole and not (args.workers or settings.address()):
        # fields only, no cluster asked for: analysed here, one after another
        settings = replace(settings, workers=0)
    with cluster(settings) as workers:
        _say_where(workers)
        steps = batch_steps(
            slides,
            args.out,
            config,
            pixel_size_um=args.pixel_size,
            formats=_formats(args),
            force=args.force,
            flag="--force",
            tiled=args.tiled,
            tile_px=args.slide_tile or DEFAULT_TILE_PX,
            cluster=workers,
            write_labels=not args.no_labels,
            geojson_shapes=args.geojson_shapes,
        )
        outcomes = run_steps(steps, progress_bars())
    code = _report(outcomes, args)
    if not args.json:
        print(f"summary: {args.out / SUMMARY_NAME}")
    return code


def _cmd_models_list(args: argparse.Namespace) -> int:
    import json

    from blastscope.jsonable import jsonable
    from blastscope.models import bundles_in, read_metadata, shipped_bundles

    entries = [(name, path, "shipped") for name, path in shipped_bundles().items()]
    for folder in args.dir:
        if not folder.is_dir():
            raise FileNotFoundError(f"No folder at {folder}: give a folder of bundles to --dir.")
        entries += [(name, path, str(folder)) for name, path in bundles_in(folder).items()]
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
        print(json.dumps(jsonable(rows, "the bundle list"), indent=2))
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from blastscope.export import export_result
    from blastscope.pipeline import PipelineConfig, analyse, loaded
    from blastscope.samples import bccd_sample, synthetic_sample
    from blastscope.segment import SegmentationParams
    from blastscope.slide_call import call_headline

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
        print(
            f"{stem}: {result.n_cells} cells, {result.n_nucleated} nucleated, "
            f"{result.n_blasts} blasts; {call_headline(result.slide_call)}"
        )
        print(f"  wrote {len(outputs)} files to {args.out / stem}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``blastscope`` command: 0 on success, 1 with a message on failure."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["blastscope", *argv])
    if args.handler in (_cmd_run, _cmd_batch):  # before any thread starts (see its text)
        from blastscope.distributed import limit_malloc_arenas

        limit_malloc_arenas()
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (BlastscopeError, ValueError, OSError) as error:
        # BlastscopeError: every error blastscope raises on purpose (a ValueError, named here
        # for the reader); other ValueErrors and OSErrors: e.g. a file a library cannot read.
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
