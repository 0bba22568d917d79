"""ImageNet ResNets 18-152 (He et al., 2015) from torchvision, plus plain twins.

The residual networks *are* torchvision's (same classes, same parameter names), so a
torchvision ``state_dict`` -- pretrained weights included -- loads strictly and gives
identical outputs. This file only adds what the studies need on top:

* ``in_channels`` other than 3 (a new stem convolution),
* the head options shared with the CIFAR networks (dropout before the head, avg/max pooling),
* plain blocks: the same layers with the shortcut, and its 1x1 projection, removed;
* ``width=k``: torchvision's wide ResNets (``wide_resnet50_2`` is ResNet-50 with ``k = 2``): the
  bottleneck's inner width is ``64k`` per stage unit instead of 64, its output width unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchvision.models import resnet as tv

from src.models.names import ArchSpec, Family, NameParts, refuse_block_dropout, refuse_shortcut_option, register

Pooling = Literal["avg", "max"]

# depth -> (block kind, blocks per stage), as in torchvision and Table 1 of the paper.
IMAGENET_LAYOUTS: dict[int, tuple[str, list[int]]] = {
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
    152: ("bottleneck", [3, 8, 36, 3]),
}


class PlainBasicBlock(tv.BasicBlock):
    """torchvision's basic block without the shortcut (and without its projection)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.downsample = None

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)))


class PlainBottleneck(tv.Bottleneck):
    """torchvision's bottleneck block without the shortcut (and without its projection)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.downsample = None

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)))


class ImageNetResNet(tv.ResNet):
    """torchvision's ``ResNet`` with the head options used across this project."""

    def __init__(
        self,
        block: type[tv.BasicBlock | tv.Bottleneck],
        layers: list[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float = 0.0,
        pooling: Pooling = "avg",
        width: int = 1,
    ) -> None:
        super().__init__(block, layers, num_classes=num_classes, width_per_group=64 * width)
        if pooling not in ("avg", "max"):
            raise ValueError(f"pooling must be 'avg' or 'max', got {pooling!r}")
        if in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        if pooling == "max":
            self.avgpool = nn.AdaptiveMaxPool2d(1)  # keeps torchvision's attribute name: no parameters
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def _forward_impl(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(self.dropout(x))


def imagenet_resnet(depth: int, residual: bool = True, width: int = 1, **kwargs: Any) -> ImageNetResNet:
    """Build ResNet-``depth`` (18, 34, 50, 101 or 152), or its plain twin when not ``residual``.

    ``width=k`` widens the bottleneck nets as torchvision's ``wide_resnet<d>_<k>`` (not defined for 18/34).
    """
    if depth not in IMAGENET_LAYOUTS:
        raise ValueError(f"ImageNet ResNet depth must be one of {sorted(IMAGENET_LAYOUTS)}, got {depth}")
    kind, layers = IMAGENET_LAYOUTS[depth]
    if width != 1 and kind != "bottleneck":
        raise ValueError(f"torchvision widens only the bottleneck ResNets (50, 101, 152), not ResNet-{depth}")
    if kind == "basic":
        block = tv.BasicBlock if residual else PlainBasicBlock
    else:
        block = tv.Bottleneck if residual else PlainBottleneck
    return ImageNetResNet(block, layers, width=width, **kwargs)


# ---------------------------------------------------------------------------------------------- the family
BOTTLENECK_DEPTHS = tuple(depth for depth, (kind, _) in IMAGENET_LAYOUTS.items() if kind == "bottleneck")


def _parse(parts: NameParts) -> ArchSpec | None:
    """``resnet<d>`` / ``plain<d>`` at an ImageNet depth; ``wide_resnet<d>_<k>`` / ``wide_plain<d>_<k>``."""
    residual = parts.kind == "resnet"
    if parts.prefix == "wide_":
        if parts.depth not in BOTTLENECK_DEPTHS:
            raise parts.error(f"wide ImageNet ResNets are bottleneck nets: depth in {list(BOTTLENECK_DEPTHS)}")
        if parts.width is None:
            raise parts.error("a wide ImageNet ResNet needs its width: wide_resnet<d>_<k>, e.g. wide_resnet50_2")
        return ArchSpec(parts.name, "imagenet", residual, parts.depth, parts.width, "bottleneck", parts.stem)
    if parts.depth not in IMAGENET_LAYOUTS:
        return None  # a CIFAR depth
    if parts.width is not None:
        raise parts.error(
            f"ImageNet ResNet-{parts.depth} has no width suffix; torchvision's wide nets are wide_resnet<d>_<k>, "
            f"the CIFAR net of that depth is cifar_{parts.kind}{parts.depth}_{parts.width}"
        )
    return ArchSpec(parts.name, "imagenet", residual, parts.depth, 1, IMAGENET_LAYOUTS[parts.depth][0], parts.stem)


def _build(spec: ArchSpec, shortcut: str | None, block_dropout: float, **head: Any) -> nn.Module:
    refuse_block_dropout(spec, block_dropout)
    refuse_shortcut_option(spec, shortcut)
    return imagenet_resnet(spec.depth, residual=spec.residual, width=spec.width, **head)


IMAGENET = register(
    Family(
        name="imagenet",
        stems=("resnet", "plain", "wide_resnet", "wide_plain"),
        parse=_parse,
        build=_build,
        forms=(
            "resnet<d>|plain<d> (ImageNet d in 18, 34, 50, 101, 152: resnet18, resnet152); "
            "wide_resnet<d>_<k>|wide_plain<d>_<k> (torchvision's wide ImageNet nets, d in 50, 101, 152: "
            "wide_resnet50_2)"
        ),
        examples=(
            *(f"{kind}{d}" for d in IMAGENET_LAYOUTS for kind in ("resnet", "plain")),
            *(f"wide_{kind}{d}_2" for d in (50, 101) for kind in ("resnet", "plain")),
        ),
        input_size=224,
        no_width="the ImageNet nets take no width multiplier (torchvision's wide ones are wide_resnet<d>_<k>)",
        block_types=(tv.BasicBlock, tv.Bottleneck),  # the plain blocks subclass them
        order=20,
    )
)
