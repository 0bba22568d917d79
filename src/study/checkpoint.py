"""Checkpoint -> (ImageClassifier, DataModule) for ``python -m src.lesion`` and ``python -m src.prune``.

TEMPORARY ADAPTER -- to be replaced by ``src.runs``' checkpoint loader when the branches merge
(that loader reads the data configuration the DataModule saves into the checkpoint). Until then:

* the model comes from ``ImageClassifier.load_from_checkpoint``, after a check that the file
  is a checkpoint of this project's classifier at all (one clear message otherwise);
* the data comes from a YAML file with a ``data:`` section (``class_path`` + ``init_args``, as
  in ``configs/`` and in the ``config.yaml`` every run saves): ``--config`` if given, else
  the ``config.yaml`` of the run the checkpoint belongs to (``<run>/checkpoints/x.ckpt``).

Only ``load`` and ``output_dir`` are used by the commands; swapping them is the whole merge.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch
import yaml

from src.data import ImageClassificationDataModule
from src.modules import ImageClassifier


class CheckpointError(ValueError):
    """The file is not a checkpoint these tools can use; the message says what it is and what is needed."""


def _read_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not exist (expected a .ckpt written by python -m src.cli fit)"
        )
    try:
        # Lightning checkpoints pickle their hyperparameters; like Lightning, trust the user's own file.
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001  (any unreadable file gets the same one-line message)
        raise CheckpointError(f"{str(path)!r} is not a PyTorch checkpoint ({type(error).__name__}: {error})") from None
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hparams, dict) or "arch" not in hparams or "state_dict" not in checkpoint:
        what = f"hyper_parameters {sorted(hparams)}" if isinstance(hparams, dict) else "no hyper_parameters"
        raise CheckpointError(
            f"{str(path)!r} is not a checkpoint of src.modules.ImageClassifier ({what}; expected an 'arch' "
            "such as resnet56): train one with python -m src.cli fit"
        )
    return checkpoint


def _data_class(class_path: str) -> type[ImageClassificationDataModule]:
    module_name, _, name = class_path.rpartition(".")
    module = importlib.import_module(module_name or "src.data")  # a short name: one of src.data's
    cls = getattr(module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, ImageClassificationDataModule)):
        raise CheckpointError(f"data class_path {class_path!r} is not an ImageClassificationDataModule")
    return cls


def _run_config(path: Path) -> Path | None:
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    candidate = run_dir / "config.yaml"
    return candidate if candidate.is_file() else None


def load(checkpoint_path: str | os.PathLike, config: str | os.PathLike | None = None) -> tuple[ImageClassifier, Any]:
    """The trained classifier (eval mode, on CPU) and its DataModule, not yet set up."""
    path = Path(checkpoint_path)
    _read_checkpoint(path)
    model = ImageClassifier.load_from_checkpoint(path, map_location="cpu")
    if not isinstance(model, ImageClassifier):
        raise CheckpointError(f"{str(path)!r} holds a {type(model).__name__}, not an ImageClassifier")
    model.eval()

    config_path = Path(config) if config is not None else _run_config(path)
    if config_path is None:
        raise CheckpointError(
            f"no data configuration for {str(path)!r}: its run directory has no config.yaml; pass --config with a "
            "YAML file that has a data: section (e.g. the config you trained with)"
        )
    if not config_path.is_file():
        raise CheckpointError(f"config {str(config_path)!r} does not exist")
    data = (yaml.safe_load(config_path.read_text()) or {}).get("data")
    if not isinstance(data, dict) or "class_path" not in data:
        raise CheckpointError(f"{str(config_path)!r} has no data: section with a class_path")
    datamodule = _data_class(data["class_path"])(**(data.get("init_args") or {}))
    return model, datamodule


def output_dir(checkpoint_path: str | os.PathLike, tool: str) -> Path:
    """Where a tool writes for this checkpoint by default: ``<run>/<tool>/`` (the run of the checkpoint)."""
    path = Path(checkpoint_path)
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return run_dir / tool


def split_loader(datamodule: Any, split: str) -> Any:
    """The DataModule's loader for ``split`` (``test``, ``val`` or ``train``), after prepare/setup."""
    stages = {"test": ("test", "test_dataloader"), "val": ("validate", "val_dataloader"),
              "train": ("fit", "train_dataloader")}  # fmt: skip
    if split not in stages:
        raise ValueError(f"split must be one of {sorted(stages)}, got {split!r}")
    stage, method = stages[split]
    datamodule.prepare_data()
    datamodule.setup(stage)
    return getattr(datamodule, method)()


def pick_device(name: str) -> torch.device:
    """``auto``: the first GPU if there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
