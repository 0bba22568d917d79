"""Block lesions (Veit, Wilber & Belongie, 2016): remove blocks of a trained network at test time.

A residual block computes ``relu(F(x) + s(x))``. *Removing* it keeps only the shortcut: the
block then computes ``relu(s(x))``, exactly what it computes when its branch outputs zero:

* identity shortcut: ``relu(x) = x`` (``x`` is already a ReLU output) -- the block vanishes;
* option A (zero-pad): ``x`` subsampled, with zero channels appended;
* option B / ImageNet ``downsample``: the trained 1x1 projection + BN, then the ReLU.

A plain block computes ``relu(F(x))`` and has no shortcut. Veit et al.'s control for plain
networks is to *skip* such a block -- replace it by the identity -- which is defined only where
its input and output shapes match; a plain downsampling block (it changes width and resolution)
cannot be removed at all, and is reported as such (``PlainNetworkError`` when asked to).

Veit et al. found that a trained ResNet behaves like an ensemble of many paths of different
lengths: removing one non-downsampling block costs little, while removing a layer of a plain
network (VGG) destroys it; accuracy of the ResNet falls smoothly with the number of blocks removed.
Downsampling blocks are special in both (they change the representation's shape), so the random
draws skip them unless asked, and the per-stage summary keeps them apart.

Removing blocks shifts the statistics every later BN layer sees; with ``bn_loader`` they are
re-estimated on training batches after each removal (``src.modules.batchnorm_stats``; the same seeded
batches each time), on a copy, and the intact baseline gets the same treatment so the drops
compare like with like.
"""

from __future__ import annotations

import copy
import itertools
import math
import random as random_module
import statistics
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import Tensor, nn

from src.analysis.evaluate import accuracy
from src.models.blocks import Block, residual_blocks, shortcut_module
from src.modules.batchnorm_stats import DEFAULT_BN_BATCHES, recalibrate_batch_norm

NOT_REMOVABLE = (
    "block {name} of {what} ({kind}) has no shortcut and changes the feature map's shape ({change}): it cannot be "
    "removed, since nothing of the right shape carries its input forward. Only plain blocks whose input and output "
    "shapes match can be skipped (replaced by the identity, Veit et al.'s control for plain networks); lesion the "
    "ResNet twin (resnet<d> instead of plain<d>) to remove a downsampling block"
)


class PlainNetworkError(ValueError):
    """A removal was asked of a plain block that changes shape; the message says why that is undefined."""


class ShortcutOnly(nn.Module):
    """A lesioned residual block: ``relu(s(x))``, the block with its branch removed."""

    def __init__(self, shortcut: nn.Module) -> None:
        super().__init__()
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.shortcut(x))


def removable(block: Block) -> bool:
    """A residual block always (its shortcut stays); a plain block only where it keeps the shape."""
    return block.residual or not block.downsampling


def shape_change(block: Block) -> str:
    """``16 -> 32 channels, stride 2``: how a block changes the feature map (``same shape`` if it does not)."""
    module = block.module
    first = cast(nn.Conv2d, module.conv1)
    last = cast(nn.Conv2d, module.conv3 if hasattr(module, "conv3") else module.conv2)
    strides = [getattr(module, n).stride[0] for n in ("conv1", "conv2", "conv3") if hasattr(module, n)]
    stride = max(strides)
    parts = []
    if first.in_channels != last.out_channels:
        parts.append(f"{first.in_channels} -> {last.out_channels} channels")
    if stride != 1:
        parts.append(f"stride {stride}")
    return ", ".join(parts) or "same shape"


def replacement(block: Block, what: str = "this network") -> nn.Module:
    """What stands in for a removed block: its shortcut (residual) or the identity (shape-keeping plain block)."""
    if block.residual:  # a pre-activation block adds no ReLU after the sum: it leaves s(x) as is
        shortcut = shortcut_module(block.module)
        return shortcut if block.preactivation else ShortcutOnly(shortcut)
    if not block.downsampling:
        return nn.Identity()  # relu(F(x)) skipped: its input x (a ReLU output) goes on unchanged
    raise PlainNetworkError(
        NOT_REMOVABLE.format(name=block.name, what=what, kind=type(block.module).__name__, change=shape_change(block))
    )


def _set_submodule(net: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, child, module)


@contextmanager
def lesioned(net: nn.Module, blocks: Sequence[Block], what: str = "this network") -> Iterator[nn.Module]:
    """Within the ``with``, ``net`` runs with ``blocks`` removed (see ``replacement``); restored afterwards."""
    replacements = [replacement(block, what) for block in blocks]  # refuses before anything changes
    try:
        for block, module in zip(blocks, replacements):
            _set_submodule(net, block.name, module)
        yield net
    finally:
        for block in blocks:
            _set_submodule(net, block.name, block.module)


def _accuracy_without(
    net: nn.Module,
    blocks: Sequence[Block],
    loader: Iterable[tuple[Tensor, Tensor]],
    device: str | torch.device,
    limit_batches: int | None,
    what: str,
    bn_loader: Iterable[tuple[Tensor, Tensor]] | None,
    bn_batches: int,
) -> float:
    """Accuracy of ``net`` with ``blocks`` removed; with ``bn_loader``, on a copy with BN re-estimated."""
    if bn_loader is None:
        with lesioned(net, blocks, what):
            return accuracy(net, loader, device, limit_batches)
    twin = copy.deepcopy(net)
    by_name = {block.name: block for block in residual_blocks(twin)}
    with lesioned(twin, [by_name[block.name] for block in blocks], what):
        recalibrate_batch_norm(twin, bn_loader, bn_batches, device)
        return accuracy(twin, loader, device, limit_batches)


def _row(block: Block | None, acc: float | None, baseline: float, bn: bool, note: str = "") -> dict[str, Any]:
    return {
        "removed": "none" if block is None else block.name,
        "block_index": -1 if block is None else block.index,
        "stage": 0 if block is None else block.stage,
        "shortcut": "" if block is None else block.shortcut,
        "downsampling": False if block is None else block.downsampling,
        "replaced_by": "" if block is None or acc is None else ("shortcut" if block.residual else "identity"),
        "acc": acc,
        "acc_drop": None if acc is None else baseline - acc,
        "bn_reestimated": bn,
        "note": note,
    }


def lesion_study(
    net: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    device: str | torch.device = "cpu",
    limit_batches: int | None = None,
    name: str = "this network",
    bn_loader: Iterable[tuple[Tensor, Tensor]] | None = None,
    bn_batches: int = DEFAULT_BN_BATCHES,
) -> list[dict[str, Any]]:
    """Accuracy of the intact network (row ``removed: none``), then with each block removed in turn.

    Rows: ``removed`` (block name), ``block_index``, ``stage``, ``shortcut`` kind, ``downsampling``,
    ``replaced_by`` (``shortcut`` for a residual block, ``identity`` for a skipped plain block, empty
    when not removable), ``acc``, ``acc_drop`` (intact minus lesioned), ``bn_reestimated``, ``note``.
    A plain downsampling block cannot be removed: its row has no ``acc`` and says why in ``note``.
    """
    with_bn = bn_loader is not None
    baseline = _accuracy_without(net, [], loader, device, limit_batches, name, bn_loader, bn_batches)
    rows = [_row(None, baseline, baseline, with_bn)]
    for block in residual_blocks(net):
        if not removable(block):
            note = f"not removable: no shortcut, changes shape ({shape_change(block)})"
            rows.append(_row(block, None, baseline, with_bn, note))
            continue
        acc = _accuracy_without(net, [block], loader, device, limit_batches, name, bn_loader, bn_batches)
        rows.append(_row(block, acc, baseline, with_bn))
    return rows


def draw_pool(net: nn.Module, include_downsampling: bool = False, name: str = "this network") -> list[Block]:
    """The blocks random lesions draw from: the non-downsampling ones, or all when asked.

    ``PlainNetworkError`` when downsampling blocks are asked for but some cannot be removed (plain ones).
    """
    blocks = residual_blocks(net)
    if include_downsampling:
        refused = [block.name for block in blocks if not removable(block)]
        if refused:
            raise PlainNetworkError(
                f"{name}: downsampling blocks {' '.join(refused)} have no shortcut and cannot be removed, so random "
                f"draws cannot include them; draw from the {sum(not b.downsampling for b in blocks)} shape-keeping "
                "blocks only (the default, without including downsampling blocks)"
            )
        return blocks
    return [block for block in blocks if not block.downsampling]


def check_draws(pool: Sequence[Block], ks: Sequence[int], trials: int) -> None:
    """``ValueError`` unless every k is between 1 and the pool's size and ``trials >= 1``."""
    if not pool:
        raise ValueError("there are no blocks to draw from (every block is a downsampling block)")
    bad = [k for k in ks if not isinstance(k, int) or not 1 <= k <= len(pool)]
    if bad or not ks:
        raise ValueError(f"k must be between 1 and the {len(pool)} removable blocks, got {bad or 'none'}")
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")


def random_lesions(
    net: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    ks: Sequence[int],
    trials: int = 5,
    seed: int = 0,
    include_downsampling: bool = False,
    device: str | torch.device = "cpu",
    limit_batches: int | None = None,
    name: str = "this network",
    bn_loader: Iterable[tuple[Tensor, Tensor]] | None = None,
    bn_batches: int = DEFAULT_BN_BATCHES,
    baseline: float | None = None,
) -> list[dict[str, Any]]:
    """Accuracy after removing ``k`` blocks drawn at random (``trials`` distinct subsets per ``k``, seeded; every
    subset once when there are no more than ``trials``: see ``lesion_subsets``).

    Rows: ``k``, ``trial``, ``removed`` (block names joined by spaces), ``acc``, ``acc_drop`` (from
    ``baseline``, measured here when not given, with the same BN treatment), ``bn_reestimated``.
    Draws skip the downsampling blocks (which change the feature map's shape) unless
    ``include_downsampling``.
    """
    pool = draw_pool(net, include_downsampling, name)
    check_draws(pool, ks, trials)
    if baseline is None:
        baseline = _accuracy_without(net, [], loader, device, limit_batches, name, bn_loader, bn_batches)
    rng = random_module.Random(seed)
    rows = []
    for k in ks:
        subsets, how = lesion_subsets(pool, k, trials, rng)
        for trial, chosen in enumerate(subsets):
            acc = _accuracy_without(net, chosen, loader, device, limit_batches, name, bn_loader, bn_batches)
            rows.append(
                {
                    "k": k,
                    "trial": trial,
                    "removed": " ".join(b.name for b in chosen),
                    "acc": acc,
                    "acc_drop": baseline - acc,
                    "bn_reestimated": bn_loader is not None,
                    "draw": how,
                }
            )
    return rows


def lesion_subsets(
    pool: Sequence[Block], k: int, trials: int, rng: random_module.Random
) -> tuple[list[list[Block]], str]:
    """The ``k``-block subsets to remove, and how they were chosen: ``"all"`` of them when there are no more than
    ``trials`` (each once), else ``trials`` *distinct* subsets drawn at random (``"sampled"``, without
    replacement). Repeating a subset would count one measurement several times and overstate n."""
    total = math.comb(len(pool), k)
    if total <= trials:
        return [list(subset) for subset in itertools.combinations(pool, k)], "all"
    seen: set[tuple[int, ...]] = set()
    subsets: list[list[Block]] = []
    while len(subsets) < trials:
        chosen = sorted(rng.sample(list(pool), k), key=lambda block: block.index)
        key = tuple(block.index for block in chosen)
        if key not in seen:
            seen.add(key)
            subsets.append(chosen)
    return subsets, "sampled"


# ---------------------------------------------------------------------------------------------- summaries
def _spread(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof = 1; ``None`` for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def random_summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per ``k``: ``n`` draws, ``acc_mean``, ``acc_std`` (ddof = 1; empty for n = 1), min, max, and the drop's."""
    by_k: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_k.setdefault(int(row["k"]), []).append(row)
    summary = []
    for k in sorted(by_k):
        accs = [float(row["acc"]) for row in by_k[k]]
        drops = [float(row["acc_drop"]) for row in by_k[k]]
        acc_mean, acc_std = _spread(accs)
        drop_mean, drop_std = _spread(drops)
        summary.append(
            {
                "k": k,
                "n": len(accs),  # distinct subsets: every one of them ("all"), or distinct random ones
                "draw": by_k[k][0].get("draw", "sampled"),
                "acc_mean": acc_mean,
                "acc_std": acc_std,
                "acc_min": min(accs),
                "acc_max": max(accs),
                "drop_mean": drop_mean,
                "drop_std": drop_std,
            }
        )
    return summary


def stage_summary(single: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per stage, downsampling blocks apart: how much removing one block costs.

    Rows: ``stage``, ``downsampling``, ``blocks`` (in the group), ``removed`` (those that could be
    removed), ``drop_mean``, ``drop_std`` (ddof = 1; empty below two), ``drop_min``, ``drop_max``
    (empty when nothing in the group could be removed).
    """
    groups: dict[tuple[int, bool], list[dict[str, Any]]] = {}
    for row in single:
        if row["removed"] != "none":
            groups.setdefault((int(row["stage"]), bool(row["downsampling"])), []).append(row)
    summary = []
    for (stage, downsampling), rows in sorted(groups.items()):
        drops = [float(row["acc_drop"]) for row in rows if row["acc_drop"] is not None]
        mean, std = _spread(drops) if drops else (None, None)
        summary.append(
            {
                "stage": stage,
                "downsampling": downsampling,
                "blocks": len(rows),
                "removed": len(drops),
                "drop_mean": mean,
                "drop_std": std,
                "drop_min": min(drops) if drops else None,
                "drop_max": max(drops) if drops else None,
            }
        )
    return summary
