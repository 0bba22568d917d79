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


# ---------------------------------------------------------------------------------------------- the papers' counts
def preact_params(block: str, n: int, planes: tuple[int, ...], classes: int = 10, residual: bool = True) -> dict:
    """Pre-activation nets by hand: stem conv 3->16 (no BN); per block BN before every conv; a 1x1 projection
    (no BN) where the shape changes (residual only); final BN; linear head. Returns conv/linear weights and BN."""
    expansion = 4 if block == "bottleneck" else 1
    weights, bn, previous = 3 * 16 * 9 + 0, 0, 16
    for stage, width in enumerate(planes):
        for position in range(n):
            out = width * expansion
            if block == "basic":
                weights += previous * width * 9 + width * width * 9
                bn += 2 * previous + 2 * width
            else:
                weights += previous * width + width * width * 9 + width * out
                bn += 2 * previous + 4 * width
            if residual and (previous != out or (stage > 0 and position == 0)):
                weights += previous * out
            previous = out
    return {"weights": weights + previous * classes + classes, "bn": bn + 2 * previous}


def wrn_params(depth: int, k: int, residual: bool = True) -> dict:
    return preact_params("basic", (depth - 4) // 6, (16 * k, 32 * k, 64 * k), residual=residual)


# name -> (by-hand count, the exact count, the paper's figure in millions, its source)
PAPER_COUNTS = {
    "wrn28_10": (wrn_params(28, 10), 36_479_194, 36.5, "Zagoruyko & Komodakis 2016, Table 4"),
    "wrn16_8": (wrn_params(16, 8), 10_961_370, 11.0, "Zagoruyko & Komodakis 2016, Table 4"),
    "wrn40_4": (wrn_params(40, 4), 8_949_210, 8.9, "Zagoruyko & Komodakis 2016, Table 4"),
    "preact_resnet110": (preact_params("basic", 18, (16, 32, 64)), 1_730_522, 1.7, "He et al. 2016, Table 3"),
    "preact_resnet164": (preact_params("bottleneck", 18, (16, 32, 64)), 1_703_258, 1.7, "He et al. 2016, Table 3"),
    "preact_resnet1001": (preact_params("bottleneck", 111, (16, 32, 64)), 10_327_706, 10.2, "He et al. 2016, Table 3"),
}


@pytest.mark.parametrize("arch", list(PAPER_COUNTS))
def test_parameter_counts_match_the_papers(arch):
    by_hand, exact, paper_millions, _ = PAPER_COUNTS[arch]
    net = build_model(arch, 10)
    norm = sum(p.numel() for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters())
    assert count_parameters(net) == by_hand["weights"] + by_hand["bn"] == exact
    assert norm == by_hand["bn"]
    if arch != "preact_resnet1001":
        assert round(count_parameters(net) / 1e6, 1) == paper_millions
    else:
        # He et al.'s 10.2M is the count without BN's scale and shift (10,178,490); with them, as counted for every
        # other figure here (and by He et al. 2015 for ResNet-1202's 19.4M), the same network has 10,327,706.
        # The architecture is that of the authors' code (KaimingHe/resnet-1k-layers): 111 bottlenecks per stage.
        assert round((count_parameters(net) - norm) / 1e6, 1) == paper_millions


@pytest.mark.parametrize("arch", ["wrn16_4", "wrn10_1"])
def test_plain_wrn_is_the_wrn_minus_its_projections(arch):
    resnet, plain = build_model(arch, 10), build_model(f"plain_{arch}", 10)
    projections = parameters_by_kind(resnet)["shortcut_projection"]
    depth, k = (int(part) for part in arch[3:].split("_"))
    assert projections == (16 * 16 * k if k != 1 else 0) + 16 * k * 32 * k + 32 * k * 64 * k
    by_hand = sum(wrn_params(depth, k, residual=False).values())
    assert count_parameters(plain) == count_parameters(resnet) - projections == by_hand
    resnet_shapes = {key: value.shape for key, value in resnet.state_dict().items()}
    assert all(resnet_shapes[key] == value.shape for key, value in plain.state_dict().items())


def test_plain_wrn_has_no_shortcut_and_the_wrn_does():
    plain, resnet = build_model("plain_wrn10_1", 10).eval(), build_model("wrn10_1", 10).eval()
    for net in (plain, resnet):  # zero each branch's last conv: F(x) = 0
        for block in (net.layer1[0], net.layer2[0], net.layer3[0]):
            torch.nn.init.zeros_(block.conv2.weight)
    x = torch.rand(1, 16, 8, 8)
    with torch.no_grad():
        assert torch.equal(resnet.layer1(x), x)  # identity shortcut, no ReLU after the sum
        assert torch.count_nonzero(plain.layer1(x)) == 0


def test_block_dropout_sits_between_the_convolutions_and_only_in_basic_pre_activation_blocks():
    net = build_model("wrn16_2", 10, block_dropout=0.3)
    assert net.layer2[1].dropout.p == 0.3 and count_parameters(net) == sum(wrn_params(16, 2).values())
    for arch in ("resnet20", "preact_resnet164", "resnet50"):
        with pytest.raises(ValueError, match="block_dropout"):
            build_model(arch, 10, block_dropout=0.3)
    with pytest.raises(ValueError, match="option B"):
        build_model("wrn16_4", 10, shortcut="A")


# ---------------------------------------------------------------------------------------------- torchvision's wide nets
@pytest.mark.parametrize("arch", ["wide_resnet50_2", "wide_resnet101_2"])
def test_torchvision_wide_resnet_weights_load_strictly(arch):
    from torchvision import models as tv_models

    reference = getattr(tv_models, arch)(weights=None).eval()
    ours = build_model(arch, num_classes=1000).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    assert (
        count_parameters(ours)
        == count_parameters(reference)
        == {"wide_resnet50_2": 68_883_240, "wide_resnet101_2": 126_886_696}[arch]
    )
    if arch == "wide_resnet50_2":
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            assert torch.equal(ours(x), reference(x))


def test_wide_imagenet_plain_twin_is_the_wide_resnet_minus_its_projections():
    with torch.device("meta"):
        resnet, plain = build_model("wide_resnet50_2", 1000), build_model("wide_plain50_2", 1000)
    projections = parameters_by_kind(resnet)["shortcut_projection"]
    assert count_parameters(plain) == count_parameters(resnet) - projections and projections > 0


# ---------------------------------------------------------------------------------------------- one grammar
@pytest.mark.parametrize(
    "name, family, residual, depth, width, block, line",
    [
        ("resnet20", "cifar", True, 20, 1, "basic", "resnet"),
        ("resnet20_1", "cifar", True, 20, 1, "basic", "resnet"),
        ("plain56_4", "cifar", False, 56, 4, "basic", "plain_4"),
        ("cifar_resnet50_2", "cifar", True, 50, 2, "basic", "cifar_resnet_2"),
        ("resnet50", "imagenet", True, 50, 1, "bottleneck", "resnet"),
        ("wrn28_10", "wrn", True, 28, 10, "basic", "wrn_10"),
        ("plain_wrn16_8", "wrn", False, 16, 8, "basic", "plain_wrn_8"),
        ("preact_resnet110", "preact", True, 110, 1, "basic", "preact_resnet"),
        ("preact_resnet164", "preact", True, 164, 1, "bottleneck", "preact_resnet-bottleneck"),
        ("preact_resnet1001", "preact", True, 1001, 1, "bottleneck", "preact_resnet-bottleneck"),
        ("preact_resnet11", "preact", True, 11, 1, "bottleneck", "preact_resnet-bottleneck"),
        ("preact_resnet20", "preact", True, 20, 1, "basic", "preact_resnet"),
        ("wide_resnet101_2", "imagenet", True, 101, 2, "bottleneck", "wide_resnet_2"),
        ("wide_plain50_2", "imagenet", False, 50, 2, "bottleneck", "wide_plain_2"),
    ],
)
def test_one_grammar_says_depth_width_block_and_residual(name, family, residual, depth, width, block, line):
    spec = arch_spec(name)
    assert (spec.family, spec.residual, spec.depth, spec.width, spec.block, spec.line) == (
        family, residual, depth, width, block, line,
    )  # fmt: skip


@pytest.mark.parametrize(
    "name, reason",
    [
        ("wrn17_4", "WRN depth 17 is not 6n+4"),
        ("wrn16", "needs its width"),
        ("resnet20_0", "width 0"),
        ("wrn16_0", "width 0"),
        ("preact_plain110", "no plain twin"),
        ("preact_resnet110_2", "takes no width"),
        ("preact_resnet30", "neither 6n+2"),
        ("resnet50_2", "wide_resnet<d>_<k>"),
        ("wide_resnet18_2", "bottleneck nets"),
        ("plain_resnet20", "'plain_' prefix"),
        ("cifar_wrn16_4", "does not combine with wrn"),
    ],
)
def test_bad_names_say_why_and_list_every_valid_form(name, reason):
    with pytest.raises(ValueError) as error:
        build_model(name, 10)
    message = str(error.value)
    assert reason in message and "\n" not in message
    assert all(form in message for form in ("resnet<d>_<k>", "wrn<d>_<k>", "preact_resnet<d>", "wide_resnet<d>_<k>"))
