"""The plugin is installable and discoverable: manifest valid, found by napari, and a wheel built
from the source tree carries the manifest, every module, every shipped bundle and the samples."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import npe2
import pytest

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "src" / "blastscope"
PLUGIN = "napari-blastscope"
SHIPPED_BUNDLES = (
    "smear-cellpose",
    "smear-nucleated",
    "blast-smear",
    "blast-demo",
    "mutation-demo",
)


def test_manifest_validates_with_npe2():
    completed = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", PLUGIN, "--imports"],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_napari_discovers_every_widget_and_sample_of_the_manifest():
    manager = npe2.PluginManager()
    manager.discover()
    contributions = manager.get_manifest(PLUGIN).contributions
    declared = npe2.PluginManifest.from_file(ROOT / "napari.yaml").contributions
    widgets = {widget.display_name for widget in contributions.widgets}
    assert widgets == {widget.display_name for widget in declared.widgets}
    assert "Segment cells" in widgets
    samples = {sample.key for sample in contributions.sample_data}
    assert samples == {sample.key for sample in declared.sample_data}
    assert len(samples) == 5


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Iterator[zipfile.ZipFile]:
    """A wheel built offline from a copy of the source tree (a copy, so that nothing stale in the
    working tree's build/ can slip into it and the build writes nothing into the checkout)."""
    tree = tmp_path_factory.mktemp("tree")
    for name in ("pyproject.toml", "README.md", "LICENSE", "napari.yaml"):
        shutil.copy2(ROOT / name, tree / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "src", tree / "src", symlinks=True, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    completed = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)],
        cwd=tree,
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    (path,) = out.glob("napari_blastscope-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def test_wheel_manifest_and_entry_point_are_the_repositorys(wheel):
    names = set(wheel.namelist())
    manifest = wheel.read("blastscope/napari.yaml").decode()
    assert manifest == (ROOT / "napari.yaml").read_text()
    (entry_points,) = (name for name in names if name.endswith(".dist-info/entry_points.txt"))
    text = wheel.read(entry_points).decode()
    assert "[napari.manifest]\nnapari-blastscope = blastscope:napari.yaml" in text
    assert "blastscope = blastscope.cli:main" in text


def test_wheel_holds_every_module_of_the_source_tree(wheel):
    in_wheel = {name for name in wheel.namelist() if name.endswith(".py")}
    in_source = {
        path.relative_to(PACKAGE.parent).as_posix()
        for path in PACKAGE.rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert in_source - in_wheel == set()
    assert "blastscope/widgets/_sample_data.py" in in_wheel


@pytest.mark.parametrize("folder", ["models/shipped", "data/samples"])
def test_wheel_holds_every_shipped_file_byte_for_byte(wheel, folder):
    source = {
        path.relative_to(PACKAGE.parent).as_posix(): _digest(path.read_bytes())
        for path in (PACKAGE / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert source, f"nothing under src/blastscope/{folder}"
    packed = {name: _digest(wheel.read(name)) for name in source if name in wheel.namelist()}
    assert packed == source


def test_wheel_holds_each_bundle_and_the_samples_the_plugin_opens(wheel):
    names = set(wheel.namelist())
    for bundle in SHIPPED_BUNDLES:
        for file in ("bundle.json", "model.safetensors"):
            assert f"blastscope/models/shipped/{bundle}/{file}" in names
    assert "blastscope/models/shipped/TRAINING.md" in names
    assert "blastscope/data/samples/bccd_BloodImage_00010.jpg" in names
    assert "blastscope/data/samples/LICENSE-BCCD" in names


def test_wheel_requires_no_qt_binding_outside_the_extras(wheel):
    (metadata_name,) = (name for name in wheel.namelist() if name.endswith(".dist-info/METADATA"))
    metadata = Parser().parsestr(wheel.read(metadata_name).decode())
    requires = metadata.get_all("Requires-Dist")
    runtime = [line for line in requires if "extra ==" not in line]
    assert any(line.startswith("napari") for line in runtime)
    assert not [line for line in runtime if line.lower().startswith(("pyqt", "pyside"))]
    assert any(line.startswith("PyQt6") and "extra ==" in line for line in requires)


def test_wheel_links_the_method_and_the_data_it_is_built_on(wheel):
    (metadata_name,) = (name for name in wheel.namelist() if name.endswith(".dist-info/METADATA"))
    metadata = Parser().parsestr(wheel.read(metadata_name).decode())
    links = dict(line.split(", ", 1) for line in metadata.get_all("Project-URL"))
    assert links["Method (Jain et al. 2024)"] == "https://arxiv.org/abs/2506.12798"
    assert all(url.startswith("https://") for url in links.values())
