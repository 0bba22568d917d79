"""Size and cost of a network: parameters (total, per stage, per kind), MACs and bytes.

Conventions, stated once so every number in the project means the same thing:

* **MACs** are multiply-accumulates of convolution and linear layers (plus matmuls), for
  one sample, counted by ``torch.utils.flop_counter.FlopCounterMode``. Batch norm, ReLU,
  pooling and the residual additions are not counted (under 1% of a ResNet's work).
* **FLOPs = 2 x MACs**, which is what ``FlopCounterMode`` reports.
* Counting runs on the ``meta`` device: shapes only, no memory and no arithmetic, so it is
  free even for ResNet-1202 and never touches the real model's weights or BN statistics. A net
  whose forward reads values (``.item()``) is counted on a CPU copy of it instead.
"""

from __future__ import annotations

import copy
from collections import Counter

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
SHORTCUT_NAMES = ("downsample", "shortcut")


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    unique = {id(p): p for p in model.parameters() if p.requires_grad or not trainable_only}
    return sum(p.numel() for p in unique.values())


def parameters_by_stage(model: nn.Module) -> dict[str, int]:
    """Parameters grouped by the model's top-level children (``conv1``, ``layer1``, ..., ``fc``)."""
    counts: Counter[str] = Counter()
    for name, param in model.named_parameters():
        counts[name.split(".", 1)[0]] += param.numel()
    return dict(counts)


def parameter_kind(module_name: str, module: nn.Module) -> str:
    """``shortcut_projection``, ``conv``, ``norm``, ``linear`` or ``other`` for one module."""
    if any(part in SHORTCUT_NAMES for part in module_name.split(".")):
        return "shortcut_projection"
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, NORM_TYPES):
        return "norm"
    if isinstance(module, nn.Linear):
        return "linear"
    return "other"


def parameters_by_kind(model: nn.Module) -> dict[str, int]:
    """Parameters grouped by layer kind; the shortcut projections (option B) are their own kind."""
    counts: Counter[str] = Counter({"conv": 0, "norm": 0, "linear": 0, "shortcut_projection": 0})
    for name, module in model.named_modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        if own:
            counts[parameter_kind(name, module)] += own
    return dict(counts)


def model_size_bytes(model: nn.Module) -> int:
    """Bytes of parameters and buffers (BN statistics included): the size of a checkpoint's weights."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs (2 x MACs) of one forward pass for a single sample of ``input_shape`` (C, H, W).

    The model is copied to the meta device in eval mode, so the caller's model, its device
    and its batch-norm statistics are left exactly as they were. A forward that reads values
    (``.item()``, a boolean mask: a fork's own net) cannot run on the meta device; it is counted on a
    CPU copy instead, with one seeded random sample (its data-dependent branches as that sample takes them).
    """
    try:
        return _flops_of(copy.deepcopy(model).to("meta"), torch.empty((1, *input_shape), device="meta"))
    except (RuntimeError, NotImplementedError):  # "Tensor.item() cannot be called on meta tensors", nonzero()
        sample = torch.randn((1, *input_shape), generator=torch.Generator().manual_seed(0))
        return _flops_of(copy.deepcopy(model).to("cpu", torch.float32), sample)


def _flops_of(model: nn.Module, sample: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(sample)
    return int(counter.get_total_flops())


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass for one sample (``count_flops // 2``)."""
    return count_flops(model, input_shape) // 2
