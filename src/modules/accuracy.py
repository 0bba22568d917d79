"""The classifier's own accuracies, top-1 and top-k, counted on the device.

A GPU waits for every value the host reads. torchmetrics' ``MulticlassAccuracy(top_k=5)`` one-hot encodes the
labels, and ``one_hot`` checks their range on the host: two reads per validation or test batch (issue 29). Here a
hit is "the label is among the k largest logits", counted with ``topk`` and a comparison that stay on the device;
the epoch's number is hits / images from exact integer counts, summed over DDP ranks by torchmetrics -- the micro
accuracy ``MulticlassAccuracy(average="micro")`` gives, without its reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric


def topk_hits(logits: Tensor, labels: Tensor, ks: Sequence[int]) -> dict[int, Tensor]:
    """``{k: bool tensor of shape (batch,)}``: whether each label is among the k largest logits of its row.

    Ties are broken as torchmetrics breaks them, so the numbers are its numbers: top-1 is ``argmax`` (the first
    largest logit; ``topk(1)`` may pick another of equal value, and bf16 logits tie), top-k ``topk``.
    """
    hits = {}
    if 1 in ks:
        hits[1] = logits.argmax(dim=-1) == labels
    if max(ks) > 1:
        ranked = logits.topk(max(ks), dim=-1).indices == labels.unsqueeze(-1)
        hits.update({k: ranked[:, :k].any(dim=-1) for k in ks if k > 1})
    return {k: hits[k] for k in ks}


class TopKAccuracy(Metric):
    """Micro top-k accuracy over an epoch: hits / images, both exact counts that stay on the device."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    hits: Tensor
    seen: Tensor

    def __init__(self, top_k: int = 1) -> None:
        super().__init__()
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        self.top_k = top_k
        self.add_state("hits", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("seen", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, logits: Tensor, labels: Tensor) -> None:
        self.hits += topk_hits(logits, labels, [self.top_k])[self.top_k].sum()
        self.seen += labels.numel()

    def compute(self) -> Tensor:
        return self.hits.float() / self.seen
