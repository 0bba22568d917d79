"""Command line: ``python -m src.cli fit|validate|test|predict --config configs/....yaml``.

LightningCLI with this project's defaults:

* the model is ``ImageClassifier`` (``--model.arch resnet56``); the DataModule is chosen by
  short class name (``--data SyntheticDataModule``, ``--data CIFARDataModule``), and its
  ``num_classes`` and ``in_channels`` are linked into the model;
* one directory per run (``src.runs`` describes it): ``--run_dir DIR``, or a fresh
  ``lightning_logs/<logger name>/version_N``; TensorBoard, checkpoints, config, ``efficiency.json``
  and Lightning's SLURM requeue checkpoints all go there (it is the Trainer's ``default_root_dir``),
  so nothing one run writes can be picked up by another; CSV, W&B and MLflow loggers get one logger
  run per run directory (``src.cli_support.loggers``), and every run writes ``scalars.csv``, its curves whatever
  the logger (``src.callbacks.metrics_record``);
* ``fit --ckpt_path last|FILE`` continues *that* run in its own directory (weights, optimizer,
  schedule, loop counters, random state, best checkpoint, efficiency record); ``validate``,
  ``test`` and ``predict`` need nothing but ``--ckpt_path``: the checkpoint carries the config;
* Rich progress bar in a terminal (plain progress lines when stdout is a file), learning-rate monitor;
* always-on callbacks configured from YAML under their own keys: ``checkpoint``
  (best by ``val/acc`` + last) and ``efficiency`` (parameters, MACs, throughput, accuracy per
  parameter, ``efficiency.json``);
* ``test_after_fit: true`` tests the best checkpoint right after ``fit``, in the same run
  directory;
* the resolved config is saved with each run and never overwrites an earlier one.

The CLI class itself is ``src.cli_support.lightning_cli.ResNetCLI``; this file is the command.
"""

from __future__ import annotations

import torch

from src import runs
from src.callbacks.divergence import TrainingDiverged
from src.cli_support import run_dirs
from src.cli_support.lightning_cli import ResNetCLI, cli_arguments
from src.cli_support.messages import user_error
from src.data import BatchSizeError, DataError, DatasetNotFoundError
from src.files import disk_error_message
from src.modules.captured_step import CaptureError
from src.modules.classifier import NetOutputError

USER_ERRORS = (
    DatasetNotFoundError,
    DataError,
    BatchSizeError,
    runs.RunError,
    TrainingDiverged,
    CaptureError,
    NetOutputError,
)


def main(args: list[str] | None = None, run: bool = True) -> ResNetCLI:
    """Run the CLI (``args`` as on the command line; ``None`` reads ``sys.argv``)."""
    try:
        return ResNetCLI(**cli_arguments(args), run=run)
    except Exception as error:
        # A user's mistake or missing or unusable data, not a bug: say what to do, without a stack trace.
        mistake = user_error(error, USER_ERRORS)
        if mistake is None:
            disk = disk_error_message(error)  # a full or read-only disk
            if disk is None:
                raise
            raise SystemExit(f"error: {disk}") from None
        raise SystemExit(f"error: {mistake}") from None
    finally:
        run_dirs.forget_fresh_run_dir()  # called in-process (a notebook, a test): the next run starts afresh
        if run and torch.distributed.is_available() and torch.distributed.is_initialized():
            # Shut the process group down before the interpreter does: left to exit, a DDP rank can abort
            # in a communication thread's destructor ("terminate called without an active exception").
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
