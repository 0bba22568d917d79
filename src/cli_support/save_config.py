"""Saving the resolved config with a run, beside any config an earlier command saved there, and in every checkpoint."""

from __future__ import annotations

import os
from typing import Any, cast

import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback

from src import runs
from src.files import free_path


class KeepingSaveConfigCallback(SaveConfigCallback):
    """Save ``config.yaml`` with the run; if the log directory already has one, save ``config-1.yaml``...

    Lightning's callback aborts (or overwrites) when the file exists, which happens when a
    run reuses a log directory (a fixed logger version, a resumed run).
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self.already_saved and self.save_to_log_dir:
            # A collective call under DDP: every rank must make it. Set here (Lightning's own setup asserts so).
            log_dir = cast(str, trainer.log_dir)
            free = free_path(log_dir, self.config_filename) if trainer.is_global_zero else None
            name = os.path.relpath(free, log_dir) if free is not None else None
            self.config_filename = cast(str, trainer.strategy.broadcast(name))  # rank zero's name, on every rank
            if trainer.is_global_zero:  # evaluations/<subcommand>-config.yaml: its folder may not exist yet
                os.makedirs(os.path.dirname(os.path.join(log_dir, self.config_filename)), exist_ok=True)
        super().setup(trainer, pl_module, stage)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """Every checkpoint carries the run's config: ``test --ckpt_path X`` needs nothing else."""
        if not hasattr(self, "_config_dict"):
            self._config_dict = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        checkpoint[runs.RUN_CONFIG_KEY] = self._config_dict
        checkpoint["run_model_class"] = f"{type(pl_module).__module__}.{type(pl_module).__qualname__}"
