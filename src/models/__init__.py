"""Networks: plain ``nn.Module``s that know nothing of Lightning.

``build_model`` is the one entry point the rest of the project uses; names are read by
``src.models.names.arch_spec`` (the grammar is in its docstring): ``resnet20``, ``plain56``,
``resnet20_4`` (CIFAR, 4x wider), ``resnet50`` (ImageNet), ...

A fork's own network needs no name: ``model.net: {class_path: ..., init_args: ...}`` in the config
builds any ``nn.Module`` (``src.models.plugin``). To add a named family, write its file beside these,
add its form to ``names.py`` and a branch to ``build_model``.
"""

from __future__ import annotations

from torch import nn

from src.models.cifar_resnet import CifarResNet, cifar_resnet
from src.models.imagenet_resnet import ImageNetResNet, imagenet_resnet
from src.models.names import IMAGENET_DEPTHS, VALID_FORMS, ArchSpec, arch_spec
from src.models.preact_resnet import PreActResNet, preact_resnet, wide_resnet

__all__ = [
    "VALID_FORMS",
    "ArchSpec",
    "CifarResNet",
    "ImageNetResNet",
    "PreActResNet",
    "arch_spec",
    "build_model",
    "example_archs",
    "parse_arch",
]

_CIFAR_LADDER = (20, 32, 44, 56, 110, 1202)


def parse_arch(arch: str) -> tuple[str, bool, int]:
    """``(family, residual, depth)`` of a name (``arch_spec`` has the width and block kind too)."""
    spec = arch_spec(arch)
    return spec.family, spec.residual, spec.depth


def build_model(
    arch: str,
    num_classes: int,
    in_channels: int = 3,
    *,
    shortcut: str | None = None,
    dropout: float = 0.0,
    pooling: str = "avg",
    block_dropout: float = 0.0,
) -> nn.Module:
    """Build a network by name (see ``src.models.names`` for the names).

    ``shortcut`` is the CIFAR shortcut option, ``"A"`` (default, parameter-free) or ``"B"``
    (1x1 projection). ImageNet, Wide and pre-activation ResNets always use B (projections where
    the shape changes), as their papers do; plain networks have no shortcut, so for them the
    option does not apply and is ignored. ``dropout`` is before the linear head (every family);
    ``block_dropout`` between the two convolutions of a basic pre-activation block (the WRN
    paper's dropout), for ``wrn`` and basic ``preact`` nets only.
    """
    spec = arch_spec(arch)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if block_dropout and (spec.family not in ("wrn", "preact") or spec.block != "basic"):
        raise ValueError(
            f"block_dropout (dropout between a block's two 3x3 convolutions, the WRN paper's) applies to wrn and basic "
            f"preact nets, not to {arch}; dropout before the head is 'dropout'"
        )
    head = dict(num_classes=num_classes, in_channels=in_channels, dropout=dropout, pooling=pooling)
    if spec.family != "cifar" and shortcut not in (None, "B") and spec.residual:
        raise ValueError(f"{arch} uses projection shortcuts where shapes change (option B); got shortcut={shortcut!r}")
    if spec.family == "imagenet":
        return imagenet_resnet(spec.depth, residual=spec.residual, width=spec.width, **head)
    if spec.family == "cifar":
        return cifar_resnet(spec.depth, residual=spec.residual, shortcut=shortcut or "A", width=spec.width, **head)
    if spec.family == "wrn":
        return wide_resnet(spec.depth, spec.width, residual=spec.residual, block_dropout=block_dropout, **head)
    return preact_resnet(spec.depth, spec.block == "bottleneck", block_dropout=block_dropout, **head)


def example_archs() -> list[str]:
    """The architectures of the papers' tables, in the order the README lists them.

    He et al. (2015): the CIFAR ladder and the ImageNet nets, each with its plain twin; the CIFAR net
    widened (``resnet20_2``, ``resnet20_4``); the Wide ResNets of Zagoruyko & Komodakis (2016) with
    their plain twins; the pre-activation ResNets of He et al. (2016); torchvision's wide ImageNet nets.
    """
    cifar = [f"{kind}{d}" for d in _CIFAR_LADDER for kind in ("resnet", "plain")]
    imagenet = [f"{kind}{d}" for d in IMAGENET_DEPTHS for kind in ("resnet", "plain")]
    widened = ["resnet20_2", "resnet20_4"]
    wrn = [f"{kind}{d}_{k}" for d, k in ((16, 4), (16, 8), (28, 10), (40, 4)) for kind in ("wrn", "plain_wrn")]
    preact = ["preact_resnet110", "preact_resnet164", "preact_resnet1001"]
    wide_imagenet = [f"wide_{kind}{d}_2" for d in (50, 101) for kind in ("resnet", "plain")]
    return cifar + imagenet + widened + wrn + preact + wide_imagenet
