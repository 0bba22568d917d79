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

__all__ = [
    "VALID_FORMS",
    "ArchSpec",
    "CifarResNet",
    "ImageNetResNet",
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
) -> nn.Module:
    """Build a network by name (see the module docstring for the names).

    ``shortcut`` is the CIFAR shortcut option, ``"A"`` (default, parameter-free) or ``"B"``
    (1x1 projection). ImageNet ResNets always use B, as in torchvision; plain networks have no
    shortcut, so for them the option does not apply and is ignored.
    """
    spec = arch_spec(arch)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    head = dict(num_classes=num_classes, in_channels=in_channels, dropout=dropout, pooling=pooling)
    if spec.family == "imagenet":
        if shortcut not in (None, "B"):
            raise ValueError(f"{arch} uses torchvision's projection shortcuts (option B); got shortcut={shortcut!r}")
        return imagenet_resnet(spec.depth, residual=spec.residual, **head)
    if spec.family == "cifar":
        return cifar_resnet(spec.depth, residual=spec.residual, shortcut=shortcut or "A", width=spec.width, **head)
    raise ValueError(f"{arch}: the {spec.family} family is not built yet")


def example_archs() -> list[str]:
    """The architectures of the paper's tables, in the order the README lists them."""
    cifar = [f"{kind}{d}" for d in _CIFAR_LADDER for kind in ("resnet", "plain")]
    imagenet = [f"{kind}{d}" for d in IMAGENET_DEPTHS for kind in ("resnet", "plain")]
    return cifar + imagenet
