"""MACs/FLOPs, parameter breakdowns and model size, against published numbers."""

from __future__ import annotations

import pytest
import torch

from src.models import build_model
from src.models.complexity import (
    count_flops,
    count_macs,
    count_parameters,
    model_size_bytes,
    parameters_by_kind,
    parameters_by_stage,
)


@pytest.mark.parametrize(
    "arch, num_classes, shape, expected_macs",
    [
        ("resnet20", 10, (3, 32, 32), 40.55e6),
        ("resnet56", 10, (3, 32, 32), 125.49e6),
        ("resnet18", 1000, (3, 224, 224), 1.814e9),
    ],
)
def test_macs_match_published_values(arch, num_classes, shape, expected_macs):
    macs = count_macs(build_model(arch, num_classes), shape)
    assert macs == pytest.approx(expected_macs, rel=0.005)


def test_flops_are_twice_macs_and_plain_twin_costs_the_same():
    resnet, plain = build_model("resnet20", 10), build_model("plain20", 10)
    flops = count_flops(resnet, (3, 32, 32))
    assert flops == 2 * count_macs(resnet, (3, 32, 32))
    assert count_macs(plain, (3, 32, 32)) == count_macs(resnet, (3, 32, 32))


def test_macs_scale_with_image_area():
    model = build_model("resnet20", 10)
    conv_small = count_macs(model, (3, 32, 32)) - 640  # minus the linear head (64 x 10 MACs)
    conv_large = count_macs(model, (3, 64, 64)) - 640
    assert conv_large == 4 * conv_small


def test_counting_leaves_the_model_untouched():
    model = build_model("resnet20", 10).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_macs(model, (3, 32, 32))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).device.type == "cpu"


def test_parameter_breakdowns_add_up():
    model = build_model("resnet56", 10, shortcut="B")
    total = count_parameters(model)
    assert sum(parameters_by_stage(model).values()) == total
    assert sum(parameters_by_kind(model).values()) == total
    stages = parameters_by_stage(model)
    assert list(stages) == ["conv1", "bn1", "layer1", "layer2", "layer3", "fc"]
    assert stages["fc"] == 64 * 10 + 10
    kinds = parameters_by_kind(model)
    assert kinds["linear"] == 650 and kinds["shortcut_projection"] == 2752


def test_frozen_parameters_are_not_trainable():
    model = build_model("resnet20", 10)
    for param in model.layer1.parameters():
        param.requires_grad_(False)
    frozen = sum(p.numel() for p in model.layer1.parameters())
    assert count_parameters(model, trainable_only=True) == count_parameters(model) - frozen


def test_model_size_counts_parameters_and_buffers():
    model = build_model("resnet20", 10)
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert model_size_bytes(model) == 269_722 * 4 + buffers


class ReadsValues(torch.nn.Module):
    """A fork's net whose forward reads a value (``.item()``): the meta device cannot run it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)  # 8x8 -> 6x6: 4 * 36 * 3 * 9 = 3,888 MACs
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc = torch.nn.Linear(4, 10)  # 40 MACs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        if y.abs().max().item() > 1e6:  # never true; the read is what matters
            y = y / 2
        return self.fc(y.mean((2, 3)))


def test_a_forward_that_reads_values_is_counted_on_a_cpu_copy():
    """It failed the fit at its start ("Tensor.item() cannot be called on meta tensors"); now it is counted
    exactly, and the model (training mode, BN statistics) is left as it was."""
    model = ReadsValues().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert count_macs(model, (3, 8, 8)) == 3888 + 40
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
