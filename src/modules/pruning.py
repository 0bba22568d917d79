"""Magnitude masks, and a network that trains with them: what a pruning sweep and a pruned fit share.

Which weights are *prunable*: every convolution (shortcut projections included) and linear weight; biases and
batch-norm parameters are left alone. ``prune_magnitude`` zeroes the smallest L1 magnitudes with
``torch.nn.utils.prune``, in one of two scopes:

* ``global``: ``global_unstructured`` with ``L1Unstructured``, the ``round(s * N)`` smallest magnitudes among *all*
  ``N`` prunable weights, wherever they sit;
* ``layer``: ``l1_unstructured`` per layer, ``round(s * n)`` of each layer's ``n`` weights (every layer at ``s``).

``python -m src.prune`` (``src.analysis.magnitude_pruning``) measures copies pruned this way. A ``fit`` with
``model.pruning`` (``Pruning``, ``PrunedTraining``) starts from a trained network (``model.init_from``), prunes it to a
parameter count -- the size of a dense net it is to be compared with -- and trains on with the zeros held: the
pruned points of a parameter-efficiency frontier, measured by the same run machinery as every dense net.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from src.models.complexity import count_parameters
from src.modules.batchnorm_stats import DEFAULT_BN_BATCHES, recalibrate_batch_norm

PRUNABLE_TYPES = (nn.modules.conv._ConvNd, nn.Linear)
Prunable = nn.modules.conv._ConvNd | nn.Linear  # one of PRUNABLE_TYPES: a layer with a ``weight`` tensor
SCOPES = ("global", "layer")


def check_scopes(scopes: Iterable[str]) -> list[str]:
    """The scopes, checked: each one of ``SCOPES``, at least one, no repeats."""
    values = list(scopes)
    bad = [s for s in values if s not in SCOPES]
    if bad or not values or len(set(values)) != len(values):
        raise ValueError(f"scope must be one or both of {list(SCOPES)} (no repeats), got {values}")
    return values


def prunable_layers(net: nn.Module) -> list[tuple[str, Prunable]]:
    """``(qualified name, module)`` of every convolution and linear layer, in definition order."""
    return [(name, module) for name, module in net.named_modules() if isinstance(module, PRUNABLE_TYPES)]


def prunable_weights(net: nn.Module) -> list[tuple[Prunable, str]]:
    """``(module, "weight")`` for every convolution and linear layer: what ``prune`` may zero."""
    return [(module, "weight") for _, module in prunable_layers(net)]


def weight_mask(module: nn.Module) -> Tensor:
    """The ``weight_mask`` buffer that ``torch.nn.utils.prune`` registered on ``module``."""
    return cast(Tensor, module.weight_mask)


def prune_magnitude(net: nn.Module, sparsity: float, scope: str) -> list[int]:
    """Apply an L1 magnitude mask to ``net`` in place; return the pruned count of each prunable layer."""
    targets = prunable_weights(net)
    if scope == "global":
        amount = round(sparsity * sum(module.weight.numel() for module, _ in targets))  # exact, not prune's rounding
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
    elif scope == "layer":
        for module, name in targets:
            prune.l1_unstructured(module, name, amount=round(sparsity * module.weight.numel()))
    else:
        check_scopes([scope])
    return [int((weight_mask(module) == 0).sum()) for module, _ in targets]


# ---------------------------------------------------------------------------------------------- a pruned fit
@dataclass(frozen=True)
class Pruning:
    """``model.pruning``: how a fit that starts from a trained network prunes it before training on.

    Attributes:
        params: the parameters to keep, all of them counted (BN and biases too): the size of the dense network
            the pruned one is compared with (``resnet8`` has 75,290). Or:
        sparsity: the fraction of prunable weights to zero (exactly one of the two).
        scope: ``global`` (the smallest magnitudes anywhere) or ``layer`` (each layer by the same fraction).
        bn_batches: training batches the BN statistics are re-estimated on after pruning (0: keep the trained
            network's). Read in a seeded order, so every pruned copy of one data set sees the same images.
    """

    params: int | None = None
    sparsity: float | None = None
    scope: str = "global"
    bn_batches: int = DEFAULT_BN_BATCHES

    @classmethod
    def from_config(cls, spec: Mapping[str, Any]) -> Pruning:
        """``model.pruning`` as given in a config, checked: one line naming the bad key and what is valid."""
        unknown = sorted(set(spec) - {"params", "sparsity", "scope", "bn_batches"})
        if unknown:
            raise ValueError(f"model.pruning: unknown keys {unknown}; valid: params or sparsity, scope, bn_batches")
        pruning = cls(**spec)
        if (pruning.params is None) == (pruning.sparsity is None):
            raise ValueError(
                "model.pruning needs exactly one of params (the parameters to keep, e.g. 75290 for resnet8's size) "
                f"and sparsity (the fraction of prunable weights to zero), got {dict(spec)}"
            )
        if pruning.sparsity is not None and not 0.0 <= pruning.sparsity < 1.0:
            raise ValueError(f"model.pruning.sparsity must be in [0, 1), got {pruning.sparsity}")
        if pruning.params is not None and (isinstance(pruning.params, bool) or not isinstance(pruning.params, int)
                                           or pruning.params < 1):  # fmt: skip
            raise ValueError(f"model.pruning.params must be a positive whole number, got {pruning.params!r}")
        check_scopes([pruning.scope])
        if isinstance(pruning.bn_batches, bool) or not isinstance(pruning.bn_batches, int) or pruning.bn_batches < 0:
            raise ValueError(f"model.pruning.bn_batches must be a whole number >= 0, got {pruning.bn_batches!r}")
        return pruning

    def sparsity_of(self, net: nn.Module) -> float:
        """The fraction of ``net``'s prunable weights to zero; ``ValueError`` when ``params`` cannot be reached."""
        if self.sparsity is not None:
            return self.sparsity
        total = count_parameters(net)
        prunable = sum(module.weight.numel() for module, _ in prunable_weights(net))
        keep_at_least = total - prunable
        params = cast(int, self.params)
        if not keep_at_least <= params <= total:
            raise ValueError(
                f"model.pruning.params {params:,} cannot be reached: the network has {total:,} parameters, "
                f"{prunable:,} of them prunable, so it can keep {keep_at_least:,} to {total:,}"
            )
        return (total - params) / prunable


class PrunedTraining:
    """The masks of a network pruned at the start of a fit, held through training and kept in its checkpoints.

    ``start`` draws the masks (``prune_magnitude``, on a copy), zeroes the network's weights under them -- the
    network and its checkpoints stay an ordinary network that every tool loads -- and re-estimates BN statistics;
    ``hold`` puts the zeros back after every optimizer step (momentum and weight decay would move them);
    ``state`` / ``load_state`` carry the masks through a checkpoint, so a resumed fit holds the same ones.
    """

    def __init__(self, pruning: Pruning) -> None:
        self.pruning = pruning
        self.masks: dict[str, Tensor] = {}
        self.record: dict[str, Any] = {}

    def start(self, net: nn.Module, bn_loader: Iterable[tuple[Tensor, Tensor]] | None, seed: int = 0) -> None:
        sparsity = self.pruning.sparsity_of(net)
        total = count_parameters(net)
        # The masks of a copy in the default memory layout (torch's global pruning flattens weights with ``view``,
        # which a channels-last network's are not fit for): the very masks ``python -m src.prune`` draws.
        shadow = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
        counts = prune_magnitude(shadow, sparsity, self.pruning.scope)
        self.masks = {f"{name}.weight": weight_mask(module).detach().bool() for name, module in prunable_layers(shadow)}
        self.hold(net)
        used = 0
        if self.pruning.bn_batches and bn_loader is not None:
            device = next(net.parameters()).device
            was_training = net.training
            used = recalibrate_batch_norm(net, bn_loader, self.pruning.bn_batches, device, seed)
            net.train(was_training)
        prunable = sum(mask.numel() for mask in self.masks.values())
        self.record = {
            **asdict(self.pruning),
            "prunable_weights": prunable,
            "pruned_weights": sum(counts),
            "achieved_sparsity": sum(counts) / prunable,
            "params_before": total,
            "params_remaining": total - sum(counts),
            "bn_batches_used": used,
        }

    @torch.no_grad()
    def hold(self, net: nn.Module) -> None:
        """Zero the pruned weights again (after an optimizer step)."""
        parameters = dict(net.named_parameters())
        for name, mask in self.masks.items():
            weight = parameters[name]
            if mask.device != weight.device:
                self.masks[name] = mask = mask.to(weight.device)
            weight.mul_(mask)

    def state(self) -> dict[str, Any]:
        return {"masks": {name: mask.cpu() for name, mask in self.masks.items()}, "record": self.record}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.masks = dict(state["masks"])
        self.record = dict(state["record"])
