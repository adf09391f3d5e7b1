"""Faults a user meets outside the code: the process killed (kill -9) at each stage of a run, and
a disk that fills up while writing. The real ``blastscope`` command in a subprocess; a rerun
finishes what was left, and nothing half-written is left behind."""

from __future__ import annotations

import hashlib
import json
import resource
import signal
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest

from blastscope.synthetic import generate_field

COMMAND = str(Path(sys.executable).parent / "blastscope")


@pytest.fixture(scope="module")
def field_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("field") / "f.png"
    iio.imwrite(path, generate_field(5, shape=(384, 384)).image)
    return path


def run_command(field: Path, out: Path, **options) -> subprocess.CompletedProcess:
    argv = [COMMAND, "run", str(field), "--out", str(out), "--pixel-size", "0.25"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, **options)


def assert_complete(out: Path) -> None:
    """Every output that run.json lists exists with its hash; no temporary file is left."""
    folder = out / "f"
    record = json.loads((folder / "f_run.json").read_text())
    for output in record["outputs"]:
        data = (folder / output["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == output["sha256"], output["file"]
    assert json.loads((folder / "slide.json").read_text())["slide_id"] == "f"
    assert not [path for path in folder.iterdir() if path.name.endswith(".part")]


@pytest.mark.parametrize("stage", ["checking fields", "segment:", "mutation:"])
def test_a_run_killed_at_any_stage_is_finished_by_a_plain_rerun(field_png, tmp_path, stage):
    out = tmp_path / "out"
    argv = [COMMAND, "run", str(field_png), "--out", str(out), "--pixel-size", "0.25"]
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    for line in process.stderr:
        if line.startswith(stage):
            process.send_signal(signal.SIGKILL)  # kill -9: no clean-up runs
            break
    process.wait(timeout=600)
    assert process.returncode == -signal.SIGKILL
    assert not (out / "f" / "slide.json").exists()  # the marker comes last

    rerun = run_command(field_png, out)
    assert rerun.returncode == 0, rerun.stderr
    assert_complete(out)


def test_a_full_disk_leaves_no_file_and_says_what_to_do(field_png, tmp_path):
    """A file-size limit makes every write past 100 kB fail as a full disk does (EFBIG)."""

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    out = tmp_path / "out"
    result = run_command(field_png, out, preexec_fn=limit_file_size)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "Not enough room to write the outputs in" in result.stderr
    assert "nothing was written" in result.stderr
    assert [path for path in out.rglob("*") if path.is_file()] == []

    rerun = run_command(field_png, out)  # room again: the same command finishes
    assert rerun.returncode == 0, rerun.stderr
    assert_complete(out)
