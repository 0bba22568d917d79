"""Networks: plain ``nn.Module``s that know nothing of Lightning.

``build_model`` is the one entry point the rest of the project uses; names are read by
``src.models.names.arch_spec`` (the grammar is in its docstring): ``resnet20``, ``plain56``,
``resnet20_4`` (CIFAR, 4x wider), ``resnet50`` (ImageNet), ...

A fork's own network needs no name: ``model.net_class`` in the config builds any ``nn.Module``
(``src.models.plugin``). A named family is one file that registers a ``Family`` (``src.models.names``);
the built-in ones register themselves in their model files, imported here.
"""

from __future__ import annotations

from torch import nn

from src.models.cifar_resnet import CifarResNet
from src.models.imagenet_resnet import ImageNetResNet
from src.models.names import ArchSpec, Family, arch_spec, families, family, register, valid_forms
from src.models.preact_resnet import PreActResNet

__all__ = [
    "ArchSpec",
    "CifarResNet",
    "Family",
    "ImageNetResNet",
    "PreActResNet",
    "arch_spec",
    "build_model",
    "example_archs",
    "families",
    "family",
    "parse_arch",
    "register",
    "valid_forms",
]


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
    """Build a network by name (see ``src.models.names`` for the names), through its family's builder.

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
    return family(spec.family).build(
        spec,
        shortcut=shortcut,
        block_dropout=block_dropout,
        num_classes=num_classes,
        in_channels=in_channels,
        dropout=dropout,
        pooling=pooling,
    )


def example_archs() -> list[str]:
    """The architectures of the papers' tables, family by family (each family's ``examples``).

    He et al. (2015): the CIFAR ladder with its plain twins and the CIFAR net widened; the ImageNet nets and
    torchvision's wide ones; the Wide ResNets of Zagoruyko & Komodakis (2016) with their plain twins; the
    pre-activation ResNets of He et al. (2016); then a fork's registered families.
    """
    return [name for registered in families() for name in registered.examples]
