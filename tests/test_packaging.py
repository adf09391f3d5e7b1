"""The plugin is installable and discoverable: manifest valid, found by napari, inside the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from importlib.resources import files
from pathlib import Path

import npe2

ROOT = Path(__file__).parents[1]
PLUGIN = "napari-blastscope"


def test_manifest_validates_with_npe2():
    completed = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", PLUGIN, "--imports"],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_napari_discovers_the_plugin_from_the_installed_package():
    manager = npe2.PluginManager()
    manager.discover()
    manifest = manager.get_manifest(PLUGIN)
    widgets = {widget.display_name for widget in manifest.contributions.widgets}
    assert "Segment cells" in widgets
    installed = files("blastscope") / "napari.yaml"
    assert installed.read_text() == (ROOT / "napari.yaml").read_text()


def test_built_wheel_contains_the_manifest_models_and_samples(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    (wheel,) = tmp_path.glob("napari_blastscope-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        manifest = archive.read("blastscope/napari.yaml").decode()
        entry_points = next(
            archive.read(name).decode() for name in names if name.endswith("entry_points.txt")
        )
    assert manifest == (ROOT / "napari.yaml").read_text()
    assert "[napari.manifest]" in entry_points
    assert "napari-blastscope = blastscope:napari.yaml" in entry_points
    assert "blastscope/data/samples/bccd_BloodImage_00010.jpg" in names
    assert "blastscope/data/samples/LICENSE-BCCD" in names
    shipped_prefix = "blastscope/models/shipped/"
    shipped = {name.split("/")[3] for name in names if name.startswith(shipped_prefix)}
    assert {
        "smear-cellpose",
        "smear-nucleated",
        "blast-smear",
        "blast-demo",
        "mutation-demo",
    } <= shipped
