"""Top-1 accuracy of a network on a loader -- and whether its predictions collapsed to one class.

Accuracy alone hides a failure that pruning and lesions produce: a broken network that predicts
the same class for every input scores exactly the chance rate on a balanced test set (10.0% on
CIFAR-10), which reads like "a weak network" on a curve. The share of the most frequent predicted
class says it directly: about ``1 / classes`` for a working network, 1.0 for a collapsed one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

COLLAPSE_SHARE = 0.99  # predictions count as collapsed when one class gets at least this share of them


@dataclass(frozen=True)
class Evaluation:
    """What one pass over a loader measured.

    Attributes:
        acc: fraction of correctly classified samples (top-1).
        samples: how many samples were seen.
        top_class: the most frequently predicted class.
        top_class_share: the fraction of samples predicted as ``top_class``.
    """

    acc: float
    samples: int
    top_class: int
    top_class_share: float

    def collapsed(self, share: float = COLLAPSE_SHARE) -> bool:
        """Whether (almost) every prediction is the same class."""
        return self.top_class_share >= share


# What ``evaluate`` measures, in the words the tools' records use (lesion.json, prune.md).
EVALUATION = "one forward pass per image in the network's own precision, eval-mode BN (not the run's test_flip)"


@torch.no_grad()
def evaluate(
    net: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    device: str | torch.device = "cpu",
    limit_batches: int | None = None,
) -> Evaluation:
    """Accuracy and prediction histogram in eval mode (BN running statistics), top-1.

    ``acc`` is micro-averaged top-1, as the classifier's ``test/acc``, but of one forward pass per image in the
    network's own precision: a run that tested with ``test_flip`` (the mean of an image's and its mirror's
    logits) or under mixed precision recorded a slightly different number for the same images. The analyses
    compare such accuracies with each other, never with the run's. ``limit_batches`` evaluates only the first
    batches (quick looks; the fractions are then of those). The network's train/eval mode is restored afterwards.
    """
    was_training = net.training
    net.eval()
    correct = total = 0
    predicted: Counter[int] = Counter()
    try:
        for index, (images, labels) in enumerate(loader):
            if limit_batches is not None and index >= limit_batches:
                break
            predictions = net(images.to(device)).argmax(dim=1).cpu()
            correct += int((predictions == labels).sum())
            total += len(labels)
            predicted.update(predictions.tolist())
    finally:
        net.train(was_training)
    if total == 0:
        raise ValueError("accuracy: the loader yielded no samples")
    top_class, top_count = predicted.most_common(1)[0]
    return Evaluation(correct / total, total, int(top_class), top_count / total)


def accuracy(
    net: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    device: str | torch.device = "cpu",
    limit_batches: int | None = None,
) -> float:
    """Fraction of correctly classified samples (``evaluate(...).acc``)."""
    return evaluate(net, loader, device, limit_batches).acc
