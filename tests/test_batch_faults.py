"""run and batch under real use: stale or damaged resumes, interrupted slides, unsafe slide names,
spreadsheet formulas in summary.csv, corrupt fields and output problems found before analysing."""

from __future__ import annotations

import csv
import json

import imageio.v3 as iio
import pandas as pd
import pytest

import blastscope.batch
from blastscope.batch import Slide, find_slides, slide_steps
from blastscope.cli import main
from blastscope.export import ExportError
from blastscope.pipeline import PipelineConfig
from blastscope.progress import run_steps
from blastscope.synthetic import generate_field

FIELD_SHAPE = (256, 256)
FAST = ["--formats", "csv", "--pixel-size", "0.26"]
CORRUPT_PNG = b"\x89PNG\r\n\x1a\n truncated"


def _field(path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, generate_field(seed, shape=FIELD_SHAPE).image)


def _summary(out) -> pd.DataFrame:
    return pd.read_csv(out / "summary.csv", keep_default_na=False).set_index("slide_id")


def _no_analysis(*args, **kwargs):
    raise AssertionError("a field was analysed before the checks")


def _messages(capsys) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err


@pytest.fixture
def no_analysis(monkeypatch):
    """Make any analysis fail the test: the checks under test must come before it."""
    monkeypatch.setattr(blastscope.batch, "analyse_steps", _no_analysis)


# --------------------------------------------------------------------------- resume


def test_resume_redoes_a_slide_whose_fields_changed_and_says_why(tmp_path, capsys):
    source, out = tmp_path / "in", tmp_path / "out"
    _field(source / "s" / "f0.png", 1)
    batch = ["batch", str(source), "--out", str(out), *FAST]
    assert main(batch) == 0

    _field(source / "s" / "f1.png", 2)
    capsys.readouterr()
    assert main(batch) == 0
    assert "field f1.png added" in _messages(capsys)
    summary = _summary(out)
    assert summary.loc["s", "status"] == "done"
    assert summary.loc["s", "n_fields"] == 2
    record = json.loads((out / "s" / "slide.json").read_text())
    assert [item["name"] for item in record["fields"]] == ["f0.png", "f1.png"]
    cells = sum(len(pd.read_csv(out / "s" / f"f{index}_cells.csv")) for index in (0, 1))
    assert summary.loc["s", "cells"] == record["counts"]["cells"] == cells

    _field(source / "s" / "f0.png", 3)
    assert main(batch) == 0
    assert "f0.png changed" in _messages(capsys)
    assert _summary(out).loc["s", "status"] == "done"

    (source / "s" / "f1.png").unlink()
    assert main(batch) == 0
    assert "field f1.png removed" in _messages(capsys)
    assert not (out / "s" / "f1_cells.csv").exists()
    assert _summary(out).loc["s", "n_fields"] == 1

    assert main(batch) == 0
    assert _summary(out).loc["s", "status"] == "skipped"


def test_resume_redoes_a_slide_analysed_with_other_settings(tmp_path, capsys):
    source, out = tmp_path / "in", tmp_path / "out"
    _field(source / "a.png", 1)
    batch = ["batch", str(source), "--out", str(out), *FAST]
    assert main([*batch, "--threshold", "0.5"]) == 0
    capsys.readouterr()
    assert main([*batch, "--threshold", "0.9"]) == 0
    messages = _messages(capsys)
    assert "settings changed" in messages
    assert "blast_threshold" in messages
    assert _summary(out).loc["a", "status"] == "done"
    record = json.loads((out / "a" / "slide.json").read_text())
    assert record["settings"]["blast_threshold"] == 0.9
    assert main([*batch, "--threshold", "0.9"]) == 0
    assert _summary(out).loc["a", "status"] == "skipped"


@pytest.mark.parametrize(
    "damage", ["{not json", "[]", '{"fields": 3, "slide_call": 5, "counts": "many"}']
)
def test_a_damaged_slide_record_is_redone_with_a_reason(tmp_path, capsys, damage):
    source, out = tmp_path / "in", tmp_path / "out"
    _field(source / "a.png", 1)
    batch = ["batch", str(source), "--out", str(out), *FAST]
    assert main(batch) == 0
    (out / "a" / "slide.json").write_text(damage)
    capsys.readouterr()
    assert main(batch) == 0
    messages = _messages(capsys)
    assert "slide.json" in messages
    assert "redone" in messages
    assert _summary(out).loc["a", "status"] == "done"
    assert json.loads((out / "a" / "slide.json").read_text())["slide_id"] == "a"


# --------------------------------------------------------------------------- interrupted


def _interrupt_after_first_export(monkeypatch) -> None:
    export = blastscope.batch.export_result
    calls = []

    def export_then_stop(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return export(*args, **kwargs)

    monkeypatch.setattr(blastscope.batch, "export_result", export_then_stop)


@pytest.mark.parametrize("command", ["batch", "run"])
def test_an_interrupted_slide_is_finished_by_a_plain_rerun(tmp_path, monkeypatch, capsys, command):
    source, out = tmp_path / "in", tmp_path / "out"
    for index in (0, 1):
        _field(source / "s" / f"f{index}.png", index)
    target = source if command == "batch" else source / "s"
    arguments = [command, str(target), "--out", str(out), *FAST]
    with monkeypatch.context() as patch:
        _interrupt_after_first_export(patch)
        assert main(arguments) == 130
    assert (out / "s" / "f0_cells.csv").is_file()
    assert not (out / "s" / "slide.json").exists()
    stale = out / "s" / ".f1_cells.csv.0123456789ab.part"
    stale.write_text("half a table")
    capsys.readouterr()

    assert main(arguments) == 0, _messages(capsys)
    assert "unfinished" in _messages(capsys)
    assert {"f0_cells.csv", "f1_cells.csv", "slide.json"} <= {p.name for p in (out / "s").iterdir()}
    assert not list((out / "s").glob(".*.part"))


def test_refusals_name_the_cli_flag_on_the_command_line_and_the_argument_in_python(
    tmp_path, capsys
):
    _field(tmp_path / "a.png", 1)
    arguments = ["run", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), *FAST]
    assert main(arguments) == 0
    capsys.readouterr()
    assert main(arguments) == 1
    error = capsys.readouterr().err
    assert "already exists" in error
    assert "--overwrite" in error
    assert "overwrite=True" not in error

    slide = Slide("a", (tmp_path / "a.png",))
    config = PipelineConfig(mutation_model=None)
    with pytest.raises(ExportError, match="overwrite=True"):
        run_steps(slide_steps(slide, tmp_path / "out", config, formats=("csv",)))


# --------------------------------------------------------------------------- slide names


def test_slide_ids_cannot_lead_outside_the_output_folder(tmp_path, monkeypatch):
    trav = tmp_path / "trav"
    _field(trav / "slideA" / "f0.png", 1)
    inner = tmp_path / "out" / "trav" / "inner"
    assert main(["run", str(trav / "slideA" / ".."), "--out", str(inner), *FAST]) == 0
    assert [path.name for path in (tmp_path / "out" / "trav").iterdir()] == ["inner"]
    assert (inner / "trav" / "f0_cells.csv").is_file()

    monkeypatch.chdir(trav / "slideA")
    root = tmp_path / "x"
    assert main(["run", ".", "--out", str(root), *FAST]) == 0
    assert sorted(path.name for path in root.iterdir()) == ["cells.parquet", "slideA"]  # cohort


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b", ".hidden"])
def test_unsafe_slide_ids_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="slide"):
        Slide(name, (tmp_path / "a.png",))


def test_hidden_folders_are_not_slides_and_a_hidden_image_is_refused(tmp_path, capsys):
    _field(tmp_path / "in" / ".cache" / "f0.png", 1)
    _field(tmp_path / "in" / "b.png", 2)
    assert [slide.slide_id for slide in find_slides(tmp_path / "in")] == ["b"]
    _field(tmp_path / ".c.png", 3)
    assert main(["run", str(tmp_path / ".c.png"), "--out", str(tmp_path / "out")]) == 1
    assert ".c" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# --------------------------------------------------------------------------- summary.csv


def test_summary_escapes_slide_names_a_spreadsheet_would_run(tmp_path):
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    names = ["=1+2", "+SUM(A1)", "-3", "@cmd", "\tx"]
    for name in names:
        (source / f"{name}.png").write_bytes(CORRUPT_PNG)
    _field(source / "ok.png", 1)
    assert main(["batch", str(source), "--out", str(out), *FAST]) == 1
    with open(out / "summary.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["slide_id"] for row in rows) == sorted(["ok", *(f"'{n}" for n in names)])
    for row in rows:
        for value in row.values():
            try:
                float(value)
            except ValueError:
                assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), row


# --------------------------------------------------------------------------- checks up front


def test_run_of_a_folder_with_a_corrupt_field_fails_before_exporting_any(
    tmp_path, capsys, no_analysis
):
    slide, out = tmp_path / "slide", tmp_path / "out"
    _field(slide / "a.png", 1)
    (slide / "b.png").write_bytes(CORRUPT_PNG)
    assert main(["run", str(slide), "--out", str(out), *FAST]) == 1
    assert "b.png" in capsys.readouterr().err
    assert not (out / "slide").exists() or not any((out / "slide").iterdir())

    assert main(["batch", str(tmp_path), "--out", str(out), *FAST]) == 1
    summary = _summary(out)
    assert summary.loc["slide", "status"] == "failed"
    assert "b.png" in summary.loc["slide", "error"]
    assert not (out / "slide").exists() or not any((out / "slide").iterdir())


def test_output_problems_are_found_before_any_analysis(tmp_path, monkeypatch, capsys):
    _field(tmp_path / "a.png", 1)
    arguments = ["run", str(tmp_path / "a.png"), *FAST]
    done = tmp_path / "done"
    assert main([*arguments, "--out", str(done)]) == 0
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "a").write_text("a file where the slide folder goes")
    capsys.readouterr()

    monkeypatch.setattr(blastscope.batch, "analyse_steps", _no_analysis)
    assert main([*arguments, "--out", str(blocked)]) == 1
    assert str(blocked / "a") in capsys.readouterr().err
    assert main([*arguments, "--out", str(done)]) == 1
    error = capsys.readouterr().err
    assert "already exists" in error
    assert "--overwrite" in error
    with pytest.raises(SystemExit) as refused:  # an unknown format: refused while parsing
        main([*arguments, "--out", str(tmp_path / "new"), "--formats", "csv,xlsx"])
    assert refused.value.code == 2
    assert "unknown format 'xlsx'" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
