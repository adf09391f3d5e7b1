"""The blastscope command line on shipped models and samples: run, batch, resume, failures."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import imageio.v3 as iio
import pandas as pd
import pytest

from blastscope import __version__, cli
from blastscope.cli import build_parser, main
from blastscope.synthetic import MUTATION_CLASSES, generate_field

FIELD_SHAPE = (384, 384)


@pytest.fixture(scope="module")
def slides_folder(tmp_path_factory):
    """Two single-image slides, a slide folder of two fields and a corrupt image."""
    folder = tmp_path_factory.mktemp("slides")
    for seed, name in ((1, "alpha.png"), (2, "beta.png")):
        iio.imwrite(folder / name, generate_field(seed, shape=FIELD_SHAPE).image)
    (folder / "gamma").mkdir()
    for seed in (3, 4):
        field = generate_field(seed, shape=FIELD_SHAPE, mutation="NPM1")
        iio.imwrite(folder / "gamma" / f"field{seed}.png", field.image)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder


def _summary(out):
    return pd.read_csv(out / "summary.csv").set_index("slide_id")


def test_run_writes_every_export_and_prints_the_call(slides_folder, tmp_path, capsys):
    code = main(["run", str(slides_folder / "alpha.png"), "--out", str(tmp_path)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "alpha: done" in printed
    assert "Slide call: " in printed or "No call: " in printed  # the core's one wording
    names = {path.name for path in (tmp_path / "alpha").iterdir()}
    expected = {"alpha.geojson", "alpha_cells.csv", "alpha_labels.ome.tif", "alpha_overlay.png"}
    assert expected | {"alpha_report.html", "alpha_run.json", "slide.json"} <= names
    cells = pd.read_csv(tmp_path / "alpha" / "alpha_cells.csv")
    assert {"p_blast", "is_blast", "p_NPM1", "mutation_call"} <= set(cells.columns)


def test_a_fields_notices_reach_the_terminal_and_the_json(slides_folder, tmp_path, capsys):
    """A PNG records no pixel size: the estimate used is said on stderr and in --json's notes,
    not only in run.json."""
    arguments = ["run", str(slides_folder / "alpha.png"), "--out", str(tmp_path)]
    assert main([*arguments, "--formats", "csv", "--json"]) == 0
    printed = capsys.readouterr()
    assert "note: alpha: No pixel size: µm measures use the" in printed.err
    (row,) = json.loads(printed.out)["slides"]
    assert "No pixel size" in row["notes"]


def test_an_ome_tiff_field_is_named_without_its_format_suffix(tmp_path, capsys):
    """scan.ome.tif writes OUT/scan/scan_*, as its tiled run writes OUT/scan.tiled/."""
    import tifffile

    field = generate_field(5, shape=FIELD_SHAPE)
    size = field.pixel_size_um
    path = tmp_path / "scan.ome.tif"
    tifffile.imwrite(
        path,
        field.image,
        photometric="rgb",
        metadata={"axes": "YXS", "PhysicalSizeX": size, "PhysicalSizeY": size},
    )
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--formats", "csv"]) == 0
    assert (out / "scan" / "scan_cells.csv").is_file()
    assert "scan: done" in capsys.readouterr().out


def test_run_analyses_a_whole_slide_tile_by_tile_unless_given_a_region(
    tmp_path, monkeypatch, capsys
):
    """A whole slide without --roi runs tiled, taking the tiled run's options, and says so; with
    --roi its region is a field, as before. (The limit is lowered: a 512² slide is whole.)"""
    from test_slide import write_ome_pyramid

    monkeypatch.setattr("blastscope.slide.FIELD_LIMIT_PX", 100_000)
    field = generate_field(8, shape=(512, 512))
    path = tmp_path / "scan.ome.tif"
    write_ome_pyramid(path, field.image, field.pixel_size_um)
    out = tmp_path / "out"
    tiled = ["run", str(path), "--out", str(out), "--workers", "0", "--slide-tile", "512"]
    assert main([*tiled, "--threads", "1", "--no-labels", "--geojson-shapes", "centroid"]) == 0
    printed = capsys.readouterr()
    notice = f"note: scan.ome.tif is a whole slide: analysed tile by tile into {out}/scan.tiled/"
    assert notice in printed.err
    assert "(1 tiles analysed, 0 from an earlier run)" in printed.out
    # --json: the summary that field runs and batches print, on stdout alone
    assert main([*tiled, "--no-labels", "--geojson-shapes", "centroid", "--json"]) == 0
    printed = capsys.readouterr()
    (row,) = json.loads(printed.out)["slides"]
    assert row["slide_id"] == "scan"
    assert row["status"] == "done"
    assert "0 tiles analysed, 1 from an earlier run" in row["notes"]
    assert notice in printed.err
    assert (out / "scan.tiled" / "slide.json").is_file()
    assert not (out / "scan.tiled" / "labels.zarr").exists()
    geometries = {
        feature["geometry"]["type"]
        for feature in json.loads((out / "scan.tiled" / "scan.geojson").read_text())["features"]
    }
    assert geometries == {"Point"}  # --geojson-shapes centroid
    region = ["run", str(path), "--out", str(out), "--roi", "0,0,384,384", "--formats", "csv"]
    assert main([*region[:-1], "csv,geojson", "--geojson-shapes", "simplified"]) == 0
    assert "scan: done" in capsys.readouterr().out
    assert (out / "scan" / "scan_cells.csv").is_file()
    collection = json.loads((out / "scan" / "scan.geojson").read_text())
    assert collection["blastscope"]["shapes"] == "simplified"
    assert main([*region, "--overwrite", "--workers", "2"]) == 1  # a region is one field
    assert "--workers applies to --tiled runs" in capsys.readouterr().err


def test_run_and_batch_limit_malloc_arenas_before_anything_else(monkeypatch, tmp_path, capsys):
    """glibc fixes its arena limit when a second thread first allocates: run and batch set it
    before their handler starts anything (train and the others leave it be)."""
    import blastscope.distributed

    events = []
    monkeypatch.setattr(
        blastscope.distributed, "limit_malloc_arenas", lambda: events.append("limit")
    )
    for command in ("run", "batch"):
        monkeypatch.setattr(
            cli, f"_cmd_{command}", lambda args, command=command: events.append(command) or 0
        )
    missing = str(tmp_path / "none.png")
    assert main(["run", missing, "--out", str(tmp_path)]) == 0
    assert main(["batch", missing, "--out", str(tmp_path)]) == 0
    assert main(["models", "list"]) == 0
    assert events == ["limit", "run", "limit", "batch"]


def test_run_refuses_to_overwrite_without_the_flag(slides_folder, tmp_path, capsys):
    arguments = ["run", str(slides_folder / "beta.png"), "--out", str(tmp_path)]
    assert main([*arguments, "--formats", "csv"]) == 0
    assert main([*arguments, "--formats", "csv"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main([*arguments, "--formats", "csv", "--overwrite"]) == 0


def test_batch_reports_a_corrupt_image_and_finishes_the_others(slides_folder, tmp_path, capsys):
    code = main(["batch", str(slides_folder), "--out", str(tmp_path), "--json"])
    assert code == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["failed"] == 1
    assert "error: broken: Could not read broken.png" in captured.err
    summary = _summary(tmp_path)
    assert summary.loc["broken", "status"] == "failed"
    assert set(summary.loc[["alpha", "beta", "gamma"], "status"]) == {"done"}
    assert summary.loc["gamma", "n_fields"] == 2
    assert summary.loc["gamma", "call"] in {"no call", *MUTATION_CLASSES}
    gamma = json.loads((tmp_path / "gamma" / "slide.json").read_text())
    assert gamma["counts"]["cells"] == sum(
        len(pd.read_csv(tmp_path / "gamma" / f"field{seed}_cells.csv")) for seed in (3, 4)
    )

    done_file = tmp_path / "alpha" / "alpha_cells.csv"
    stamp = done_file.stat().st_mtime_ns
    assert main(["batch", str(slides_folder), "--out", str(tmp_path)]) == 1
    summary = _summary(tmp_path)
    assert set(summary.loc[["alpha", "beta", "gamma"], "status"]) == {"skipped"}
    assert summary.loc["gamma", "call"] == (gamma["slide_call"]["call"] or "no call")
    assert done_file.stat().st_mtime_ns == stamp

    (slides_folder / "broken.png").rename(slides_folder / "broken.bak")
    try:
        assert main(["batch", str(slides_folder), "--out", str(tmp_path), "--force"]) == 0
    finally:
        (slides_folder / "broken.bak").rename(slides_folder / "broken.png")
    assert set(_summary(tmp_path)["status"]) == {"done"}
    assert done_file.stat().st_mtime_ns != stamp


def test_unwritable_output_folder_is_an_error_with_its_path(slides_folder, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = main(["run", str(slides_folder / "alpha.png"), "--out", str(blocker)])
    assert code == 1
    assert "a-file" in capsys.readouterr().err


def test_missing_inputs_and_models_name_the_problem(slides_folder, tmp_path, capsys):
    assert main(["batch", str(tmp_path / "nothing-here"), "--out", str(tmp_path)]) == 1
    assert "No file or folder at" in capsys.readouterr().err
    image = str(slides_folder / "alpha.png")
    assert main(["run", image, "--out", str(tmp_path), "--blast-model", "no-such-model"]) == 1
    assert "No model bundle named or found at 'no-such-model'" in capsys.readouterr().err
    assert main(["run", image, "--out", str(tmp_path), "--device", "cuda"]) == 1
    assert "not available on this machine" in capsys.readouterr().err


def test_models_list_shows_the_shipped_bundles_and_their_provenance(capsys):
    assert main(["models", "list", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert {
        "smear-cellpose",
        "smear-nucleated",
        "blast-smear",
        "blast-demo",
        "mutation-demo",
    } <= set(rows)
    assert rows["blast-demo"]["demo"] is True
    assert rows["blast-demo"]["command"].startswith("blastscope train blast")
    assert main(["models", "list"]) == 0
    assert "not for diagnosis" in capsys.readouterr().out


def test_the_installed_command_reports_its_version():
    completed = subprocess.run(
        [sys.executable, "-m", "blastscope.cli", "--version"], capture_output=True, text=True
    )
    assert completed.returncode == 0
    assert completed.stdout.strip() == f"blastscope {__version__}"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--threshold", "5", r"between 0 and 1, got 5"),
        ("--threshold", "high", "not a number"),
        ("--min-probability", "-0.1", r"between 0 and 1, got -0\.1"),
        ("--pixel-size", "10", r"between 0\.02 and 5 µm per pixel"),
        ("--pixel-size", "250", r"nanometres, give 0\.25"),
        ("--batch-size", "0", "at least 1"),
        ("--min-blasts", "-3", "at least 0"),
        ("--min-blasts", "2.5", "whole number"),
        ("--tile-size", "100", "at least 256"),
        ("--formats", "csv,pdf", r"unknown format 'pdf'.*geojson"),
        ("--device", "gpu", r"'gpu'.*auto, cpu, cuda"),
    ],
)
def test_bad_option_values_are_refused_when_parsed(tmp_path, capsys, option, value, message):
    for command, source in (("run", "field.png"), ("batch", "scans")):
        with pytest.raises(SystemExit) as raised:
            main([command, str(tmp_path / source), "--out", str(tmp_path), option, value])
        assert raised.value.code == 2
        error = capsys.readouterr().err
        assert f"argument {option}" in error
        assert re.search(message, error), error


def test_every_run_and_batch_option_has_help_that_shows_its_default(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "500")  # one line per option
    for command in ("run", "batch"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        lines = capsys.readouterr().out.splitlines()
        options = [line for line in lines if re.match(r"  --[a-z]", line)]
        assert len(options) >= 13, lines
        for line in options:
            assert "(default: " in line or "(required)" in line, line
        assert any(re.search(r"--min-probability .*\(default: 0\.4\)", line) for line in options)
        assert any(re.search(r"--pixel-size .*\(default: .*metadata", line) for line in options)


def test_the_parser_defaults_are_the_pipeline_defaults(monkeypatch):
    from blastscope import devices, export, pipeline, predict, segment, slide_call

    args = build_parser().parse_args(["run", "field.png", "--out", "out"])
    assert args.segmenter == segment.SHIPPED_SEGMENTER
    assert args.blast_model == pipeline.DEFAULT_BLAST_MODEL
    assert args.mutation_model == pipeline.DEFAULT_MUTATION_MODEL
    assert args.min_blasts == slide_call.DEFAULT_MIN_BLASTS
    assert args.min_probability == slide_call.DEFAULT_MIN_PROBABILITY
    assert args.batch_size == predict.DEFAULT_BATCH_SIZE
    assert args.tile_size == segment.SegmentationParams().tile_size
    assert args.formats == ",".join(export.DEFAULT_FORMATS)
    assert cli.ALL_FORMATS == export.ALL_FORMATS
    assert cli.GEOJSON_SHAPES == export.geojson_writer.GEOJSON_SHAPES
    assert cli.POOLINGS == slide_call.POOLINGS
    assert cli.DEVICE_CHOICES == devices.DEVICE_CHOICES
    monkeypatch.setattr(pipeline, "loaded", lambda config: config)
    tiled = build_parser().parse_args(
        ["run", "field.png", "--out", "out", "--tile-size", "512", "--pixel-size", "0.25"]
    )
    config = cli._pipeline_config(tiled)
    assert config.segmentation.tile_size == 512
    assert tiled.pixel_size == 0.25


def test_importing_the_cli_and_building_its_parser_load_no_heavy_module():
    code = (
        "import sys\n"
        "import blastscope.cli\n"
        "blastscope.cli.build_parser()\n"
        "heavy = ('torch', 'cellpose', 'napari', 'qtpy', 'pandas', 'blastscope.pipeline')\n"
        "print(','.join(name for name in heavy if name in sys.modules))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert completed.stdout.strip() == ""


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["evaluate", "--help"], "--threshold"),
        (["crossval", "blast", "--help"], "--folds"),
        (["train", "blast", "--help"], "--epochs"),
        (["train", "segmenter", "--help"], "--epochs"),
    ],
)
def test_subcommands_loaded_on_use_still_show_their_options(capsys, command, expected):
    with pytest.raises(SystemExit) as raised:
        main(command)
    assert raised.value.code == 0
    assert expected in capsys.readouterr().out
