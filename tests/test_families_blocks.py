"""Diagnostics, lesions and pruning see the new families' blocks: branch F and shortcut s, stated explicitly.

A pre-activation block computes ``F(x) + s(x)`` with no ReLU after the sum, its branch ends in a
convolution, and its projection reads ``relu(bn1(x))``. Removing a block must therefore leave exactly
what the block computes when its branch outputs zero -- checked here against zeroing the branch's last
convolution, for every kind of block.
"""

from __future__ import annotations

import copy

import pytest
import torch

from src.analysis.block_lesions import PlainNetworkError, lesioned
from src.analysis.magnitude_pruning import layer_kind
from src.callbacks.diagnostics import BranchRatioRecorder
from src.models import build_model
from src.models.blocks import branch_output, residual_blocks
from src.modules.pruning import prunable_layers, prune_magnitude
from tests.fork_models import TinyNet


@pytest.mark.parametrize(
    "arch, shortcuts",
    [
        ("wrn10_1", ["identity", "projection", "projection"]),
        ("wrn10_2", ["projection", "projection", "projection"]),
        ("plain_wrn10_1", ["none", "none", "none"]),
        ("preact_resnet8", ["identity", "projection", "projection"]),
    ],
)
def test_blocks_of_the_pre_activation_families(arch, shortcuts):
    blocks = residual_blocks(build_model(arch, 10))
    assert [b.name for b in blocks] == ["layer1.0", "layer2.0", "layer3.0"] and [b.stage for b in blocks] == [1, 2, 3]
    assert [b.shortcut for b in blocks] == shortcuts and all(b.preactivation for b in blocks)
    assert [b.downsampling for b in blocks] == [shortcuts[0] == "projection", True, True]


def test_bottleneck_and_wide_imagenet_blocks():
    blocks = residual_blocks(build_model("preact_resnet164", 10))
    assert len(blocks) == 54 and blocks[0].shortcut == "projection" and blocks[1].shortcut == "identity"
    assert branch_output(blocks[0].module) is blocks[0].module.conv3
    with torch.device("meta"):
        wide = residual_blocks(build_model("wide_resnet50_2", 10))
        wide_plain = residual_blocks(build_model("wide_plain50_2", 10))
    assert len(wide) == len(wide_plain) == 16 and not any(b.residual for b in wide_plain)


def zero_branch(net: torch.nn.Module, name: str) -> torch.nn.Module:
    twin = copy.deepcopy(net)
    torch.nn.init.zeros_(branch_output(twin.get_submodule(name)).weight)
    return twin


@pytest.mark.parametrize("arch", ["wrn10_2", "wrn10_1", "preact_resnet29"])
def test_removing_a_pre_activation_block_equals_zeroing_its_branch(arch):
    torch.manual_seed(0)
    net = build_model(arch, 10).eval()
    x = torch.randn(2, 3, 8, 8)
    blocks = residual_blocks(net)
    chosen = blocks if len(blocks) <= 3 else [blocks[0], blocks[1], blocks[3]]  # projections and an identity
    with torch.no_grad():
        intact = net(x)
        for block in chosen:
            with lesioned(net, [block]):
                removed = net(x)
            assert torch.allclose(removed, zero_branch(net, block.name)(x), atol=1e-5), block.name
            assert not torch.allclose(removed, intact, atol=1e-5)
        assert torch.equal(net(x), intact)  # restored


def test_plain_wrn_skips_shape_keeping_blocks_and_refuses_the_others():
    net = build_model("plain_wrn16_1", 10).eval()  # two blocks per stage
    blocks = {b.name: b for b in residual_blocks(net)}
    with torch.no_grad(), lesioned(net, [blocks["layer2.1"]]):
        assert isinstance(net.layer2[1], torch.nn.Identity)
    with pytest.raises(PlainNetworkError, match="cannot be removed"), lesioned(net, [blocks["layer2.0"]]):
        pass


def test_branch_to_shortcut_ratio_of_a_projection_block_by_hand():
    torch.manual_seed(0)
    net = build_model("wrn10_2", 10).eval()
    x = torch.randn(3, 3, 16, 16)
    block = net.layer2[0]
    recorder = BranchRatioRecorder(residual_blocks(net))
    recorder.attach()
    with torch.no_grad():
        net(x)
        inner = net.layer1(net.conv1(x))  # the block's input
        pre = torch.relu(block.bn1(inner))
        branch = block.conv2(torch.relu(block.bn2(block.conv1(pre))))
        shortcut = block.downsample(pre)
    ratios = recorder.ratios()
    recorder.detach()
    by_hand = (branch.flatten(1).norm(dim=1) / shortcut.flatten(1).norm(dim=1)).mean()
    assert ratios[1] == pytest.approx(float(by_hand), rel=1e-5)
    assert all(r is not None for r in ratios)


def test_pruning_sees_the_projections_as_shortcuts():
    net = build_model("wrn10_1", 10)
    kinds = {name: layer_kind(name, module) for name, module in prunable_layers(net)}
    assert [n for n, k in kinds.items() if k == "shortcut"] == ["layer2.0.downsample", "layer3.0.downsample"]
    pruned = prune_magnitude(net, 0.5, "layer")
    assert pruned == [round(0.5 * m.weight.numel()) for _, m in prunable_layers(net)]


def test_a_network_without_known_blocks_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="TinyNet has no residual or plain blocks"):
        residual_blocks(TinyNet(num_classes=10))
