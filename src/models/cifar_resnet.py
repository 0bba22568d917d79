"""CIFAR ResNets of He et al. (2015), section 4.2, and their plain (no-skip) twins.

The network is a 3x3 stem convolution with 16 filters, three stages of ``n`` basic blocks
with 16, 32 and 64 filters (the first block of stages two and three halves the feature
map), global pooling and a linear head: ``6n + 2`` weighted layers in all.

Where a block changes shape the identity shortcut cannot be added as is. The paper gives
two options, both here:

* **A** subsamples the input and zero-pads the new channels. It has *no* parameters, so
  a ResNet and its plain twin have exactly the same parameter count.
* **B** uses a 1x1 convolution + batch norm projection (2,752 extra parameters in all).

``residual=False`` removes the shortcut from every block and nothing else, which is the
paper's "plain" baseline.

``width=k`` multiplies every width by ``k`` (stem and stages ``16k / 32k / 64k``; the stem is as
wide as stage 1 so the first stage keeps identity shortcuts, as at ``k = 1``): the width axis of
a width x depth study. ``k = 1`` builds exactly the paper's network -- same modules, same
parameter names, same random draws in the same order.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.models.imagenet_resnet import IMAGENET_LAYOUTS
from src.models.names import ArchSpec, Family, NameParts, refuse_block_dropout, register

Shortcut = Literal["A", "B"]
Pooling = Literal["avg", "max"]

STAGE_WIDTHS = (16, 32, 64)


class PadShortcut(nn.Module):
    """Option A: parameter-free shortcut that subsamples and zero-pads channels."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = out_planes - in_planes

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        # Pad (W_left, W_right, H_top, H_bottom, C_front, C_back): new channels are zeros.
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers; adds the shortcut before the last ReLU when ``residual``."""

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, shortcut: Shortcut = "A", residual: bool = True
    ) -> None:
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)

        # Named ``downsample`` like torchvision's blocks, so tools that look for shortcut
        # projections (the efficiency callback, pruning) see one convention.
        self.downsample: nn.Module | None = None
        if residual and (stride != 1 or in_planes != planes):
            if shortcut == "A":
                self.downsample = PadShortcut(in_planes, planes, stride)
            else:
                self.downsample = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
                )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


def msra_init(net: nn.Module) -> None:
    """He et al.'s "MSRA" initialisation (He et al., 2015b): convolutions ``kaiming_normal_`` (fan out),
    batch norm scale 1 and shift 0; shared by every CIFAR-sized family."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class CifarResNet(nn.Module):
    """ResNet (or plain net) of depth ``6 * blocks_per_stage + 2`` and width ``k`` for small images."""

    def __init__(
        self,
        blocks_per_stage: int,
        num_classes: int = 10,
        in_channels: int = 3,
        shortcut: Shortcut = "A",
        residual: bool = True,
        dropout: float = 0.0,
        pooling: Pooling = "avg",
        width: int = 1,
    ) -> None:
        super().__init__()
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ValueError(f"width must be an integer >= 1 (stage widths 16k/32k/64k), got {width!r}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' (zero-padding) or 'B' (projection), got {shortcut!r}")
        if pooling not in ("avg", "max"):
            raise ValueError(f"pooling must be 'avg' or 'max', got {pooling!r}")
        self.depth = 6 * blocks_per_stage + 2
        self.width = width
        widths = [planes * width for planes in STAGE_WIDTHS]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)

        in_planes = widths[0]
        stages = []
        for index, planes in enumerate(widths):
            stride = 1 if index == 0 else 2
            blocks = []
            for block_index in range(blocks_per_stage):
                blocks.append(BasicBlock(in_planes, planes, stride if block_index == 0 else 1, shortcut, residual))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages

        self.pool = nn.AdaptiveAvgPool2d(1) if pooling == "avg" else nn.AdaptiveMaxPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(widths[-1], num_classes)
        msra_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.pool(x), 1)
        return self.fc(self.dropout(x))


def cifar_resnet(depth: int, residual: bool = True, **kwargs: Any) -> CifarResNet:
    """Build the CIFAR network of ``depth`` layers (``6n + 2``); ``width=k`` in kwargs widens it k times."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, 1202, ...), got {depth}"
        )
    return CifarResNet((depth - 2) // 6, residual=residual, **kwargs)


# ---------------------------------------------------------------------------------------------- the family
def _parse(parts: NameParts) -> ArchSpec | None:
    """``resnet<d>`` / ``plain<d>`` (``d = 6n + 2``, not an ImageNet depth), ``[cifar_]...[_<k>]``."""
    if parts.prefix == "" and parts.depth in IMAGENET_LAYOUTS:
        return None  # resnet50 is the ImageNet net; cifar_resnet50 is this one
    if parts.depth < 8 or (parts.depth - 2) % 6:
        raise parts.error(
            f"CIFAR depth {parts.depth} is not 6n+2 (n >= 1), and ImageNet depths are {list(IMAGENET_LAYOUTS)}"
        )
    return ArchSpec(parts.name, "cifar", parts.kind == "resnet", parts.depth, parts.width or 1, stem=parts.stem)


def _build(spec: ArchSpec, shortcut: str | None, block_dropout: float, **head: Any) -> nn.Module:
    refuse_block_dropout(spec, block_dropout)
    return cifar_resnet(spec.depth, residual=spec.residual, shortcut=shortcut or "A", width=spec.width, **head)


def _widen(spec: ArchSpec, width: int) -> str:
    if spec.name != f"{spec.stem}{spec.depth}":
        raise ValueError(
            f"{spec.name!r} already names its width: list {spec.stem + str(spec.depth)!r} under 'archs' and the "
            "widths under 'widths'"
        )
    return spec.name if width == 1 else f"{spec.name}_{width}"


CIFAR = register(
    Family(
        name="cifar",
        stems=("resnet", "plain", "cifar_resnet", "cifar_plain"),
        parse=_parse,
        build=_build,
        forms=(
            "resnet<d>|plain<d> (CIFAR d = 6n+2: resnet20, resnet56, resnet110, resnet1202); "
            "resnet<d>_<k>|plain<d>_<k> (CIFAR, stage widths 16k/32k/64k, k >= 1: resnet20_4); "
            "cifar_resnet<d>[_<k>]|cifar_plain<d>[_<k>] (force the CIFAR net where d is an ImageNet depth)"
        ),
        examples=(
            *(f"{kind}{d}" for d in (20, 32, 44, 56, 110, 1202) for kind in ("resnet", "plain")),
            "resnet20_2",
            "resnet20_4",
        ),
        shortcut="A",
        order=10,
        widen=_widen,
        block_types=(BasicBlock,),
    )
)
