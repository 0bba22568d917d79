"""Top-1 accuracy of a network on a loader: the one number every study reports."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


@torch.no_grad()
def accuracy(
    net: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    device: str | torch.device = "cpu",
    limit_batches: int | None = None,
) -> float:
    """Fraction of correctly classified samples, in eval mode (BN running statistics), top-1.

    The same number as the classifier's ``test/acc`` (micro-averaged top-1) on the same loader.
    ``limit_batches`` evaluates only the first batches (quick looks; the fraction is then of those).
    The network's train/eval mode is restored afterwards.
    """
    was_training = net.training
    net.eval()
    correct = total = 0
    try:
        for index, (images, labels) in enumerate(loader):
            if limit_batches is not None and index >= limit_batches:
                break
            logits = net(images.to(device))
            correct += int((logits.argmax(dim=1).cpu() == labels).sum())
            total += len(labels)
    finally:
        net.train(was_training)
    if total == 0:
        raise ValueError("accuracy: the loader yielded no samples")
    return correct / total
