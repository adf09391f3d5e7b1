import json

import pytest
import torch

from blastscope.models import BundleError, load_bundle, save_bundle


@pytest.fixture
def bundle_dir(tmp_path):
    state = {"conv.weight": torch.arange(24, dtype=torch.float32).reshape(2, 3, 2, 2)}
    metadata = {"kind": "blast", "name": "toy", "architecture": {"name": "toy", "args": {}}}
    return save_bundle(tmp_path / "toy", state, metadata)


def test_bundle_round_trip_keeps_weights_and_metadata(bundle_dir):
    bundle = load_bundle(bundle_dir, kind="blast")
    assert bundle.name == "toy"
    assert bundle.metadata["format"] == "blastscope-bundle"
    assert torch.equal(bundle.state_dict["conv.weight"].flatten(), torch.arange(24.0))


def test_bundle_of_other_kind_is_refused_by_name(bundle_dir):
    with pytest.raises(BundleError, match="is a blast bundle, but a mutation bundle is needed"):
        load_bundle(bundle_dir, kind="mutation")


def test_truncated_weights_are_refused(bundle_dir):
    weights = bundle_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(BundleError, match="do not match their recorded SHA-256"):
        load_bundle(bundle_dir)


def test_foreign_json_is_refused(tmp_path):
    (tmp_path / "bundle.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(BundleError, match="not a blastscope bundle"):
        load_bundle(tmp_path)


def test_existing_bundle_is_not_overwritten(bundle_dir):
    with pytest.raises(BundleError, match="already exists"):
        save_bundle(bundle_dir, {}, {"kind": "blast", "name": "x", "architecture": {}})


def test_missing_bundle_names_the_fix(tmp_path):
    with pytest.raises(BundleError, match="Give a shipped bundle"):
        load_bundle(tmp_path / "nowhere")
