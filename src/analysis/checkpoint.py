"""Checkpoint -> (ImageClassifier, DataModule) for ``python -m src.lesion`` and ``python -m src.prune``.

The loading itself is ``src.runs.load_checkpoint_run`` (the model from its hyperparameters, the data
from the configuration every checkpoint of ``src.cli`` carries). This module adds what the tools need
around it: one clear message for a file that is not a classifier checkpoint, a ``--config`` YAML with a
``data:`` section to evaluate on other data (or for checkpoints that carry no data configuration), and
where each tool writes (``<run>/<tool>/``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.data import DataLoader

from src import runs
from src.class_paths import UntrustedClassError, trusted_class
from src.data import ImageClassificationDataModule
from src.modules import ImageClassifier


class CheckpointError(ValueError):
    """The file is not a checkpoint these tools can use; the message says what it is and what is needed."""


def _classifier_checkpoint(path: Path) -> Callable[[dict[str, Any]], None]:
    """What the tools need of a checkpoint's contents: an ImageClassifier's (an ``arch`` and its weights)."""

    def check(checkpoint: dict[str, Any]) -> None:
        hparams = checkpoint.get("hyper_parameters")
        if not isinstance(hparams, dict) or "arch" not in hparams:
            what = f"hyper_parameters {sorted(hparams)}" if isinstance(hparams, dict) else "no hyper_parameters"
            raise CheckpointError(
                f"{str(path)!r} is not a checkpoint of src.modules.ImageClassifier ({what}; expected an 'arch' "
                "such as resnet56): train one with python -m src.cli fit"
            )

    return check


def _data_class(class_path: str, source: str) -> type[ImageClassificationDataModule]:
    full = class_path if "." in class_path else f"src.data.{class_path}"  # a short name: one of src.data's
    try:
        return trusted_class(full, ImageClassificationDataModule, "data.class_path", source)
    except UntrustedClassError as error:
        raise CheckpointError(str(error)) from None


def _datamodule_from_config(config_path: Path) -> Any:
    if not config_path.is_file():
        raise CheckpointError(f"config {str(config_path)!r} does not exist")
    data = (yaml.safe_load(config_path.read_text()) or {}).get("data")
    if not isinstance(data, dict) or "class_path" not in data:
        raise CheckpointError(f"{str(config_path)!r} has no data: section with a class_path")
    return _data_class(data["class_path"], str(config_path))(**(data.get("init_args") or {}))


def load(checkpoint_path: str | os.PathLike, config: str | os.PathLike | None = None) -> tuple[ImageClassifier, Any]:
    """The trained classifier (eval mode, on CPU) and its DataModule, not yet set up.

    The data is the run's own (carried by the checkpoint, else its run's ``config.yaml``) unless
    ``config`` names a YAML file with a ``data:`` section.
    """
    path = Path(checkpoint_path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not exist (expected a .ckpt written by python -m src.cli fit)"
        )
    try:  # read as data (weights_only=True), like every checkpoint: a file from elsewhere never runs code here
        model, datamodule = runs.load_checkpoint_run(str(path), check=_classifier_checkpoint(path))
    except runs.UnreadableCheckpoint as error:
        kind = "a checkpoint these tools accept" if error.why == runs.REFUSED_PICKLE else "a PyTorch checkpoint"
        raise CheckpointError(f"{str(path)!r} is not {kind} ({error.why})") from None
    except (runs.RunError, UntrustedClassError) as error:
        raise CheckpointError(str(error)) from None
    if not isinstance(model, ImageClassifier):
        raise CheckpointError(f"{str(path)!r} holds a {type(model).__name__}, not an ImageClassifier")
    run_dir = runs.run_dir_of_checkpoint(str(path))
    saved_config = Path(run_dir) / runs.CONFIG_FILE if run_dir is not None else None
    if config is not None:
        datamodule = _datamodule_from_config(Path(config))
    elif datamodule is None and saved_config is not None and saved_config.is_file():
        datamodule = _datamodule_from_config(saved_config)  # a checkpoint saved outside the CLI, in a run dir
    elif datamodule is None:
        raise CheckpointError(
            f"{str(path)!r} does not say which data it was trained on (not written by python -m src.cli fit); "
            "pass --config with a YAML file that has a data: section (e.g. the config you trained with)"
        )
    if config is None and run_dir is not None and hasattr(datamodule, "trained_with"):
        datamodule.trained_with(run_dir)  # the run's own normalisation, not one recomputed from the folder now
    return model, datamodule


def output_dir(checkpoint_path: str | os.PathLike, tool: str) -> Path:
    """Where a tool writes for this checkpoint by default: ``<run>/<tool>/`` (the run of the checkpoint).

    A ``<run>/<tool>`` that is a symbolic link is refused (``CheckpointError``): a run folder received from
    elsewhere could otherwise send the tool's files into any folder the user can write (``--out`` chooses one).
    """
    run_dir = runs.run_dir_of_checkpoint(str(checkpoint_path))
    out = Path(run_dir if run_dir is not None else Path(checkpoint_path).parent) / tool
    if out.is_symlink():
        raise CheckpointError(
            f"'{out}' is a symbolic link (to '{os.readlink(out)}'): {tool} writes only into a real folder of the "
            f"run, so a run folder from elsewhere cannot send its files to another place. Remove the link (the "
            f"folder is made), or name the folder to write into with --out DIR."
        )
    return out


def split_loader(datamodule: Any, split: str) -> Any:
    """The DataModule's loader for ``split`` (``test``, ``val`` or ``train``), after prepare/setup."""
    stages = {"test": ("test", "test_dataloader"), "val": ("validate", "val_dataloader"),
              "train": ("fit", "train_dataloader")}  # fmt: skip
    if split not in stages:
        raise ValueError(f"split must be one of {sorted(stages)}, got {split!r}")
    stage, method = stages[split]
    datamodule.prepare_data()
    datamodule.setup(stage)
    return workers_per_pass(getattr(datamodule, method)())


def workers_per_pass(loader: Any) -> Any:
    """``loader`` with worker processes that start afresh at every pass over it.

    The analyses read a loader several times, each pass under its own seed (BN re-estimated for every lesion, a
    fine-tune per pruned copy): "same seed, same batches" is what makes their comparisons paired. A training
    loader's persistent workers keep their random state from one pass to the next, so each pass augmented
    differently (an audit: BN means up to 0.56 apart between two identical calls with one worker). Fresh workers
    take their seeds from the main process's seeded generator at each pass. Same batches, order and transforms.
    """
    if not isinstance(loader, DataLoader) or not loader.persistent_workers:
        return loader
    return DataLoader(
        loader.dataset,
        batch_sampler=loader.batch_sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor,
        persistent_workers=False,
    )


def pick_device(name: str) -> torch.device:
    """``auto``: the first GPU if there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
