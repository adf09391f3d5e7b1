"""napari's File > Open Sample (every sample_data contribution of the manifest) and
``blastscope demo`` (what ``make demo`` runs), with the shipped models and no mocks."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import npe2
import numpy as np
import pandas as pd
import pytest
import tifffile

from blastscope.samples import BCCD_PIXEL_SIZE_UM, BCCD_SAMPLE
from blastscope.slide_call import DEFAULT_MIN_BLASTS
from blastscope.synthetic import MUTATION_CLASSES

ROOT = Path(__file__).parents[1]
PLUGIN = "napari-blastscope"
SAMPLES = npe2.PluginManifest.from_file(ROOT / "napari.yaml").contributions.sample_data
SAMPLE_KEYS = [sample.key for sample in SAMPLES]


@pytest.fixture(scope="module")
def plugins() -> npe2.PluginManager:
    """The installed plugin, found through its entry point as napari finds it."""
    manager = npe2.PluginManager()
    manager.discover()
    manager.activate(PLUGIN)
    return manager


def open_sample(manager: npe2.PluginManager, key: str) -> list[tuple]:
    (sample,) = (s for s in manager.get_manifest(PLUGIN).contributions.sample_data if s.key == key)
    return sample.open(_registry=manager.commands)


def test_the_manifest_offers_four_synthetic_mutation_samples_and_a_real_field():
    assert len(SAMPLE_KEYS) == 5
    mutations = {re.search(r"\((.+)\)$", s.display_name).group(1) for s in SAMPLES}
    assert mutations == {*MUTATION_CLASSES, "BCCD"}


@pytest.mark.parametrize("key", SAMPLE_KEYS)
def test_every_sample_opens_as_one_rgb_image_at_its_pixel_size(plugins, key):
    layers = open_sample(plugins, key)
    assert len(layers) == 1
    data, meta, layer_type = layers[0]
    assert layer_type == "image"
    assert isinstance(data, np.ndarray)
    assert data.dtype == np.uint8
    assert data.ndim == 3
    assert data.shape[2] == 3
    assert min(data.shape[:2]) >= 256
    assert data.std() > 10, "a blank image"
    assert meta["rgb"] is True
    pixel_size = meta["metadata"]["pixel_size_um"]
    assert 0.02 <= pixel_size <= 5
    assert meta["scale"] == (pixel_size, pixel_size)
    (display_name,) = (s.display_name for s in SAMPLES if s.key == key)
    if key == "bccd":
        assert pixel_size == BCCD_PIXEL_SIZE_UM
        np.testing.assert_array_equal(data, iio.imread(BCCD_SAMPLE)[..., :3])
    else:
        mutation = re.search(r"\((.+)\)$", display_name).group(1)
        assert meta["metadata"]["synthetic_mutation"] == mutation
        assert mutation in meta["name"]
        assert data.shape == (1024, 1024, 3)


def test_the_synthetic_samples_are_different_fields_and_the_same_every_time(plugins):
    images = {key: open_sample(plugins, key)[0][0] for key in SAMPLE_KEYS if key != "bccd"}
    firsts = [image[:64, :64].tobytes() for image in images.values()]
    assert len(set(firsts)) == len(images)
    again = open_sample(plugins, "synthetic_npm1")[0][0]
    np.testing.assert_array_equal(again, images["synthetic_npm1"])


@pytest.mark.gui
def test_napari_opens_every_sample_with_its_scale(make_napari_viewer_proxy):
    viewer = make_napari_viewer_proxy()
    for key in SAMPLE_KEYS:
        (layer,) = viewer.open_sample(PLUGIN, key)
        pixel_size = layer.metadata["pixel_size_um"]
        assert layer.rgb
        np.testing.assert_allclose(layer.scale, [pixel_size, pixel_size])
    assert len(viewer.layers) == 5


# ----------------------------------------------------------------------------- blastscope demo


def make_demo_command() -> list[str]:
    """The demo line of the Makefile's ``demo`` target, as an argument list."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    recipe = lines[lines.index(next(line for line in lines if line.startswith("demo:"))) + 1]
    return recipe.strip().replace("$(BIN)/", "").split()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """``blastscope demo --out DIR`` run as ``make demo`` runs it (~25 s on 2 cores)."""
    command = make_demo_command()
    assert command == ["blastscope", "demo", "--out", "demo-output"]
    out = tmp_path_factory.mktemp("demo") / "demo-output"
    script = Path(sys.executable).with_name("blastscope")
    completed = subprocess.run(
        [str(script), "demo", "--out", str(out)], capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return out, completed.stdout


def run_record(out: Path, stem: str) -> dict:
    return json.loads((out / stem / f"{stem}_run.json").read_text())


def test_demo_says_its_models_are_not_for_diagnosis_and_names_each_call(demo):
    _, printed = demo
    assert "Demonstration models, not for diagnosis" in printed
    assert re.search(
        r"^synthetic_NPM1: \d+ cells.*Slide call: NPM1 \(0\.\d\d, 95% interval",
        printed,
        re.MULTILINE,
    )
    assert re.search(r"^bccd_BloodImage_00010: .*No call: ", printed, re.MULTILINE)


@pytest.mark.parametrize("stem", ["synthetic_NPM1", "bccd_BloodImage_00010"])
def test_demo_writes_every_output_its_run_record_lists(demo, stem):
    out, _ = demo
    record = run_record(out, stem)
    written = {path.name for path in (out / stem).iterdir()}
    assert written == {entry["file"] for entry in record["outputs"]} | {f"{stem}_run.json"}
    for entry in record["outputs"]:
        data = (out / stem / entry["file"]).read_bytes()
        assert len(data) == entry["bytes"] > 0
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    suffixes = {Path(name).suffix for name in written}
    assert {".geojson", ".csv", ".tif", ".png", ".html", ".json"} <= suffixes


@pytest.mark.parametrize("stem", ["synthetic_NPM1", "bccd_BloodImage_00010"])
def test_demo_outputs_agree_with_each_other(demo, stem):
    out, _ = demo
    folder = out / stem
    record = run_record(out, stem)
    counts = record["counts"]
    assert counts["cells"] > 0
    assert record["slide_call"]["min_blasts"] == DEFAULT_MIN_BLASTS
    cells = pd.read_csv(folder / f"{stem}_cells.csv")
    assert len(cells) == counts["cells"]
    assert int(cells["is_nucleated"].sum()) == counts["nucleated"]
    assert int(cells["is_blast"].sum()) == counts["blasts"]
    labels = tifffile.imread(folder / f"{stem}_labels.ome.tif")
    assert list(labels.shape) == record["image_shape"]
    ids = np.unique(labels)
    np.testing.assert_array_equal(np.sort(cells["label"]), ids[ids > 0])
    assert iio.imread(folder / f"{stem}_overlay.png").shape[:2] == labels.shape
    features = json.loads((folder / f"{stem}.geojson").read_text())["features"]
    kinds = [feature["properties"]["objectType"] for feature in features]
    assert kinds.count("detection") == counts["nucleated"]
    assert "not for diagnosis" in (folder / f"{stem}_report.html").read_text()


def test_demo_calls_the_synthetic_samples_mutation_and_abstains_on_normal_blood(demo):
    # Measured: the NPM1 sample 610 cells, 45 nucleated, 28 blasts, call NPM1 (0.54); the BCCD
    # field 21 cells, 2 nucleated, 0 blasts, no call (insufficient blasts: 0 < 20).
    out, _ = demo
    synthetic = run_record(out, "synthetic_NPM1")
    assert synthetic["counts"]["blasts"] >= DEFAULT_MIN_BLASTS
    assert synthetic["slide_call"]["call"] == "NPM1"
    assert not synthetic["slide_call"]["abstained"]
    normal = run_record(out, "bccd_BloodImage_00010")
    assert normal["counts"]["nucleated"] >= 1
    assert normal["counts"]["blasts"] == 0
    assert normal["slide_call"]["abstained"]
    assert normal["slide_call"]["call"] is None
