"""Pre-activation ResNets (He et al., 2016) and Wide ResNets (Zagoruyko & Komodakis, 2016), with plain twins.

A pre-activation block computes ``x + F(x)``: the branch ``F`` starts with BN-ReLU (``bn1``, then
each convolution is preceded by BN-ReLU) and the sum is *not* passed through a ReLU, so the
identity path runs untouched from block to block. The network is a 3x3 stem convolution (16
filters, no BN: the first block's ``bn1`` follows it), three stages (``layer1..3``), a final BN-ReLU
(``final_bn``), global pooling and a linear head.

Where a block changes shape its shortcut is a 1x1 convolution (no BN) named ``downsample`` like
torchvision's, applied to the *pre-activated* input ``relu(bn1(x))``, as in both papers' code
(KaimingHe/resnet-1k-layers, szagoruyko/wide-residual-networks). ``shortcut_input`` says which
tensor the shortcut reads; ``src.models.blocks`` uses it to give diagnostics and lesions the block's
explicit branch ``F`` and shortcut ``s``.

* **Basic** block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3; the Wide ResNet block, with optional
  dropout between the two convolutions (the WRN paper's).
* **Bottleneck** block: BN-ReLU-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1, 4x expansion; the stride is
  on the first 1x1 convolution, as in He et al.'s ResNet-164/1001 code.

Networks:

* ``wide_resnet(d, k)``: WRN-d-k, ``d = 6n + 4``, stage widths ``16k, 32k, 64k``, basic blocks.
* ``preact_resnet(d)``: basic blocks, ``d = 6n + 2``, stage widths 16, 32, 64 (ResNet-110); this is
  WRN-(d+2)-1, since the WRN paper counts the two projection shortcuts in its depth. Bottleneck blocks,
  ``d = 9n + 2``, stage outputs 64, 128, 256 (ResNet-164, ResNet-1001).

**Plain twin** (``residual=False``): every block without its shortcut *and* without the shortcut's
1x1 projection -- only the branch, ``x -> F(x)`` -- as for the ImageNet plain twins. It has the
ResNet's parameters minus the projections', name for name.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from src.models.cifar_resnet import msra_init
from src.models.names import ArchSpec, Family, NameParts, refuse_shortcut_option, register

Pooling = Literal["avg", "max"]
STEM_WIDTH = 16


def _conv(in_planes: int, out_planes: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel, stride=stride, padding=kernel // 2, bias=False)


class PreActBlock(nn.Module):
    """What every pre-activation block has: ``residual``, ``downsample`` (or None) and its last conv."""

    expansion = 1
    residual: bool
    downsample: nn.Module | None
    bn1: nn.BatchNorm2d  # the branch's first BN (subclasses set it); shortcut_input reads it

    @property
    def branch_last(self) -> nn.Module:
        """The branch's last layer: its output is ``F(x)``, before the shortcut is added."""
        raise NotImplementedError

    def shortcut_input(self, x: Tensor) -> Tensor:
        """The tensor the projection shortcut reads: the pre-activated input ``relu(bn1(x))``."""
        return torch.relu(self.bn1(x))

    def _add_shortcut(self, x: Tensor, pre: Tensor, out: Tensor) -> Tensor:
        if not self.residual:
            return out
        return out + (x if self.downsample is None else self.downsample(pre))


class PreActBasicBlock(PreActBlock):
    """BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3, plus ``x`` or a 1x1 projection of ``relu(bn1(x))``."""

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, residual: bool = True, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.residual = residual
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = _conv(in_planes, planes, 3, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = _conv(planes, planes, 3)
        self.relu = nn.ReLU(inplace=True)
        changes_shape = stride != 1 or in_planes != planes
        self.downsample = _conv(in_planes, planes, 1, stride) if residual and changes_shape else None

    @property
    def branch_last(self) -> nn.Module:
        return self.conv2

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu(self.bn1(x))
        out = self.conv2(self.dropout(self.relu(self.bn2(self.conv1(pre)))))
        return self._add_shortcut(x, pre, out)


class PreActBottleneck(PreActBlock):
    """BN-ReLU-conv1x1 (stride)-BN-ReLU-conv3x3-BN-ReLU-conv1x1 (4x planes), plus the shortcut."""

    expansion = 4

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, residual: bool = True, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if dropout:
            raise ValueError("block_dropout is the WRN paper's dropout between a basic block's 3x3 convolutions")
        out_planes = planes * self.expansion
        self.residual = residual
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = _conv(in_planes, planes, 1, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = _conv(planes, out_planes, 1)
        self.relu = nn.ReLU(inplace=True)
        changes_shape = stride != 1 or in_planes != out_planes
        self.downsample = _conv(in_planes, out_planes, 1, stride) if residual and changes_shape else None

    @property
    def branch_last(self) -> nn.Module:
        return self.conv3

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu(self.bn1(x))
        out = self.relu(self.bn2(self.conv1(pre)))
        out = self.conv3(self.relu(self.bn3(self.conv2(out))))
        return self._add_shortcut(x, pre, out)


class PreActResNet(nn.Module):
    """Stem conv, three stages of pre-activation blocks, BN-ReLU, pooling, (dropout), linear head.

    Args:
        block: ``PreActBasicBlock`` or ``PreActBottleneck``.
        blocks_per_stage: ``n``.
        planes: each stage's block width (a bottleneck's inner width; its output is 4x that).
        block_dropout: dropout between a basic block's two convolutions (WRN); 0 disables it.
        dropout: dropout before the linear head, as for the other families.
    """

    def __init__(
        self,
        block: type[PreActBasicBlock | PreActBottleneck],
        blocks_per_stage: int,
        planes: tuple[int, int, int],
        num_classes: int = 10,
        in_channels: int = 3,
        residual: bool = True,
        block_dropout: float = 0.0,
        dropout: float = 0.0,
        pooling: Pooling = "avg",
    ) -> None:
        super().__init__()
        if pooling not in ("avg", "max"):
            raise ValueError(f"pooling must be 'avg' or 'max', got {pooling!r}")
        if not 0.0 <= block_dropout < 1.0:
            raise ValueError(f"block_dropout must be in [0, 1), got {block_dropout!r}")
        self.conv1 = _conv(in_channels, STEM_WIDTH, 3)
        in_planes = STEM_WIDTH
        stages = []
        for index, width in enumerate(planes):
            blocks = []
            for position in range(blocks_per_stage):
                stride = 2 if index > 0 and position == 0 else 1
                blocks.append(block(in_planes, width, stride, residual, block_dropout))
                in_planes = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.final_bn = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1) if pooling == "avg" else nn.AdaptiveMaxPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_planes, num_classes)
        msra_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = torch.flatten(self.pool(self.relu(self.final_bn(x))), 1)
        return self.fc(self.dropout(x))


def wide_resnet(depth: int, width: int, residual: bool = True, **kwargs: Any) -> PreActResNet:
    """WRN-``depth``-``width`` (``depth = 6n + 4``), or its plain twin when not ``residual``."""
    if depth < 10 or (depth - 4) % 6 or width < 1:
        raise ValueError(f"WRN-d-k needs d = 6n+4 (n >= 1) and k >= 1, got d={depth}, k={width}")
    planes = (16 * width, 32 * width, 64 * width)
    return PreActResNet(PreActBasicBlock, (depth - 4) // 6, planes, residual=residual, **kwargs)


def preact_resnet(depth: int, bottleneck: bool, **kwargs: Any) -> PreActResNet:
    """Pre-activation ResNet-``depth``: bottleneck blocks (``9n + 2``) or basic blocks (``6n + 2``)."""
    if bottleneck:
        if depth < 11 or (depth - 2) % 9:
            raise ValueError(f"a pre-activation bottleneck ResNet's depth is 9n+2, got {depth}")
        return PreActResNet(PreActBottleneck, (depth - 2) // 9, (16, 32, 64), **kwargs)
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"a pre-activation basic ResNet's depth is 6n+2, got {depth}")
    return PreActResNet(PreActBasicBlock, (depth - 2) // 6, (16, 32, 64), **kwargs)


# ---------------------------------------------------------------------------------------------- the families
PREACT_BOTTLENECK_FROM = 164  # He et al. (2016): ResNet-164 and -1001 are bottleneck nets, ResNet-110 is not
NOT_WRN_PREFIXES = ("cifar_", "preact_", "wide_")  # names these prefixes would make with wrn, refused with the reason


def _parse_wrn(parts: NameParts) -> ArchSpec:
    """``wrn<d>_<k>`` / ``plain_wrn<d>_<k>``, ``d = 6n + 4``. Also owns the other ``plain_`` stems, to say why not."""
    if parts.kind != "wrn":
        raise parts.error("the 'plain_' prefix names the plain Wide ResNet only (plain_wrn<d>_<k>)")
    if parts.prefix not in ("", "plain_"):
        raise parts.error(
            f"'{parts.prefix}' does not combine with wrn (Wide ResNets are wrn<d>_<k> / plain_wrn<d>_<k>)"
        )
    if parts.width is None:
        raise parts.error("a Wide ResNet needs its width: wrn<d>_<k> (WRN-d-k), e.g. wrn16_8")
    if parts.depth < 10 or (parts.depth - 4) % 6:
        raise parts.error(f"WRN depth {parts.depth} is not 6n+4 (n >= 1: 10, 16, 22, 28, 40, ...)")
    return ArchSpec(parts.name, "wrn", parts.prefix != "plain_", parts.depth, parts.width, stem=parts.stem)


def _build_wrn(spec: ArchSpec, shortcut: str | None, block_dropout: float, **head: Any) -> nn.Module:
    refuse_shortcut_option(spec, shortcut)
    return wide_resnet(spec.depth, spec.width, residual=spec.residual, block_dropout=block_dropout, **head)


WRN = register(
    Family(
        name="wrn",
        stems=("wrn", "plain_wrn", *(f"{prefix}wrn" for prefix in NOT_WRN_PREFIXES), "plain_resnet", "plain_plain"),
        parse=_parse_wrn,
        build=_build_wrn,
        forms="wrn<d>_<k>|plain_wrn<d>_<k> (Wide ResNet, d = 6n+4: wrn16_8, wrn28_10)",
        examples=tuple(
            f"{kind}{d}_{k}" for d, k in ((16, 4), (16, 8), (28, 10), (40, 4)) for kind in ("wrn", "plain_wrn")
        ),
        order=30,
        no_width="a Wide ResNet's width is in its name (wrn<d>_<k>): list each one under 'archs'",
        block_types=(PreActBlock,),
        line=lambda spec: f"{spec.stem}_{spec.width}",  # the width is part of every WRN's name
    )
)


def _parse_preact(parts: NameParts) -> ArchSpec:
    """``preact_resnet<d>``: basic blocks for ``d = 6n + 2``, bottleneck blocks for ``d = 9n + 2`` (both fit:
    the paper's choice, basic up to ResNet-110, bottleneck from ResNet-164)."""
    if parts.kind != "resnet":
        raise parts.error(
            "the pre-activation family has no plain twin (its subject is the identity path); without shortcuts "
            "a basic pre-activation net is plain_wrn<d+2>_1, and plain<6n+2> is He et al.'s plain baseline"
        )
    if parts.width is not None:
        raise parts.error("preact_resnet<d> takes no width; the wide pre-activation nets are wrn<d>_<k>")
    depth = parts.depth
    basic_fits, bottleneck_fits = depth >= 8 and (depth - 2) % 6 == 0, depth >= 11 and (depth - 2) % 9 == 0
    if bottleneck_fits and (depth >= PREACT_BOTTLENECK_FROM or not basic_fits):
        return ArchSpec(parts.name, "preact", True, depth, 1, "bottleneck", parts.stem)
    if not basic_fits:
        raise parts.error(f"pre-activation depth {depth} is neither 6n+2 (basic blocks) nor 9n+2 (bottleneck blocks)")
    return ArchSpec(parts.name, "preact", True, depth, 1, "basic", parts.stem)


def _build_preact(spec: ArchSpec, shortcut: str | None, block_dropout: float, **head: Any) -> nn.Module:
    refuse_shortcut_option(spec, shortcut)
    if block_dropout and spec.block != "basic":
        raise ValueError(
            f"block_dropout (dropout between a block's two 3x3 convolutions, the WRN paper's) applies to wrn and basic "
            f"preact nets, not to {spec.name}; dropout before the head is 'dropout'"
        )
    return preact_resnet(spec.depth, spec.block == "bottleneck", block_dropout=block_dropout, **head)


PREACT = register(
    Family(
        name="preact",
        stems=("preact_resnet", "preact_plain"),
        parse=_parse_preact,
        build=_build_preact,
        forms=(
            "preact_resnet<d> (pre-activation: basic d = 6n+2, e.g. preact_resnet110; bottleneck d = 9n+2, e.g. "
            "preact_resnet11, preact_resnet164, preact_resnet1001 (both fit: basic below 164); no plain twin)"
        ),
        examples=("preact_resnet110", "preact_resnet164", "preact_resnet1001"),
        order=40,
        no_width="pre-activation nets take no width (their wide versions are wrn<d>_<k>)",
        block_types=(PreActBlock,),
        line=lambda spec: spec.stem + ("-bottleneck" if spec.block == "bottleneck" else ""),
    )
)
