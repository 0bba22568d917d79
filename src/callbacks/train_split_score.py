"""The training split scored as a test would score it: final weights, eval mode, no augmentation.

Why: He et al.'s degradation claim (Fig. 6) is about *training* error: a deeper plain net fits its own
training set worse. The running training accuracy that ``train/acc`` logs mixes weights from across the
epoch, dropout-free but augmented and in train-mode batch norm; it is the curve of Fig. 6, not a clean
final number. ``score_train_split`` gives that number: every training image once, centre (unaugmented),
batch norm in eval mode, the weights the fit ended with. ``ParameterEfficiency(score_train_split=True)``
records it as ``train_eval_acc`` / ``train_eval_loss`` (plain cross-entropy, no label smoothing).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader


def clean_train_loader(datamodule: Any) -> DataLoader | None:
    """The DataModule's ``clean_train_dataloader()`` (training images, evaluation transforms), if it has one."""
    make = getattr(datamodule, "clean_train_dataloader", None)
    return make() if callable(make) else None


@torch.no_grad()
def score_train_split(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any] | None:
    """``{"train_eval_acc", "train_eval_loss", "train_eval_samples", "train_eval_step"}``, or ``None`` when the
    DataModule cannot give its training split without augmentation. Every process scores its share (the
    DataModule's unpadded evaluation sampler); the sums are reduced, so each image counts once."""
    loader = clean_train_loader(trainer.datamodule)  # type: ignore[attr-defined]
    if loader is None:
        return None
    was_training = pl_module.training
    pl_module.eval()
    device = pl_module.device
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # correct, loss sum, samples
    try:
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with trainer.precision_plugin.forward_context():
                logits = pl_module(images)
            loss = F.cross_entropy(logits.float(), labels, reduction="sum")
            sums += torch.stack(
                [(logits.argmax(-1) == labels).sum().double(), loss.double(), torch.tensor(len(labels), device=device)]
            ).to(sums.dtype)
    finally:
        pl_module.train(was_training)
    sums = trainer.strategy.reduce(sums, reduce_op="sum")
    correct, loss_sum, samples = (float(value) for value in sums)
    return {
        "train_eval_acc": correct / samples if samples else None,
        "train_eval_loss": loss_sum / samples if samples else None,
        "train_eval_samples": int(samples),
        "train_eval_step": trainer.global_step,
    }
