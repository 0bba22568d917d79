"""ImageNet ResNets: torchvision's parameter counts, strict state_dict loading, identical outputs."""

from __future__ import annotations

import pytest
import torch
from torchvision import models as tv_models

from src.models import build_model
from src.models.complexity import count_parameters, parameters_by_kind

TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032}


@pytest.mark.parametrize("arch", TORCHVISION_PARAMS)
def test_parameter_counts_match_torchvision(arch):
    assert count_parameters(build_model(arch, num_classes=1000)) == TORCHVISION_PARAMS[arch]


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torchvision_state_dict_loads_strictly_with_identical_outputs(arch):
    torch.manual_seed(0)
    reference = getattr(tv_models, arch)(weights=None).eval()
    ours = build_model(arch, num_classes=1000).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), reference(x))


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_plain_twin_is_the_resnet_minus_its_projections(arch):
    resnet = build_model(arch, num_classes=1000)
    plain = build_model(arch.replace("resnet", "plain"), num_classes=1000)
    projections = parameters_by_kind(resnet)["shortcut_projection"]
    assert projections > 0
    assert count_parameters(plain) == count_parameters(resnet) - projections
    assert parameters_by_kind(plain)["shortcut_projection"] == 0
    # Every parameter the plain net has, the ResNet has under the same name and shape.
    resnet_shapes = {k: v.shape for k, v in resnet.state_dict().items()}
    assert all(resnet_shapes[k] == v.shape for k, v in plain.state_dict().items())


def test_head_options_keep_torchvision_names():
    model = build_model("resnet18", num_classes=5, in_channels=1, dropout=0.2, pooling="max")
    assert isinstance(model.avgpool, torch.nn.AdaptiveMaxPool2d)
    assert model.conv1.weight.shape == (64, 1, 7, 7)
    assert model.eval()(torch.randn(2, 1, 64, 64)).shape == (2, 5)
    reference_keys = set(tv_models.resnet18(num_classes=5).state_dict())
    assert set(model.state_dict()) == reference_keys


def test_all_imagenet_depths_build():
    for depth, expected_blocks in {101: 33, 152: 50}.items():
        model = build_model(f"resnet{depth}", num_classes=10)
        blocks = sum(len(getattr(model, f"layer{i}")) for i in range(1, 5))
        assert blocks == expected_blocks
