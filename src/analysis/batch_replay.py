"""Batches read once and replayed: a pruning sweep measures dozens of copies of one network on the same batches.

Why: ``prune_study`` evaluates every pruned copy on the same evaluation batches and re-estimates its BN
statistics on the same seeded training batches (``recalibrate_batch_norm``'s ``seed``). Read through the
DataLoader for each copy, those batches are decoded, augmented and (with workers) handed over by freshly
started processes again and again: with 2 nets x 2 scopes x 4 sparsities x 2 methods that is 32 reads of 50
training batches for 32 forward passes each. Read once and kept in memory, the copies see the very same
tensors (same images, same augmentation, same order), so every number stays what it was.

A loader whose batches would take more than ``max_bytes`` (ImageNet-size images, a long fine-tune) is left
as it is and read each time, as before.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

DEFAULT_MAX_BYTES = 2 * 1024**3  # 2 GiB of batches: ~16,000 CIFAR images as float32, ~3,500 at 224 px


def _nbytes(batch: Any) -> int:
    """Bytes held by the tensors of one batch (an ``(images, labels)`` pair or any tuple / list of tensors)."""
    items = batch if isinstance(batch, (tuple, list)) else (batch,)
    return sum(item.element_size() * item.nelement() for item in items if isinstance(item, Tensor))


def replay(loader: Iterable[Any], batches: int | None, seed: int | None, max_bytes: int | None = None) -> Iterable[Any]:
    """The first ``batches`` batches of ``loader`` (``None``: all of them) as a list, or ``loader`` itself.

    They are read the way the consumer reads them: with ``seed``, under ``torch.random.fork_rng`` with torch's
    CPU generator seeded so (``recalibrate_batch_norm`` and ``SGDFinetune`` do the same, so a shuffled,
    augmented training loader yields the same batches); without, as they come. The caller's random state is
    untouched either way. When the batches would take more than ``max_bytes``, reading stops and ``loader`` is
    returned, to be read by each consumer as before (``None``: ``DEFAULT_MAX_BYTES``).
    """
    limit = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    kept: list[Any] = []
    held = 0
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        for batch in itertools.islice(loader, batches):
            held += _nbytes(batch)
            if held > limit:
                return loader
            kept.append(batch)
    return kept
