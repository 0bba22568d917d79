"""Small builders shared by the tests that train for a few steps."""

from __future__ import annotations

import lightning.pytorch as pl

from src.data import SyntheticDataModule


def tiny_data(**overrides) -> SyntheticDataModule:
    """A few hundred 16x16 images: enough to train a ResNet-8 for a handful of steps in seconds."""
    options = dict(num_classes=10, image_size=16, train_size=128, val_size=64, test_size=64, batch_size=32)
    return SyntheticDataModule(**{**options, **overrides})


def tiny_trainer(tmp_path, **overrides) -> pl.Trainer:
    options = dict(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    return pl.Trainer(**{**options, **overrides})


class KillAt(pl.Callback):
    """``kill -9`` this very process when training reaches ``step`` -- if ``$KILL_AT_STEP`` asks for it.

    A real SIGKILL (no cleanup, no checkpoint on the way out), at an exact step, so resume tests are
    deterministic. The environment switch lets the resumed run carry the same config without dying again.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        import os
        import signal

        if str(trainer.global_step) == os.environ.get("KILL_AT_STEP"):
            os.kill(os.getpid(), signal.SIGKILL)
