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
