"""Command line: ``python -m src.cli fit|validate|test|predict --config configs/....yaml``.

LightningCLI with this project's defaults:

* the model is ``ImageClassifier`` (``--model.arch resnet56``); the DataModule is chosen by
  short class name (``--data SyntheticDataModule``, ``--data CIFARDataModule``), and its
  ``num_classes`` and ``in_channels`` are linked into the model;
* TensorBoard logs under ``lightning_logs/<name>/version_N`` (a new version per run), Rich
  progress bar, learning-rate monitor;
* always-on callbacks configured from YAML under their own keys: ``checkpoint``
  (best by ``val/acc`` + last) and ``efficiency`` (parameters, MACs, throughput, accuracy per
  parameter, ``efficiency.json``);
* ``test_after_fit: true`` tests the best checkpoint right after ``fit``, in the same run
  directory;
* the resolved config is saved with each run and never overwrites an earlier one.
"""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from src.callbacks import ParameterEfficiency, TrainingDiagnostics
from src.callbacks.efficiency import free_path
from src.data import DatasetNotFoundError, ImageClassificationDataModule
from src.data.cifar import CIFARDataModule  # noqa: F401  (registers the short name)
from src.data.synthetic import SyntheticDataModule  # noqa: F401  (registers the short name)
from src.modules import ImageClassifier

LOG_ROOT = "lightning_logs"


class KeepingSaveConfigCallback(SaveConfigCallback):
    """Save ``config.yaml`` with the run; if the log directory already has one, save ``config-1.yaml``...

    Lightning's callback aborts (or overwrites) when the file exists, which happens when a
    run reuses a log directory (a fixed logger version, a resumed run).
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self.already_saved and self.save_to_log_dir:
            log_dir = trainer.log_dir  # a collective call under DDP: every rank must make it
            name = os.path.basename(free_path(log_dir, self.config_filename)) if trainer.is_global_zero else None
            self.config_filename = trainer.strategy.broadcast(name)
        super().setup(trainer, pl_module, stage)


class ResNetCLI(LightningCLI):
    """LightningCLI with the links, defaults and extra callbacks described in the module docstring."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_channels", "model.in_channels", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "epoch{epoch:03d}-step{step}-val_acc{val/acc:.4f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(ParameterEfficiency, "efficiency")
        parser.add_lightning_class_args(TrainingDiagnostics, "diagnostics")  # off unless diagnostics.enabled: true
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="After fit, test the best checkpoint (by checkpoint.monitor) in the same run directory.",
        )

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Add the Rich progress bar and LR monitor unless the config turns off what they need."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer_config = config["trainer"]
        user_callbacks = trainer_config.get("callbacks") or []
        extra = []
        if trainer_config.get("enable_progress_bar") is not False and not any(
            isinstance(callback, ProgressBar) for callback in user_callbacks
        ):
            extra.append(RichProgressBar())
        if trainer_config.get("logger") is not False:  # None means Lightning's default logger
            extra.append(LearningRateMonitor(logging_interval="step"))
        self.trainer_defaults["callbacks"] = extra
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        if self.config[self.subcommand].get("test_after_fit"):
            checkpoint = self.trainer.checkpoint_callback
            ckpt_path = "best" if checkpoint is not None and checkpoint.best_model_path else None
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path)


def trainer_defaults() -> dict:
    return {
        "logger": {
            "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
            "init_args": {"save_dir": LOG_ROOT, "name": "default", "default_hp_metric": False},
        },
        "default_root_dir": LOG_ROOT,
    }


def main(args: list[str] | None = None, run: bool = True) -> ResNetCLI:
    """Run the CLI (``args`` as on the command line; ``None`` reads ``sys.argv``)."""
    try:
        return ResNetCLI(
            ImageClassifier,
            ImageClassificationDataModule,
            subclass_mode_data=True,
            save_config_callback=KeepingSaveConfigCallback,
            trainer_defaults=trainer_defaults(),
            auto_configure_optimizers=False,
            args=args,
            run=run,
        )
    except DatasetNotFoundError as error:
        # A user's missing data, not a bug: say what to do, without a stack trace.
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
