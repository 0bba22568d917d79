"""Magnitude pruning sweep with its controls: how many of a trained network's weights matter.

At each sparsity ``s`` a copy of the network has ``s`` of its prunable weights -- every
convolution (shortcut projections included) and linear weight; biases and batch-norm parameters
are left alone -- set to zero with ``torch.nn.utils.prune``. Which weights, in one of two *scopes*:

* ``global``: ``global_unstructured`` with ``L1Unstructured``, the ``round(s * N)`` smallest
  magnitudes among *all* ``N`` prunable weights, wherever they sit. Layers whose weights are
  small by scale (wide late stages, whose He-initialised weights have a smaller std; BN makes any
  scale equivalent) lose far more than ``s`` of their weights, down to a whole layer at high ``s``;
* ``layer``: ``l1_unstructured`` per layer, ``round(s * n)`` of each layer's ``n`` weights: the
  uniform baseline, every layer exactly at ``s``.

Each magnitude mask gets a *random control*: the same number of weights removed from every layer,
chosen uniformly at random (seeded). Magnitude beating random at the same per-layer sparsities is
what says the magnitudes carried information, rather than the layer budget alone.

After pruning, every BN layer's statistics are re-estimated on training batches
(``src.modules.batchnorm_stats``), masks in force, when a loader is given; ``acc_original_bn`` keeps the
accuracy with the intact network's statistics. An optional fine-tune trains each pruned copy for a
few steps with its mask held fixed (pruned weights stay zero), then BN is re-estimated again.

Collapse is reported, not left to be inferred from a flat curve: ``collapsed_layers`` names every
layer with at least ``LAYER_COLLAPSE`` of its weights pruned, and ``predictions_collapsed`` flags a
network that predicts one class for (almost) everything (``src.analysis.evaluate.COLLAPSE_SHARE``).

Unstructured sparsity does not shrink dense kernels, so MACs are unchanged and not reported;
the x-axis of the curve is the number of remaining non-zero parameters.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import prune

from src.analysis.batch_replay import replay
from src.analysis.evaluate import COLLAPSE_SHARE, Evaluation, evaluate
from src.models.complexity import count_parameters
from src.modules.batchnorm_stats import DEFAULT_BN_BATCHES, recalibrate_batch_norm
from src.modules.pruning import (
    check_scopes,
    prunable_layers,
    prunable_weights,
    prune_magnitude,
    weight_mask,
)

LAYER_COLLAPSE = 0.99  # a layer with at least this fraction of its weights pruned has collapsed


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


def layer_kind(name: str, module: nn.Module) -> str:
    """``linear``, ``shortcut`` (a projection of a residual block) or ``conv``."""
    if isinstance(module, nn.Linear):
        return "linear"
    return "shortcut" if "downsample" in name.split(".") else "conv"


def zero_count(net: nn.Module) -> tuple[int, int]:
    """(zero entries, all entries) of the prunable weights, as the network computes with them."""
    weights = [getattr(module, name) for module, name in prunable_weights(net)]
    return sum(int((w == 0).sum()) for w in weights), sum(w.numel() for w in weights)


def prune_random(net: nn.Module, counts: Sequence[int], generator: torch.Generator) -> list[int]:
    """Prune exactly ``counts[i]`` uniformly drawn weights of prunable layer ``i`` (the random control)."""
    targets = prunable_weights(net)
    if len(counts) != len(targets):
        raise ValueError(f"random control: {len(counts)} per-layer counts for {len(targets)} prunable layers")
    for (module, name), count in zip(targets, counts):
        weight = module.weight
        mask = torch.ones(weight.numel(), dtype=weight.dtype)
        mask[torch.randperm(weight.numel(), generator=generator)[:count]] = 0
        prune.custom_from_mask(module, name, mask.view_as(weight).to(weight.device))
    return [int((weight_mask(module) == 0).sum()) for module, _ in targets]


# ---------------------------------------------------------------------------------------------- fine-tune
def _forever(loader: Iterable[Any]) -> Iterable[Any]:
    """Batches of ``loader`` again and again (a new epoch each time; ``itertools.cycle`` would keep them all)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("fine-tune: the loader yielded no batches")


@dataclass
class SGDFinetune:
    """A fine-tune hook for ``prune_sweep``: ``steps`` SGD steps (cycling through ``loader``) in train mode.

    A class rather than a closure so the sweep can record ``steps`` beside the accuracies. With
    ``seed`` (the default) the loader is read under a seeded, forked torch RNG, so every pruned copy
    is fine-tuned on the same batches (paired comparisons; the caller's random state is untouched).
    """

    loader: Iterable[tuple[Tensor, Tensor]]
    steps: int
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    device: str | torch.device = "cpu"
    seed: int | None = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"fine-tune steps must be >= 1, got {self.steps}")

    def __call__(self, net: nn.Module) -> None:
        optimizer = torch.optim.SGD(
            net.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )
        net.train()
        with torch.random.fork_rng(devices=[], enabled=self.seed is not None):
            if self.seed is not None:
                torch.manual_seed(self.seed)
            for images, labels in itertools.islice(_forever(self.loader), self.steps):
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(net(images.to(self.device)), labels.to(self.device)).backward()
                optimizer.step()
        net.eval()


def sgd_finetune(
    loader: Iterable[tuple[Tensor, Tensor]],
    steps: int,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    device: str | torch.device = "cpu",
    seed: int | None = 0,
) -> SGDFinetune:
    """``SGDFinetune(loader, steps, ...)``: a fine-tune hook that records its number of steps."""
    return SGDFinetune(loader, steps, lr, momentum, weight_decay, device, seed)


# ---------------------------------------------------------------------------------------------- the sweep
@dataclass
class PruneStudy:
    """What ``prune_study`` measured.

    Attributes:
        rows: one per (scope, method, sparsity): counts, collapse flags, accuracies (see ``prune_study``).
        layers: one per (scope, method, sparsity, prunable layer): ``layer``, ``index``, ``kind``,
            ``weights``, ``pruned``, ``layer_sparsity``, ``collapsed``.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)


def _measure(
    net: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    device: str | torch.device,
    limit_batches: int | None,
    bn_loader: Iterable[tuple[Tensor, Tensor]] | None,
    bn_batches: int,
    seed: int,
) -> tuple[Evaluation, Evaluation, int]:
    """(with the original BN statistics, after re-estimating them -- the same when off, batches used)."""
    original = evaluate(net, loader, device, limit_batches)
    if bn_loader is None:
        return original, original, 0
    used = recalibrate_batch_norm(net, bn_loader, bn_batches, device, seed)
    return original, evaluate(net, loader, device, limit_batches), used


def prune_study(
    net: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    sparsities: Sequence[float],
    finetune: Callable[[nn.Module], None] | None = None,
    device: str | torch.device = "cpu",
    limit_batches: int | None = None,
    scopes: Sequence[str] = ("global",),
    random_control: bool = False,
    seed: int = 0,
    bn_loader: Iterable[tuple[Tensor, Tensor]] | None = None,
    bn_batches: int = DEFAULT_BN_BATCHES,
    layer_collapse: float = LAYER_COLLAPSE,
    collapse_share: float = COLLAPSE_SHARE,
) -> PruneStudy:
    """Prune copies of ``net`` at each sparsity, per scope (and random control), and measure them.

    ``net`` itself is untouched. Rows, in the order scope > sparsity > method:

    * ``scope`` (``global``/``layer``), ``method`` (``magnitude``/``random``), ``sparsity``;
    * ``prunable_weights`` (N), ``pruned_weights`` (as the mask says: ``round(s * N)`` for global,
      the sum of ``round(s * n)`` per layer for layer scope; the random control copies its magnitude
      twin's per-layer counts), ``zero_fraction`` (zeros among the prunable weights after pruning and
      fine-tuning), ``total_params``, ``remaining_params`` (total minus pruned);
    * ``max_layer_sparsity``, ``collapsed_layers`` (names of layers at least ``layer_collapse``
      pruned, space-separated; empty when none);
    * ``bn_batches`` (batches the BN statistics were re-estimated on, the same ones for every copy:
      ``seed`` fixes them; 0 without ``bn_loader``),
      ``acc_original_bn`` (pruned, the intact network's BN statistics), ``acc`` (pruned, statistics
      re-estimated; equal to ``acc_original_bn`` when off), ``top_class_share`` and
      ``predictions_collapsed`` (share >= ``collapse_share``) of that ``acc`` evaluation;
    * ``finetune_steps`` (0 without ``finetune``; its ``steps`` attribute otherwise),
      ``acc_finetuned``, ``top_class_share_finetuned``, ``predictions_collapsed_finetuned``
      (``None`` without ``finetune``);
    * ``random_seed``: the seed of the random control (``None`` for magnitude rows); ``seed`` also
      fixes which training batches BN statistics are re-estimated on.
    """
    sparsities = check_sparsities(sparsities)
    scopes = check_scopes(scopes)
    # Every copy is measured on the same batches: read them once (src/analysis/batch_replay.py).
    loader = replay(loader, limit_batches, seed=None)
    bn_loader = None if bn_loader is None else replay(bn_loader, bn_batches, seed)
    total_params = count_parameters(net)
    steps = 0 if finetune is None else int(getattr(finetune, "steps", -1))  # -1: a hook that does not say
    generator = torch.Generator().manual_seed(seed)
    study = PruneStudy()
    for scope in scopes:
        for sparsity in sparsities:
            counts: list[int] = []
            for method in ("magnitude", "random") if random_control else ("magnitude",):
                pruned_net = _contiguous_copy(net, device)
                if method == "magnitude":
                    counts = prune_magnitude(pruned_net, sparsity, scope)
                else:
                    counts = prune_random(pruned_net, counts, generator)
                original, measured, used = _measure(
                    pruned_net, loader, device, limit_batches, bn_loader, bn_batches, seed
                )
                tuned = None
                if finetune is not None:
                    finetune(pruned_net)  # the masks stay on: pruned weights remain zero while the rest adapt
                    if bn_loader is not None:
                        recalibrate_batch_norm(pruned_net, bn_loader, bn_batches, device, seed)
                    tuned = evaluate(pruned_net, loader, device, limit_batches)
                where = {"scope": scope, "method": method, "sparsity": sparsity}
                layers = _layer_rows(pruned_net, counts, where, layer_collapse)
                zeros, prunable = zero_count(pruned_net)
                study.layers += layers
                study.rows.append(
                    {
                        **where,
                        "prunable_weights": prunable,
                        "pruned_weights": sum(counts),
                        "zero_fraction": zeros / prunable,
                        "total_params": total_params,
                        "remaining_params": total_params - sum(counts),
                        "max_layer_sparsity": max(layer["layer_sparsity"] for layer in layers),
                        "collapsed_layers": " ".join(layer["layer"] for layer in layers if layer["collapsed"]),
                        "bn_batches": used,
                        "acc_original_bn": original.acc,
                        "acc": measured.acc,
                        "samples": measured.samples,
                        "top_class_share": measured.top_class_share,
                        "predictions_collapsed": measured.collapsed(collapse_share),
                        "finetune_steps": steps,
                        **_finetuned(tuned, collapse_share),
                        "random_seed": seed if method == "random" else None,
                    }
                )
    return study


def _contiguous_copy(net: nn.Module, device: str | torch.device) -> nn.Module:
    """A copy of ``net`` on ``device`` in the default memory layout.

    Channels-last weights (``model.channels_last: true``) are not contiguous, and torch's global pruning
    flattens every weight with ``view``: prune a copy in the default layout.
    """
    return copy.deepcopy(net).to(device=device, memory_format=torch.contiguous_format)  # type: ignore[call-overload]


def _layer_rows(
    pruned_net: nn.Module, counts: Sequence[int], where: dict[str, Any], layer_collapse: float
) -> list[dict[str, Any]]:
    """One row per prunable layer of a pruned copy, after making its zeros permanent (``prune.remove``)."""
    targets = prunable_layers(pruned_net)
    for _, module in targets:
        prune.remove(module, "weight")  # plain ``weight`` again, its pruned entries zero
    return [
        {
            **where,
            "layer": name,
            "index": index,
            "kind": layer_kind(name, module),
            "weights": module.weight.numel(),
            "pruned": count,
            "layer_sparsity": count / module.weight.numel(),
            "collapsed": count / module.weight.numel() >= layer_collapse,
        }
        for index, ((name, module), count) in enumerate(zip(targets, counts))
    ]


def _finetuned(tuned: Evaluation | None, collapse_share: float) -> dict[str, Any]:
    """The fine-tuned columns of a row (``None`` without a fine-tune)."""
    return {
        "acc_finetuned": None if tuned is None else tuned.acc,
        "top_class_share_finetuned": None if tuned is None else tuned.top_class_share,
        "predictions_collapsed_finetuned": None if tuned is None else tuned.collapsed(collapse_share),
    }


def prune_sweep(
    net: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    sparsities: Sequence[float],
    finetune: Callable[[nn.Module], None] | None = None,
    device: str | torch.device = "cpu",
    limit_batches: int | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """The rows of ``prune_study`` (same arguments; ``options`` are its keyword-only ones)."""
    return prune_study(net, loader, sparsities, finetune, device, limit_batches, **options).rows


def collapse_findings(rows: Iterable[dict[str, Any]]) -> list[str]:
    """One sentence per row with a collapsed layer or collapsed predictions (rows may carry a ``model``)."""
    findings = []
    for row in rows:
        what = []
        if row.get("collapsed_layers"):
            names = row["collapsed_layers"].split()
            what.append(f"{len(names)} layer(s) at least {LAYER_COLLAPSE:.0%} pruned ({', '.join(names)})")
        for suffix, stage in (("", "after pruning"), ("_finetuned", "after fine-tuning")):
            if row.get(f"predictions_collapsed{suffix}"):
                share = row[f"top_class_share{suffix}"]
                what.append(f"predictions collapsed {stage}: {share:.1%} of samples get one class")
        if what:
            model = f"{row['model']}, " if row.get("model") else ""
            findings.append(
                f"{model}{row['scope']} {row['method']} at sparsity {row['sparsity']:g}: " + "; ".join(what)
            )
    return findings
