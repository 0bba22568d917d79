"""Width and the families (issue 18): width multiplier, Wide ResNets, pre-activation ResNets, wide ImageNet nets.

Parameter counts are checked against closed-form counts written here from each paper's architecture
(not against the model's own counter), and against the papers' rounded figures.
"""

from __future__ import annotations

import pytest
import torch

from src.models import arch_spec, build_model
from src.models.complexity import count_parameters, parameters_by_kind

# ---------------------------------------------------------------------------------------------- k = 1 is today's net
# Recorded from the networks as they were before the width multiplier existed (commit 3740f99): built after
# torch.manual_seed(0), eval mode, input torch.randn(2, 3, 32, 32) after torch.manual_seed(1).
# (sha256 of "name:shape;..." [:16], sum of |parameters|, first four logits of sample 0, sum of all logits)
BEFORE_WIDTH = {
    ("resnet20", "A"): (
        "25e2762df0032b0f", 14966.065133790002, [0.9116150140762329, -1.6423966884613037, -0.9073572158813477,
        -0.5717527270317078], 2.4421560168266296,
    ),
    ("resnet20", "B"): (
        "71ddaa04ffd66630", 15448.950250729808, [0.8760032653808594, 1.4688056707382202, -3.645554304122925,
        0.24756978452205658], -8.399982750415802,
    ),
    ("plain20", "A"): (
        "25e2762df0032b0f", 14966.065133790002, [0.10903637111186981, -0.08447420597076416, 0.09897517412900925,
        0.040343135595321655], -0.12985569797456264,
    ),
}  # fmt: skip


def fingerprint(arch: str, shortcut: str) -> tuple[str, float, list[float], float]:
    import hashlib

    torch.manual_seed(0)
    net = build_model(arch, 10, shortcut=shortcut).eval()
    layout = ";".join(f"{k}:{tuple(v.shape)}" for k, v in net.state_dict().items())
    with torch.no_grad():
        abs_sum = sum(float(p.double().abs().sum()) for p in net.parameters())
        torch.manual_seed(1)
        out = net(torch.randn(2, 3, 32, 32))
    return hashlib.sha256(layout.encode()).hexdigest()[:16], abs_sum, out[0, :4].tolist(), float(out.double().sum())


@pytest.mark.parametrize("arch, shortcut", list(BEFORE_WIDTH))
@pytest.mark.parametrize("suffix", ["", "_1"])
def test_width_one_is_todays_network_bit_for_bit(arch, shortcut, suffix):
    layout, abs_sum, logits, total = fingerprint(arch + suffix, shortcut)
    want_layout, want_sum, want_logits, want_total = BEFORE_WIDTH[(arch, shortcut)]
    assert layout == want_layout  # same parameter and buffer names, same shapes, same order
    assert abs_sum == pytest.approx(want_sum, rel=1e-12)  # same random draws, in the same order
    assert logits == pytest.approx(want_logits, abs=1e-5) and total == pytest.approx(want_total, abs=1e-4)


def cifar_resnet_params(depth: int, k: int, classes: int = 10, shortcut: str = "A") -> int:
    """He et al.'s CIFAR ResNet, widths 16k/32k/64k (stem 16k), BN with weight and bias, linear head."""
    n, widths = (depth - 2) // 6, [16 * k, 32 * k, 64 * k]
    total = 3 * widths[0] * 9 + 2 * widths[0]  # stem conv + BN
    previous = widths[0]
    for width in widths:
        for _ in range(n):
            total += previous * width * 9 + width * width * 9 + 4 * width
            if shortcut == "B" and previous != width:
                total += previous * width + 2 * width
            previous = width
    return total + widths[-1] * classes + classes


@pytest.mark.parametrize("depth, k", [(20, 1), (20, 2), (20, 4), (56, 1), (8, 3), (110, 2)])
def test_width_multiplier_parameter_counts(depth, k):
    assert count_parameters(build_model(f"resnet{depth}_{k}", 10)) == cifar_resnet_params(depth, k)
    assert count_parameters(build_model(f"plain{depth}_{k}", 10)) == cifar_resnet_params(depth, k)
    wide_b = build_model(f"resnet{depth}_{k}", 10, shortcut="B")
    assert count_parameters(wide_b) == cifar_resnet_params(depth, k, shortcut="B")
    assert parameters_by_kind(wide_b)["shortcut_projection"] == (16 * 32 + 32 * 64) * k * k + (2 * 32 + 2 * 64) * k


def test_width_multiplier_widens_every_stage_and_keeps_names():
    narrow, wide = build_model("resnet20", 10), build_model("resnet20_4", 10)
    assert list(narrow.state_dict()) == list(wide.state_dict())
    assert [wide.conv1.out_channels, wide.layer1[0].conv2.out_channels, wide.layer2[0].conv2.out_channels,
            wide.layer3[0].conv2.out_channels, wide.fc.in_features] == [64, 64, 128, 256, 256]  # fmt: skip
    assert wide(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert arch_spec("resnet20_4").width == 4 and arch_spec("cifar_plain50_2").family == "cifar"
