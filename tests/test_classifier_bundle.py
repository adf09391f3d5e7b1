import pytest
import torch

from blastscope.models.architectures import (
    ArchitectureError,
    build_network,
    count_parameters,
    default_architecture,
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
