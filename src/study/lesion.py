"""Block lesions (Veit, Wilber & Belongie, 2016): remove blocks of a trained ResNet at test time.

A residual block computes ``relu(F(x) + s(x))``. *Removing* it keeps only the shortcut: the
block then computes ``relu(s(x))``, exactly what it computes when its branch outputs zero:

* identity shortcut: ``relu(x) = x`` (``x`` is already a ReLU output) -- the block vanishes;
* option A (zero-pad): ``x`` subsampled, with zero channels appended;
* option B / ImageNet ``downsample``: the trained 1x1 projection + BN, then the ReLU.

Veit et al. found that a ResNet behaves like an ensemble of many paths of different lengths:
removing one block (outside the downsampling ones) costs little, and accuracy falls smoothly
with the number of blocks removed. A plain network cannot be lesioned this way: it has a single
path through every block and no shortcut to fall back on (see ``PlainNetworkError``).
"""

from __future__ import annotations

import random as random_module
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from src.models.blocks import Block, residual_blocks, shortcut_module
from src.study.evaluate import accuracy

PLAIN_EXPLANATION = (
    "{what} has no shortcut connections, so its blocks cannot be lesioned: a plain network is a single path "
    "through every block, and removing one leaves nothing to carry its input forward (where the block changes "
    "width or resolution, nothing even has the right shape). A residual block keeps its shortcut s(x) when its "
    "branch F is removed; lesion the ResNet twin (resnet<d> instead of plain<d>) instead"
)


class PlainNetworkError(ValueError):
    """A lesion was asked of a block (or network) without shortcuts; the message says why that is undefined."""


class ShortcutOnly(nn.Module):
    """A lesioned residual block: ``relu(s(x))``, the block with its branch removed."""

    def __init__(self, shortcut: nn.Module) -> None:
        super().__init__()
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.shortcut(x))


def _set_submodule(net: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, child, module)


@contextmanager
def lesioned(net: nn.Module, blocks: Sequence[Block]) -> Iterator[nn.Module]:
    """Within the ``with``, ``net`` runs with ``blocks`` replaced by their shortcuts; restored afterwards."""
    for block in blocks:
        if not block.residual:
            raise PlainNetworkError(
                PLAIN_EXPLANATION.format(what=f"Block {block.name} ({type(block.module).__name__})")
            )
    try:
        for block in blocks:
            _set_submodule(net, block.name, ShortcutOnly(shortcut_module(block.module)))
        yield net
    finally:
        for block in blocks:
            _set_submodule(net, block.name, block.module)


def _residual_blocks_or_explain(net: nn.Module, what: str) -> list[Block]:
    blocks = residual_blocks(net)
    if not all(block.residual for block in blocks):
        raise PlainNetworkError(PLAIN_EXPLANATION.format(what=what))
    return blocks


def _row(block: Block | None, acc: float, baseline: float) -> dict[str, Any]:
    return {
        "removed": "none" if block is None else block.name,
        "block_index": -1 if block is None else block.index,
        "stage": 0 if block is None else block.stage,
        "shortcut": "" if block is None else block.shortcut,
        "downsampling": False if block is None else block.downsampling,
        "acc": acc,
        "acc_drop": baseline - acc,
    }


def lesion_study(
    net: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    device: str | torch.device = "cpu",
    limit_batches: int | None = None,
    name: str = "this network",
) -> list[dict[str, Any]]:
    """Accuracy of the intact network (row ``removed: none``), then with each block removed in turn.

    Rows: ``removed`` (block name), ``block_index``, ``stage``, ``shortcut`` kind, ``downsampling``,
    ``acc``, ``acc_drop`` (intact minus lesioned). Raises ``PlainNetworkError`` for a plain network.
    """
    blocks = _residual_blocks_or_explain(net, name)
    baseline = accuracy(net, loader, device, limit_batches)
    rows = [_row(None, baseline, baseline)]
    for block in blocks:
        with lesioned(net, [block]):
            rows.append(_row(block, accuracy(net, loader, device, limit_batches), baseline))
    return rows


def random_lesions(
    net: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    ks: Sequence[int],
    trials: int = 5,
    seed: int = 0,
    include_downsampling: bool = True,
    device: str | torch.device = "cpu",
    limit_batches: int | None = None,
    name: str = "this network",
) -> list[dict[str, Any]]:
    """Accuracy after removing ``k`` blocks drawn at random (``trials`` draws per ``k``, seeded).

    Rows: ``k``, ``trial``, ``removed`` (block names joined by spaces), ``acc``. With
    ``include_downsampling=False`` the draws skip the blocks that change the feature map's shape.
    """
    blocks = _residual_blocks_or_explain(net, name)
    pool = [block for block in blocks if include_downsampling or not block.downsampling]
    bad = [k for k in ks if not isinstance(k, int) or not 1 <= k <= len(pool)]
    if bad:
        raise ValueError(f"k must be between 1 and the {len(pool)} removable blocks, got {bad}")
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    rng = random_module.Random(seed)
    rows = []
    for k in ks:
        for trial in range(trials):
            chosen = sorted(rng.sample(pool, k), key=lambda block: block.index)
            with lesioned(net, chosen):
                acc = accuracy(net, loader, device, limit_batches)
            rows.append({"k": k, "trial": trial, "removed": " ".join(b.name for b in chosen), "acc": acc})
    return rows
