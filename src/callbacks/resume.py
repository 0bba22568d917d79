"""What a resumed run needs beyond Lightning's checkpointing: a fresh last.ckpt, random state, a validated last step.

* ``RunCheckpoint``: Lightning's ModelCheckpoint (2.6) rewrites ``last.ckpt`` only when a top-k
  checkpoint was saved at the same step -- after an epoch that did not improve ``val/acc`` the
  "last" checkpoint is stale, and a killed run would resume from epochs ago. This one rewrites
  it at every save point.
* ``RandomState`` saves the global random generators (torch, CUDA, NumPy, Python) in every
  checkpoint and restores them when the run resumes, so the shuffling order and random
  augmentations drawn after an epoch-end checkpoint are the ones the uninterrupted run draws.
  (Lightning restores model, optimizer, schedulers, loop counters and callback states, but not
  these.) Exact for epoch-end checkpoints (``last.ckpt``, written after each validation) with
  in-process data loading (``num_workers: 0``); loader worker processes keep their own
  generators, and a mid-epoch checkpoint (a SLURM ``hpc_ckpt``) restarts the data order of its
  epoch, so those resume correctly but not bit for bit.
* ``ValidateLastStep``: with ``max_steps`` the last epoch is usually cut short, and Lightning
  never validates (or checkpoints) a partial epoch. This asks for a stop at the last step,
  which Lightning answers with a validation run -- and ModelCheckpoint saves after it.
"""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint


def collect_random_state() -> dict[str, Any]:
    """The global generators' state, in types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, python_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "python": [version, list(python_state), gauss],
    }


def restore_random_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, python_state, gauss = state["python"]
    random.setstate((version, tuple(python_state), gauss))


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose ``last.ckpt`` always holds the newest state (see the module docstring)."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._refresh_last(trainer, at_train_epoch_end=False)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._refresh_last(trainer, at_train_epoch_end=True)

    def _refresh_last(self, trainer: pl.Trainer, at_train_epoch_end: bool) -> None:
        # _should_skip_saving_checkpoint is also true when this step was saved already (e.g. a new best + last).
        if (
            self.save_last
            and not self._should_skip_saving_checkpoint(trainer)
            and self._should_save_on_train_epoch_end(trainer) == at_train_epoch_end
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class RandomState(pl.Callback):
    """Save the global random state in checkpoints; restore it on resume (see the module docstring)."""

    def state_dict(self) -> dict[str, Any]:
        return collect_random_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores callbacks after the model exists and before the first training batch is
        # drawn; nothing between here and there draws random numbers (the sanity check is isolated).
        restore_random_state(state_dict)


class ValidateLastStep(pl.Callback):
    """Validate (and so checkpoint) the model at ``max_steps`` even when that step ends no epoch."""

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if 0 < trainer.max_steps <= trainer.global_step and not trainer.should_stop:
            trainer.should_stop = True  # Lightning validates when a stop is requested (epoch loop)
