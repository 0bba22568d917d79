"""Networks: plain ``nn.Module``s that know nothing of Lightning.

``build_model`` is the one entry point the rest of the project uses. Architecture names:

* ``resnet<d>`` / ``plain<d>`` with ``d`` in 18, 34, 50, 101, 152: the ImageNet networks
  (torchvision's definitions; option B projection shortcuts, as in the paper).
* ``resnet<d>`` / ``plain<d>`` with any other ``d = 6n + 2`` (20, 32, 44, 56, 110, 1202, ...):
  the CIFAR networks of He et al. section 4.2 (option A shortcuts unless ``shortcut="B"``).
* ``cifar_resnet<d>`` / ``cifar_plain<d>``: always the CIFAR network, which is how to reach
  the two CIFAR depths that share a name with an ImageNet one (50 and 152).

To add a family, write its file beside these and add a branch to ``build_model``.
"""

from __future__ import annotations

import re

from torch import nn

from src.models.cifar_resnet import CifarResNet, cifar_resnet
from src.models.imagenet_resnet import IMAGENET_LAYOUTS, ImageNetResNet, imagenet_resnet

__all__ = ["CifarResNet", "ImageNetResNet", "build_model", "example_archs", "parse_arch"]

_ARCH_PATTERN = re.compile(r"^(?P<family>cifar_)?(?P<kind>resnet|plain)(?P<depth>\d+)$")
_CIFAR_LADDER = (20, 32, 44, 56, 110, 1202)


def _valid_names_message() -> str:
    imagenet = ", ".join(f"resnet{d}" for d in IMAGENET_LAYOUTS)
    cifar = ", ".join(f"resnet{d}" for d in _CIFAR_LADDER)
    return (
        f"valid: ImageNet {imagenet}; CIFAR resnet<6n+2> such as {cifar}; "
        "the prefix 'plain' instead of 'resnet' for the no-skip twin (plain20, plain18, ...); "
        "'cifar_resnet<6n+2>' / 'cifar_plain<6n+2>' to force the CIFAR network"
    )


def parse_arch(arch: str) -> tuple[str, bool, int]:
    """Split an architecture name into ``(family, residual, depth)``; family is 'cifar' or 'imagenet'."""
    match = _ARCH_PATTERN.match(arch.strip().lower()) if isinstance(arch, str) else None
    if match is None:
        raise ValueError(f"Unknown architecture {arch!r}; {_valid_names_message()}")
    depth = int(match["depth"])
    residual = match["kind"] == "resnet"
    if not match["family"] and depth in IMAGENET_LAYOUTS:
        return "imagenet", residual, depth
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"Unknown architecture {arch!r}: CIFAR depth {depth} is not 6n+2 (n >= 1), "
            f"and ImageNet depths are {sorted(IMAGENET_LAYOUTS)}; {_valid_names_message()}"
        )
    return "cifar", residual, depth


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
    family, residual, depth = parse_arch(arch)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    head = dict(num_classes=num_classes, in_channels=in_channels, dropout=dropout, pooling=pooling)
    if family == "imagenet":
        if shortcut not in (None, "B"):
            raise ValueError(f"{arch} uses torchvision's projection shortcuts (option B); got shortcut={shortcut!r}")
        return imagenet_resnet(depth, residual=residual, **head)
    return cifar_resnet(depth, residual=residual, shortcut=shortcut or "A", **head)


def example_archs() -> list[str]:
    """The architectures of the paper's tables, in the order the README lists them."""
    cifar = [f"{kind}{d}" for d in _CIFAR_LADDER for kind in ("resnet", "plain")]
    imagenet = [f"{kind}{d}" for d in IMAGENET_LAYOUTS for kind in ("resnet", "plain")]
    return cifar + imagenet
