"""Networks: the paper's exact parameter counts, shapes, plain twins and name errors."""

from __future__ import annotations

import pytest
import torch

from src.models import build_model, parse_arch
from src.models.complexity import count_parameters, parameters_by_kind

# He et al. (2015), Table 6, with 10 classes (option A shortcuts).
PAPER_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}
OPTION_B_EXTRA = 2_752  # two 1x1 projections + BN: (16*32 + 2*32) + (32*64 + 2*64)


@pytest.mark.parametrize("depth", PAPER_PARAMS)
def test_cifar_resnet_matches_paper_parameter_count(depth):
    assert count_parameters(build_model(f"resnet{depth}", num_classes=10)) == PAPER_PARAMS[depth]


@pytest.mark.parametrize("depth", PAPER_PARAMS)
def test_option_b_adds_exactly_the_projections(depth):
    model = build_model(f"resnet{depth}", num_classes=10, shortcut="B")
    assert count_parameters(model) == PAPER_PARAMS[depth] + OPTION_B_EXTRA
    assert parameters_by_kind(model)["shortcut_projection"] == OPTION_B_EXTRA


@pytest.mark.parametrize("depth", PAPER_PARAMS)
def test_plain_twin_has_identical_parameter_count_to_option_a(depth):
    # The article's claim that skips *reduce* parameters is wrong: identity shortcuts add none.
    assert count_parameters(build_model(f"plain{depth}", num_classes=10)) == PAPER_PARAMS[depth]


def test_plain_network_really_has_no_shortcut():
    plain, resnet = build_model("plain20", 10), build_model("resnet20", 10)
    plain.load_state_dict(resnet.state_dict())  # same parameters, name for name
    plain.eval(), resnet.eval()
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(plain(x), resnet(x))
    # Zeroing every block's second BN makes the residual branch output 0:
    # a ResNet then passes its (padded, subsampled) input through; a plain net outputs relu(0).
    for model in (plain, resnet):
        for name, module in model.named_modules():
            if name.endswith("bn2"):
                torch.nn.init.zeros_(module.weight)
                torch.nn.init.zeros_(module.bias)
    with torch.no_grad():
        assert torch.count_nonzero(plain.layer3(plain.layer2(plain.layer1(torch.rand(1, 16, 32, 32))))) == 0
        assert torch.count_nonzero(resnet.layer1(torch.rand(1, 16, 32, 32))) > 0


@pytest.mark.parametrize("num_classes", [10, 100])
def test_classes_change_only_the_head(num_classes):
    model = build_model("resnet20", num_classes=num_classes)
    assert count_parameters(model) == PAPER_PARAMS[20] - 650 + (64 + 1) * num_classes
    assert model(torch.randn(4, 3, 32, 32)).shape == (4, num_classes)


def test_option_a_output_shape_and_other_input_channels():
    model = build_model("resnet32", num_classes=7, in_channels=1)
    assert model(torch.randn(3, 1, 32, 32)).shape == (3, 7)
    assert model.conv1.weight.shape == (16, 1, 3, 3)


def test_dropout_and_max_pooling_add_no_parameters():
    base = count_parameters(build_model("resnet20", 10))
    model = build_model("resnet20", 10, dropout=0.5, pooling="max")
    assert count_parameters(model) == base
    assert isinstance(model.pool, torch.nn.AdaptiveMaxPool2d)
    assert model.dropout.p == 0.5


@pytest.mark.parametrize(
    "arch, expected",
    [
        ("resnet20", ("cifar", True, 20)),
        ("plain56", ("cifar", False, 56)),
        ("resnet18", ("imagenet", True, 18)),
        ("plain50", ("imagenet", False, 50)),
        ("cifar_resnet50", ("cifar", True, 50)),
        ("ResNet110", ("cifar", True, 110)),
    ],
)
def test_parse_arch(arch, expected):
    assert parse_arch(arch) == expected


@pytest.mark.parametrize("arch", ["resnet21", "resnet2", "plain9", "cifar_resnet18"])
def test_depth_that_is_not_6n_plus_2_is_rejected_with_valid_options(arch):
    with pytest.raises(ValueError, match=r"not 6n\+2") as error:
        build_model(arch, num_classes=10)
    assert arch in str(error.value) and "resnet20" in str(error.value) and "resnet18" in str(error.value)


@pytest.mark.parametrize("arch", ["vgg16", "densenet121", ""])
def test_unknown_architecture_lists_valid_names(arch):
    with pytest.raises(ValueError, match="Unknown architecture") as error:
        build_model(arch, num_classes=10)
    message = str(error.value)
    assert "resnet56" in message and "resnet152" in message and "plain" in message


@pytest.mark.parametrize(
    ("arch", "nearest"),
    [("resnt20", "resnet20"), ("plian56", "plain56"), ("wrn16-8", "wrn16_8"), ("resnet", "resnet56")],
)
def test_a_misspelt_architecture_gets_the_nearest_name_and_its_familys_forms(arch, nearest):
    with pytest.raises(ValueError) as error:
        build_model(arch, num_classes=10)
    message = str(error.value)
    assert f"did you mean {nearest!r}?" in message and "docs/models.md" in message and len(message) < 450


def test_a_class_path_given_as_architecture_says_where_it_goes():
    with pytest.raises(ValueError) as error:
        build_model("myfork.models.SmallCNN", num_classes=10)
    assert "a class path, not a name: give it as model.net_class" in str(error.value)


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="shortcut must be 'A'"):
        build_model("resnet20", 10, shortcut="C")
    with pytest.raises(ValueError, match="option B"):
        build_model("resnet18", 10, shortcut="A")
    with pytest.raises(ValueError, match="pooling"):
        build_model("resnet20", 10, pooling="median")
    with pytest.raises(ValueError, match="num_classes"):
        build_model("resnet20", 0)
