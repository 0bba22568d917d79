"""Stop a run whose training loss diverged, and record it as diverged instead of as a result.

A run with a learning rate far too large reaches a NaN or astronomically large loss within a few
steps; left alone it trains on, tests at chance level and its "accuracy per parameter" gets
averaged into a study (``lr 1000`` on CIFAR: train loss 3.7e20, finite, val loss NaN). ``DivergenceGuard``
checks the training loss after every optimizer step and, when it is not finite or far above where
it started (``max_loss_ratio`` x the median loss of the first ``reference_steps`` steps; 1000x by
default, which no normal run comes near: a classifier starts at about ln(classes)), records
``status: "diverged"``, ``diverged_step`` and ``diverged_reason`` in ``efficiency.json`` (through
``ParameterEfficiency.mark_diverged``) and raises ``TrainingDiverged``: no more steps, no
checkpoint of the broken weights, no test. The CLI prints the message as one ``error:`` line and
exits non-zero; the sweep shows the run as DIVERGED and does not retry it by itself.

The check keeps everything on the device and reads one flag back only every ``check_every_n_steps``
steps (a host sync per step would cost GPU runs time); the step it names is still the first bad
one, recorded on the device when it happened.
"""

from __future__ import annotations

import math
from typing import Any, cast

import lightning.pytorch as pl
import torch


class TrainingDiverged(RuntimeError):
    """The training loss diverged; the message names the step and why (one line)."""


class DivergenceGuard(pl.Callback):
    """Stop training on a non-finite loss, or (``max_loss_ratio``) on a loss far above its start.

    Args:
        enabled: ``false`` turns the check off entirely.
        max_loss_ratio: also stop when the loss exceeds this multiple of its start: the median loss of
            the first ``reference_steps`` steps (of those seen so far while fewer, the lower middle one:
            a run that explodes within them does not raise its own limit). The default, 1000, is
            generous: no normal run trips it. ``null`` checks finiteness only.
        reference_steps: how many first steps define the starting loss for ``max_loss_ratio``.
        check_every_n_steps: how often the device-side flag is read back (the step named is exact anyway).
    """

    def __init__(
        self,
        enabled: bool = True,
        max_loss_ratio: float | None = 1000.0,
        reference_steps: int = 10,
        check_every_n_steps: int = 10,
    ) -> None:
        if max_loss_ratio is not None and not max_loss_ratio > 1:
            raise ValueError(f"divergence.max_loss_ratio must be > 1 or null, got {max_loss_ratio}")
        if reference_steps < 1 or check_every_n_steps < 1:
            raise ValueError(
                f"divergence.reference_steps and check_every_n_steps must be >= 1, got "
                f"{reference_steps} and {check_every_n_steps}"
            )
        self.enabled = enabled
        self.max_loss_ratio = max_loss_ratio
        self.reference_steps = reference_steps
        self.check_every_n_steps = check_every_n_steps
        self._first_bad: torch.Tensor | None = None  # [step, loss, kind, start] of the first bad step; step -1: none
        self._start: torch.Tensor | None = None  # the starting loss: median of the first reference_steps losses
        self._window: list[torch.Tensor] = []
        self._restored_start: float | None = None  # a resumed run keeps the start of its first steps
        self._step: torch.Tensor | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        device = pl_module.device
        dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        self._first_bad = torch.tensor([-1.0, 0.0, 0.0, 0.0], device=device, dtype=dtype)
        start = self._restored_start if self._restored_start is not None else math.inf
        self._start = torch.tensor(start, device=device, dtype=dtype)
        self._step = torch.zeros((), device=device, dtype=dtype)  # filled in place: no host-to-device copy per step
        self._window = []
        if self._restored_start is not None:  # the window was filled before the run was interrupted
            self._window = [self._start] * self.reference_steps

    def state_dict(self) -> dict[str, Any]:
        full = self._start is not None and len(self._window) >= self.reference_steps
        return {"start": float(self._start) if full and self._start is not None else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored_start = state_dict.get("start")

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not self.enabled or not isinstance(loss, torch.Tensor) or self._first_bad is None:
            return
        step = trainer.global_step  # optimizer steps taken, this batch's included
        loss = loss.detach().to(self._first_bad.dtype).reshape(())
        bad = ~torch.isfinite(loss)
        kind = torch.where(bad, 1.0, 0.0)
        start = self._start if self._start is not None else torch.zeros_like(loss)
        if self.max_loss_ratio is not None and self._start is not None:
            too_high = torch.isfinite(loss) & (loss > self._start * self.max_loss_ratio)
            kind = torch.where(too_high, 2.0, kind)
            bad = bad | too_high
            if len(self._window) < self.reference_steps:
                self._window.append(loss)
                self._start = torch.stack(self._window).median()  # the lower middle value: robust to one spike
        first = self._first_bad
        step_tensor = cast(torch.Tensor, self._step)  # set with _first_bad in on_train_start
        record = torch.stack([step_tensor.fill_(float(step)), loss, kind, start])
        self._first_bad = torch.where(bad & (first[0] < 0), record, first)
        if step % self.check_every_n_steps == 0 or trainer.should_stop or step >= trainer.max_steps > 0:
            self.check(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check(trainer)  # before the epoch's checkpoint and validation

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.training or trainer.state.fn == "fit":
            self.check(trainer)  # before a validation (and the checkpoint after it) mid-epoch

    def check(self, trainer: pl.Trainer) -> None:
        """Read the flag back; on divergence record it and raise ``TrainingDiverged`` (on every rank)."""
        if not self.enabled or self._first_bad is None:
            return
        step, loss, kind, start = (float(value) for value in self._first_bad.cpu())
        diverged = step >= 0
        if trainer.world_size > 1:  # all ranks stop together, or the others wait for them forever
            diverged = trainer.strategy.reduce_boolean_decision(diverged, all=False)
        if not diverged:
            return
        if step < 0:
            step, reason = float(trainer.global_step), "the training loss diverged on another rank"
        elif kind == 2:
            reason = f"training loss {loss:.4g} is over {self.max_loss_ratio:g}x its start ({start:.4g})"
        else:
            reason = f"training loss is {loss}"
        message = f"training diverged at step {int(step)}: {reason}; the run stops here and is not tested"
        self._first_bad = None
        for callback in trainer.callbacks:  # type: ignore[attr-defined]  # set by Lightning's callback connector
            mark = getattr(callback, "mark_diverged", None)
            if callable(mark):
                mark(int(step), reason)
        raise TrainingDiverged(message)
