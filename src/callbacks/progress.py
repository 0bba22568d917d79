"""Plain progress lines for logs: what a cluster job's output file needs instead of a live bar.

A Rich or tqdm bar redraws one terminal line; redirected to a file (every batch job) it shows
nothing useful until the run ends. :class:`LineProgress` prints an ordinary, flushed line every
``interval_s`` seconds of training, one at the end of each training epoch, and one after each
validation / test with its epoch-level metrics::

    [train] epoch 3 step 1200/64000 (1.9%) 412.3 it/s eta 2:34:10 train/loss_step=0.8123 ...
    [val] epoch 3 step 1408 val/acc=0.8121 val/loss=0.5532

Only rank zero prints. The CLI uses it automatically when stdout is not a terminal.
"""

from __future__ import annotations

import math
import sys
import time
from datetime import timedelta
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

STEP_LOSS = ("train/loss_step", "train/loss_epoch")  # not progress-bar values: src.modules.classifier._log_training


def training_loss(trainer: pl.Trainer) -> dict[str, float]:
    """The training loss of the last step (and of the last epoch), read from the device now: call it only when
    drawing, never per step -- on a GPU each read waits for every kernel queued before it."""
    found = {name: trainer.callback_metrics.get(name) for name in STEP_LOSS}
    return {name: float(value) for name, value in found.items() if value is not None}


class RichProgress(RichProgressBar):
    """Lightning's Rich bar (a terminal), showing the training loss as read at the logging steps only."""

    def __init__(self) -> None:
        super().__init__()
        self._loss: dict[str, float] = {}
        self._read_at: int | None = None  # the step the loss was read at: once per step at most

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """Lightning's metrics and the training loss, read at a logging step (or until there is one), at most once
        per step: the bar redraws on every training and validation batch, and a validation keeps the step."""
        step, every = trainer.global_step, max(getattr(trainer, "log_every_n_steps", 1), 1)  # set by Lightning
        if step != self._read_at and (not self._loss or step % every == 0):
            self._loss, self._read_at = training_loss(trainer), step
        return {**super().get_metrics(trainer, pl_module), **self._loss}


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class LineProgress(ProgressBar):
    """A progress "bar" of plain, timestamped-by-order lines.

    Args:
        interval_s: seconds between training progress lines (0: one line per step).
    """

    def __init__(self, interval_s: float = 30.0) -> None:
        super().__init__()
        if interval_s < 0:
            raise ValueError(f"interval_s must be >= 0, got {interval_s}")
        self.interval_s = interval_s
        self._enabled = True
        self._last_line = 0.0
        self._start = 0.0
        self._start_step = 0

    # ProgressBar's contract: the trainer turns bars off on non-zero ranks and in tuners.
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._enabled:
            kwargs.setdefault("file", sys.stdout)
            print(*args, flush=True, **kwargs)

    def _metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prefix: str = "") -> str:
        items = {**self.get_metrics(trainer, pl_module), **(training_loss(trainer) if prefix == "train/" else {})}
        return " ".join(f"{name}={_format(value)}" for name, value in items.items() if name.startswith(prefix))

    def _train_line(self, trainer: pl.Trainer, pl_module: pl.LightningModule, label: str) -> str:
        step, elapsed = trainer.global_step, time.monotonic() - self._start
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        if total is None and trainer.max_epochs not in (None, -1) and math.isfinite(self.total_train_batches):
            total = int(trainer.max_epochs * self.total_train_batches // trainer.accumulate_grad_batches)
        parts = [f"[{label}] epoch {trainer.current_epoch}", f"step {step}" + (f"/{total}" if total else "")]
        if total:
            parts.append(f"({100 * step / total:.1f}%)")
        rate = (step - self._start_step) / elapsed if elapsed > 0 else 0.0
        if rate > 0:
            parts.append(f"{rate:.3g} it/s")
            if total:
                parts.append(f"eta {timedelta(seconds=round((total - step) / rate))}")
        parts.append(self._metrics(trainer, pl_module, prefix="train/"))
        return " ".join(part for part in parts if part)

    # ---------------------------------------------------------------- training
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = self._last_line = time.monotonic()
        self._start_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.monotonic()
        if now - self._last_line >= self.interval_s:
            self._last_line = now
            self.print(self._train_line(trainer, pl_module, "train"))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_line = time.monotonic()
        self.print(self._train_line(trainer, pl_module, "train epoch end"))

    # ---------------------------------------------------------------- evaluation
    def _eval_line(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> str:
        prefix = f"[{split}] epoch {trainer.current_epoch} step {trainer.global_step}"
        return f"{prefix} {self._metrics(trainer, pl_module, prefix=f'{split}/')}".rstrip()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.print(self._eval_line(trainer, pl_module, "val"))

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.print(self._eval_line(trainer, pl_module, "test"))

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.print(f"[predict] {self.total_predict_batches_current_dataloader} batches done")
