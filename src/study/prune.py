"""Global magnitude pruning sweep: how many of a trained network's parameters matter.

At each sparsity ``s`` a copy of the network gets ``torch.nn.utils.prune.global_unstructured``
with ``L1Unstructured``: the ``round(s * N)`` smallest-magnitude weights among *all* ``N``
prunable weights -- every convolution (shortcut projections included) and linear weight;
biases and batch-norm parameters are left alone -- are set to zero, wherever they sit in the
network. Optionally the pruned copy is fine-tuned for a few steps with its mask held fixed
(pruned weights stay zero), then evaluated again.

Unstructured sparsity does not shrink dense kernels, so MACs are unchanged and not reported;
the x-axis of the curve is the number of remaining non-zero parameters.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import prune

from src.models.complexity import count_parameters
from src.study.evaluate import accuracy

PRUNABLE_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


def check_sparsities(sparsities: Iterable[float]) -> list[float]:
    """The sparsities as floats; ``ValueError`` naming the bad ones unless all are in [0, 1)."""
    values = list(sparsities)
    bad = [s for s in values if not isinstance(s, (int, float)) or not 0.0 <= s < 1.0]
    if bad or not values:
        raise ValueError(
            f"sparsity must be a fraction in [0, 1) (0 = unpruned, 0.9 = 90% of prunable weights zero), got "
            f"{bad if values else 'none'}"
        )
    return [float(s) for s in values]


def prunable_weights(net: nn.Module) -> list[tuple[nn.Module, str]]:
    """``(module, "weight")`` for every convolution and linear layer: what ``prune`` may zero."""
    return [(module, "weight") for module in net.modules() if isinstance(module, PRUNABLE_TYPES)]


def zero_count(net: nn.Module) -> tuple[int, int]:
    """(zero entries, all entries) of the prunable weights, as the network computes with them."""
    weights = [getattr(module, name) for module, name in prunable_weights(net)]
    return sum(int((w == 0).sum()) for w in weights), sum(w.numel() for w in weights)


def _forever(loader: Iterable[Any]) -> Iterable[Any]:
    """Batches of ``loader`` again and again (a new epoch each time; ``itertools.cycle`` would keep them all)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("fine-tune: the loader yielded no batches")


def sgd_finetune(
    loader: Iterable[tuple[Tensor, Tensor]],
    steps: int,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    device: str | torch.device = "cpu",
) -> Callable[[nn.Module], None]:
    """A fine-tune hook for ``prune_sweep``: ``steps`` SGD steps (cycling through ``loader``) in train mode."""
    if steps < 1:
        raise ValueError(f"fine-tune steps must be >= 1, got {steps}")

    def finetune(net: nn.Module) -> None:
        optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        net.train()
        for images, labels in itertools.islice(_forever(loader), steps):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(net(images.to(device)), labels.to(device)).backward()
            optimizer.step()
        net.eval()

    return finetune


def prune_sweep(
    net: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    sparsities: Sequence[float],
    finetune: Callable[[nn.Module], None] | None = None,
    device: str | torch.device = "cpu",
    limit_batches: int | None = None,
) -> list[dict[str, Any]]:
    """Prune a copy of ``net`` at each sparsity and measure its accuracy (``net`` itself is untouched).

    Rows: ``sparsity``, ``prunable_weights`` (N), ``pruned_weights`` (``round(s * N)``),
    ``zero_fraction`` (zeros among the prunable weights after pruning, and after fine-tuning if
    any), ``total_params``, ``remaining_params`` (total minus pruned), ``acc``, and
    ``acc_finetuned`` (``None`` without ``finetune``).
    """
    sparsities = check_sparsities(sparsities)
    total_params = count_parameters(net)
    rows = []
    for sparsity in sparsities:
        # Channels-last weights (``model.channels_last: true``) are not contiguous, and torch's global
        # pruning flattens every weight with ``view``: prune a copy in the default layout.
        pruned_net = copy.deepcopy(net).to(device=device, memory_format=torch.contiguous_format)
        targets = prunable_weights(pruned_net)
        prunable = sum(getattr(module, name).numel() for module, name in targets)
        amount = round(sparsity * prunable)  # an int: exactly this many weights, not prune's own rounding
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
        acc = accuracy(pruned_net, loader, device, limit_batches)
        acc_finetuned = None
        if finetune is not None:
            finetune(pruned_net)  # the masks stay on: pruned weights remain zero while the rest adapt
            acc_finetuned = accuracy(pruned_net, loader, device, limit_batches)
        for module, name in targets:
            prune.remove(module, name)  # make the zeros permanent (plain ``weight`` again)
        zeros, _ = zero_count(pruned_net)
        rows.append(
            {
                "sparsity": sparsity,
                "prunable_weights": prunable,
                "pruned_weights": amount,
                "zero_fraction": zeros / prunable,
                "total_params": total_params,
                "remaining_params": total_params - amount,
                "acc": acc,
                "acc_finetuned": acc_finetuned,
            }
        )
    return rows
