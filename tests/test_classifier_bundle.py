import json

import pytest
import torch

from blastscope.models.architectures import (
    ArchitectureError,
    build_network,
    count_parameters,
    default_architecture,
)
from blastscope.models.bundle import BundleError
from blastscope.models.classifier import (
    CropInput,
    classifier_metadata,
    load_classifier,
    save_classifier,
    write_random_classifier,
)


@pytest.mark.parametrize("num_classes", [2, 4])
def test_default_network_is_compact_and_gives_one_logit_per_class(num_classes):
    network = build_network(default_architecture(num_classes)).eval()
    assert 200_000 <= count_parameters(network) <= 1_000_000
    with torch.inference_mode():
        for side in (48, 64):
            assert network(torch.rand(3, 3, side, side)).shape == (3, num_classes)


def test_architecture_args_shape_the_network():
    small = build_network({"name": "blastnet", "args": {"widths": [8, 16], "num_classes": 3}})
    assert small.head.out_features == 3
    assert small.head.in_features == 16
    deep = build_network({"name": "blastnet", "args": {"blocks_per_stage": 2}})
    assert count_parameters(deep) > count_parameters(build_network({"name": "blastnet"}))


def test_unknown_architecture_is_refused_with_the_known_names():
    with pytest.raises(ArchitectureError, match=r"Unknown architecture 'resnet50'.*blastnet"):
        build_network({"name": "resnet50", "args": {}})


def test_bad_architecture_args_are_refused_by_name():
    with pytest.raises(ArchitectureError, match="num_classes >= 2"):
        build_network({"name": "blastnet", "args": {"num_classes": 1}})
    with pytest.raises(ArchitectureError, match="widths must be a non-empty list"):
        build_network({"name": "blastnet", "args": {"widths": []}})
    with pytest.raises(ArchitectureError, match="does not take these arguments"):
        build_network({"name": "blastnet", "args": {"depth": 50}})


# --- classifier bundles -------------------------------------------------------------------------


def _edit_metadata(bundle_dir, edit):
    path = bundle_dir / "bundle.json"
    metadata = json.loads(path.read_text())
    edit(metadata)
    path.write_text(json.dumps(metadata))


@pytest.fixture
def blast_bundle(tmp_path):
    return write_random_classifier(tmp_path / "blast-random", "blast", seed=3)


@pytest.fixture
def mutation_bundle(tmp_path):
    return write_random_classifier(tmp_path / "mutation-random", "mutation", window_um=32)


def test_blast_bundle_round_trip_keeps_network_and_metadata(blast_bundle):
    classifier = load_classifier(blast_bundle, "blast")
    assert classifier.kind == "blast"
    assert classifier.name == "blast-random"
    assert classifier.classes == ("non-blast", "blast")
    assert classifier.input == CropInput(24.0, 0.5, 48, False, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert classifier.threshold == 0.5
    assert classifier.temperature == 1.0
    assert classifier.demo is False
    assert classifier.metadata["training"]["epochs"] == 0
    assert not classifier.network.training
    torch.manual_seed(3)
    reference = build_network(classifier.metadata["architecture"])
    for key, value in reference.state_dict().items():
        assert torch.equal(classifier.network.state_dict()[key], value), key


def test_mutation_bundle_has_the_default_classes_and_no_threshold(mutation_bundle):
    classifier = load_classifier(mutation_bundle, "mutation")
    assert classifier.classes == ("PML::RARA", "NPM1", "CBFB::MYH11", "RUNX1::RUNX1T1")
    assert classifier.threshold is None
    assert classifier.input.crop_px == 64
    crops = torch.rand(5, 3, 64, 64)
    probabilities = classifier.probabilities(crops)
    assert probabilities.shape == (5, 4)
    assert torch.allclose(probabilities.sum(1), torch.ones(5))


def test_temperature_softens_probabilities(tmp_path):
    sharp = load_classifier(write_random_classifier(tmp_path / "a", "mutation"), "mutation")
    soft = load_classifier(
        write_random_classifier(tmp_path / "b", "mutation", temperature=4.0), "mutation"
    )
    crops = torch.rand(8, 3, 48, 48)
    p_sharp, p_soft = sharp.probabilities(crops), soft.probabilities(crops)
    assert float(p_soft.max(1).values.mean()) < float(p_sharp.max(1).values.mean())
    assert torch.equal(p_soft.argmax(1), p_sharp.argmax(1))


def test_blast_bundle_given_as_mutation_bundle_is_refused(blast_bundle, mutation_bundle):
    with pytest.raises(BundleError, match="is a blast bundle, but a mutation bundle is needed"):
        load_classifier(blast_bundle, "mutation")
    with pytest.raises(BundleError, match="is a mutation bundle, but a blast bundle is needed"):
        load_classifier(mutation_bundle, "blast")


def test_classes_that_do_not_match_the_network_are_refused(mutation_bundle):
    _edit_metadata(mutation_bundle, lambda m: m["classes"].append("KMT2A"))
    with pytest.raises(BundleError, match=r"lists 5 classes .* but its network has 4 outputs"):
        load_classifier(mutation_bundle, "mutation")


def test_blast_bundle_with_other_classes_is_refused(blast_bundle):
    _edit_metadata(blast_bundle, lambda m: m.update(classes=["blast", "non-blast"]))
    with pytest.raises(BundleError, match=r"blast bundles have exactly \['non-blast', 'blast'\]"):
        load_classifier(blast_bundle, "blast")


def test_weights_that_do_not_fit_the_architecture_are_refused(blast_bundle):
    _edit_metadata(blast_bundle, lambda m: m["architecture"]["args"].update(widths=[8, 16, 32, 64]))
    with pytest.raises(BundleError, match="tensor shapes that do not match the architecture"):
        load_classifier(blast_bundle, "blast")


def test_unknown_architecture_in_a_bundle_is_refused(blast_bundle):
    _edit_metadata(blast_bundle, lambda m: m["architecture"].update(name="vit-huge"))
    with pytest.raises(BundleError, match="Unknown architecture 'vit-huge'"):
        load_classifier(blast_bundle, "blast")


def test_missing_metadata_keys_are_listed(blast_bundle):
    def drop(metadata):
        del metadata["temperature"]
        del metadata["input"]["window_um"]

    _edit_metadata(blast_bundle, drop)
    with pytest.raises(BundleError, match=r"lacks temperature, input\.window_um.*save_classifier"):
        load_classifier(blast_bundle, "blast")


def test_inconsistent_crop_size_is_refused(blast_bundle):
    _edit_metadata(blast_bundle, lambda m: m["input"].update(crop_px=64))
    with pytest.raises(BundleError, match=r"crop_px is 64 but a 24\.0 µm window"):
        load_classifier(blast_bundle, "blast")


def test_blast_threshold_outside_unit_interval_is_refused(tmp_path):
    with pytest.raises(BundleError, match=r"threshold must be a number in \[0, 1\]"):
        write_random_classifier(tmp_path / "x", "blast", threshold=1.5)


def test_save_refuses_a_network_that_does_not_match_the_metadata(tmp_path):
    metadata = classifier_metadata("mutation", "m")
    network = build_network(default_architecture(4))
    five = {**metadata, "classes": ["a", "b", "c", "d", "e"]}
    with pytest.raises(BundleError, match="lists 5 classes"):
        save_classifier(tmp_path / "m", network, five)
    small = build_network({"name": "blastnet", "args": {"num_classes": 4, "widths": [8, 16]}})
    with pytest.raises(BundleError, match="network given for m do not fit the architecture"):
        save_classifier(tmp_path / "m", small, metadata)


def test_segmenter_kind_is_not_a_classifier(blast_bundle):
    with pytest.raises(BundleError, match="kind is one of blast, mutation, nucleated, got 'segm"):
        load_classifier(blast_bundle, "segmenter")


def test_bundle_normalisation_is_applied_to_crops(tmp_path):
    plain = load_classifier(write_random_classifier(tmp_path / "a", "blast", seed=5), "blast")
    shifted = load_classifier(
        write_random_classifier(tmp_path / "b", "blast", seed=5, mean=(0.8, 0.6, 0.7)), "blast"
    )
    crops = torch.rand(4, 3, 48, 48)
    expected = (crops - torch.tensor([0.8, 0.6, 0.7])[:, None, None]) / 0.25
    assert torch.allclose(shifted.normalise(crops), expected)
    assert not torch.allclose(plain.probabilities(crops), shifted.probabilities(crops))


def test_a_run_on_another_device_never_moves_the_shared_network(mutation_bundle):
    """Workers share one loaded classifier; a run on a second device (here torch's "meta"
    device stands in for a GPU) gets its own copy, and the network stays where it was loaded."""
    classifier = load_classifier(mutation_bundle, "mutation")
    crops = torch.rand(3, 3, 64, 64)
    on_cpu = classifier.probabilities(crops)
    elsewhere = classifier.on("meta")
    assert elsewhere is not classifier
    assert elsewhere.device.type == "meta"
    assert classifier.on("meta") is elsewhere  # made once, kept
    assert classifier.on("cpu") is classifier
    assert classifier.probabilities(crops.to("meta")).device.type == "meta"
    assert classifier.device.type == "cpu"
    assert torch.equal(classifier.probabilities(crops), on_cpu)
