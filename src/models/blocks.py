"""The blocks of a network, in depth order, with the parts the studies need: branch and shortcut.

A residual block computes ``relu(F(x) + s(x))``: ``F`` is its branch (conv-BN-...-conv-BN),
``s`` its shortcut (the identity, option A's zero-padding, or a 1x1 projection named
``downsample``). A plain block computes ``relu(F(x))`` with the same branch and no shortcut.
Training diagnostics (gradient norms per block, the residual-branch ratio ||F(x)|| / ||x||)
and the lesion study (keep only ``s``) all need the same three things from each block, for
both the CIFAR networks and the ImageNet ones, so this module is the one place that knows them:

* which modules are blocks, and whether each one has a shortcut;
* the branch's last norm layer, whose output *is* ``F(x)`` (a forward hook there sees it);
* the shortcut module (``nn.Identity`` where it is the identity).

Pre-activation blocks (``src.models.preact_resnet``: Wide and pre-activation ResNets) compute
``F(x) + s(x)`` with no ReLU after the sum; their branch ends in a convolution (``branch_last``), and
a projection shortcut reads the pre-activated input ``relu(bn1(x))``, so ``shortcut_module`` returns
a module computing ``s`` from the block's input ``x`` itself (``PreActShortcut``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from torch import Tensor, nn

from src.models.cifar_resnet import PadShortcut
from src.models.imagenet_resnet import PlainBasicBlock, PlainBottleneck
from src.models.names import families
from src.models.preact_resnet import PreActBlock


def block_types() -> tuple[type[nn.Module], ...]:
    """The block classes of every registered family (``Family.block_types``; the Plain* blocks subclass
    torchvision's): the modules ``residual_blocks`` finds."""
    return tuple(
        dict.fromkeys(
            kind for registered in families() for kind in registered.block_types if issubclass(kind, nn.Module)
        )
    )


@dataclass(frozen=True)
class Block:
    """One block of a network.

    Attributes:
        index: position in depth order, from 0 (the block nearest the input).
        name: the module's qualified name (``layer2.0``), as in ``state_dict`` keys.
        stage: 1-based stage (``layerK``) the block belongs to.
        module: the block itself.
        residual: whether it adds a shortcut to its branch.
        shortcut: ``"identity"``, ``"zero-pad"`` (option A), ``"projection"`` (option B /
            torchvision's ``downsample``), or ``"none"`` for a plain block.
    """

    index: int
    name: str
    stage: int
    module: nn.Module
    residual: bool
    shortcut: str

    @property
    def preactivation(self) -> bool:
        """A pre-activation block: ``F(x) + s(x)`` with no ReLU after the sum."""
        return isinstance(self.module, PreActBlock)

    @property
    def downsampling(self) -> bool:
        """The block changes the feature map's shape (the first block of a stage after the first)."""
        return self.shortcut in ("zero-pad", "projection") or (not self.residual and _changes_shape(self.module))


def _conv(block: nn.Module, name: str) -> nn.Conv2d:
    """The block's convolution ``name`` (``conv1``...): every block type names its convolutions so."""
    return cast(nn.Conv2d, getattr(block, name))


def _changes_shape(block: nn.Module) -> bool:
    conv1 = _conv(block, "conv1")
    last_conv = _conv(block, "conv3" if hasattr(block, "conv3") else "conv2")
    return conv1.in_channels != last_conv.out_channels or any(
        getattr(block, name).stride != (1, 1) for name in ("conv1", "conv2") if hasattr(block, name)
    )


def is_residual(block: nn.Module) -> bool:
    """Whether ``block`` (one of ``block_types()``) adds a shortcut: its ``residual`` attribute (a fork's block
    may say so the same way); torchvision's blocks always do, our plain twins of them never."""
    if isinstance(block, (PlainBasicBlock, PlainBottleneck)):
        return False
    return bool(getattr(block, "residual", True))


def _shortcut_kind(block: nn.Module) -> str:
    if not is_residual(block):
        return "none"
    if block.downsample is None:
        return "identity"
    return "zero-pad" if isinstance(block.downsample, PadShortcut) else "projection"


def residual_blocks(net: nn.Module) -> list[Block]:
    """Every block of ``net`` in depth order (residual and plain blocks alike).

    Works for the CIFAR networks and the ImageNet ones (and any net built from their block
    classes); raises ``ValueError`` for a network with no such blocks.
    """
    blocks: list[Block] = []
    kinds = block_types()
    for name, module in net.named_modules():
        if kinds and isinstance(module, kinds):
            stage_name = name.split(".")[-2] if "." in name else name
            stage = int(stage_name[5:]) if stage_name.startswith("layer") and stage_name[5:].isdigit() else 0
            blocks.append(Block(len(blocks), name, stage, module, is_residual(module), _shortcut_kind(module)))
    if not blocks:
        raise ValueError(f"{type(net).__name__} has no residual or plain blocks ({[b.__name__ for b in kinds]})")
    return blocks


def branch_output(block: nn.Module) -> nn.Module:
    """The branch's last layer (a norm layer; a convolution in a pre-activation block): its output is ``F(x)``.

    A block with a ``branch_last`` module (pre-activation blocks; any fork's block may name its own) says so."""
    if hasattr(block, "branch_last"):
        return cast(nn.Module, block.branch_last)
    return cast(nn.Module, block.bn3 if hasattr(block, "bn3") else block.bn2)


def branch_weights(block: nn.Module) -> list[nn.Parameter]:
    """The branch's convolution weights (the shortcut projection's excluded)."""
    names = ["conv1", "conv2"] + (["conv3"] if hasattr(block, "conv3") else [])
    return [cast(nn.Parameter, _conv(block, name).weight) for name in names]


def shortcut_module(block: nn.Module) -> nn.Module:
    """``s``: the block's shortcut (``nn.Identity`` for the identity); plain blocks have none."""
    if not is_residual(block):
        raise ValueError(f"{type(block).__name__} is a plain block: it has no shortcut")
    if block.downsample is None:
        return nn.Identity()
    return PreActShortcut(block) if isinstance(block, PreActBlock) else cast(nn.Module, block.downsample)


class PreActShortcut(nn.Module):
    """``s(x)`` of a pre-activation block with a projection: ``downsample(relu(bn1(x)))``, from the block's input.

    It shares the block's ``bn1`` and ``downsample`` (trained weights, not copies).
    """

    def __init__(self, block: PreActBlock) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        downsample = cast(nn.Module, self.block.downsample)  # shortcut_module makes one only for a projection
        return downsample(self.block.shortcut_input(x))
