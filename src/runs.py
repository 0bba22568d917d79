"""Run directories: the one place that knows their layout.

A *run* is one training of one configuration. Everything it writes lives in one directory::

    <run_dir>/
      config.yaml            the resolved config (a resumed run adds config-1.yaml, ... beside it)
      hparams.yaml           the model's hyperparameters (Lightning)
      efficiency.json        parameters, MACs, accuracy per parameter (one record, continued on resume)
      events.out.tfevents.*  TensorBoard
      predictions.csv        written by ``predict``
      checkpoints/           best-by-val ``epoch...-step...-val_acc....ckpt`` and ``last.ckpt``
      hpc_ckpt_<N>.ckpt      Lightning's SLURM requeue checkpoints (the run directory is the Trainer's
                             ``default_root_dir``, so no other run ever sees them)

The directory is ``--run_dir DIR`` when given (a sweep or a SLURM job names it), else a fresh
``lightning_logs/<logger name>/version_N``. The CLI, the sweep, the report and the checkpoint
tools (lesion, pruning) find checkpoints and saved files through the functions here and never
build these paths by hand.
"""

from __future__ import annotations

import glob
import importlib
import json
import os
import re
from typing import Any

import torch
import yaml

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
CONFIG_FILE = "config.yaml"
EFFICIENCY_FILE = "efficiency.json"
PREDICTIONS_FILE = "predictions.csv"
HPC_PREFIX = "hpc_ckpt_"
RUN_CONFIG_KEY = "run_config"  # the checkpoint entry holding the run's resolved config (see src.cli)
DEFAULT_MODEL_CLASS = "src.modules.classifier.ImageClassifier"

_HPC_PATTERN = re.compile(rf"^{HPC_PREFIX}(\d+)\.ckpt$")
_VERSION_PATTERN = re.compile(r"^version_(\d+)$")


class RunError(Exception):
    """A user's mistake about runs or checkpoints: the CLI prints the message on one line and exits non-zero."""


# ---------------------------------------------------------------- naming
def next_version_dir(save_dir: str, name: str) -> str:
    """``save_dir/name/version_N`` with N one above the largest existing version (0 when none)."""
    root = os.path.join(save_dir, name) if name else save_dir
    versions = [-1]
    if os.path.isdir(root):
        versions += [int(m[1]) for entry in os.listdir(root) if (m := _VERSION_PATTERN.match(entry))]
    return os.path.join(root, f"version_{max(versions) + 1}")


def checkpoint_dir(run_dir: str) -> str:
    """Where ModelCheckpoint writes the run's best and last checkpoints."""
    return os.path.join(run_dir, CHECKPOINT_DIR)


def run_dir_of_checkpoint(path: str) -> str | None:
    """The run directory a checkpoint file belongs to, from its place in the layout; ``None`` if it has none.

    ``<run>/checkpoints/*.ckpt`` and ``<run>/hpc_ckpt_<N>.ckpt`` belong to ``<run>``.
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    if os.path.basename(parent) == CHECKPOINT_DIR:
        return os.path.dirname(parent)
    if _HPC_PATTERN.match(os.path.basename(path)):
        return parent
    return None


# ---------------------------------------------------------------- finding checkpoints
def last_checkpoint(run_dir: str) -> str | None:
    """``<run>/checkpoints/last.ckpt`` if it exists."""
    path = os.path.join(checkpoint_dir(run_dir), LAST_CHECKPOINT)
    return path if os.path.isfile(path) else None


def hpc_checkpoints(run_dir: str) -> list[str]:
    """The run's SLURM requeue checkpoints, oldest (lowest N) first."""
    found = []
    for path in glob.glob(os.path.join(glob.escape(run_dir), f"{HPC_PREFIX}*.ckpt")):
        match = _HPC_PATTERN.match(os.path.basename(path))
        if match:
            found.append((int(match[1]), path))
    return [path for _, path in sorted(found)]


def resume_checkpoint(run_dir: str) -> str | None:
    """The checkpoint to continue the run from: the newest (by modification time) of ``last.ckpt`` and hpc ones.

    A requeued job may hold an hpc checkpoint from an earlier preemption *and* a newer ``last.ckpt``
    written after it; Lightning on its own would take the hpc one and lose the progress in between.
    """
    candidates = [p for p in [last_checkpoint(run_dir), *hpc_checkpoints(run_dir)] if p]
    return max(candidates, key=os.path.getmtime) if candidates else None


def has_checkpoints(run_dir: str) -> bool:
    """Whether a run has already saved anything it could be resumed from."""
    directory = checkpoint_dir(run_dir)
    saved = os.path.isdir(directory) and any(name.endswith(".ckpt") for name in os.listdir(directory))
    return saved or bool(hpc_checkpoints(run_dir))


def best_checkpoint(run_dir: str) -> str | None:
    """The best-by-monitor checkpoint, as recorded by ModelCheckpoint in the run's newest checkpoint.

    The recorded path is taken relative to the run's ``checkpoints/`` folder, so a run directory that
    was moved or copied still finds its own file.
    """
    source = resume_checkpoint(run_dir)
    if source is None:
        return None
    states = torch.load(source, map_location="cpu", weights_only=True).get("callbacks", {})
    for state in states.values():
        if isinstance(state, dict) and state.get("best_model_path"):  # ModelCheckpoint and subclasses
            path = os.path.join(checkpoint_dir(run_dir), os.path.basename(state["best_model_path"]))
            return path if os.path.isfile(path) else None
    return None


def resolve_checkpoint(ckpt_path: str, run_dir: str | None) -> str:
    """Turn ``--ckpt_path`` into a file: ``last`` / ``best`` / ``hpc`` of ``run_dir``, or an existing path.

    Raises ``RunError`` (one line, what to do) when there is nothing to load.
    """
    if ckpt_path in ("last", "best", "hpc"):
        if not run_dir:
            raise RunError(
                f"--ckpt_path {ckpt_path} needs the run it belongs to: add --run_dir DIR "
                f"(or pass the checkpoint file itself, e.g. DIR/{CHECKPOINT_DIR}/{LAST_CHECKPOINT})"
            )
        if ckpt_path == "last":
            found = resume_checkpoint(run_dir)
        elif ckpt_path == "best":
            found = best_checkpoint(run_dir)
        else:
            found = (hpc_checkpoints(run_dir) or [None])[-1]
        if found is None:
            raise RunError(
                f"--ckpt_path {ckpt_path}: the run '{run_dir}' has no such checkpoint "
                f"(nothing in '{checkpoint_dir(run_dir)}' or '{run_dir}/{HPC_PREFIX}*.ckpt'); "
                "start it without --ckpt_path, or check the run directory"
            )
        return found
    if not os.path.isfile(ckpt_path):
        raise RunError(f"--ckpt_path: no checkpoint file '{ckpt_path}' (valid: a .ckpt file, or last/best/hpc)")
    return ckpt_path


# ---------------------------------------------------------------- reading saved files
def config_files(run_dir: str) -> list[str]:
    """``config.yaml`` then ``config-1.yaml``, ``config-2.yaml``, ... (one per start of the run)."""
    first = os.path.join(run_dir, CONFIG_FILE)
    more = glob.glob(os.path.join(glob.escape(run_dir), "config-*.yaml"))
    numbered = sorted(more, key=lambda p: int(re.sub(r"\D", "", os.path.basename(p)) or 0))
    return [p for p in [first, *numbered] if os.path.isfile(p)]


def read_config(run_dir: str, latest: bool = False) -> dict[str, Any]:
    """The run's saved config: the original (``config.yaml``), or the one of its latest resume."""
    files = config_files(run_dir)
    if not files:
        raise RunError(f"no {CONFIG_FILE} in '{run_dir}'")
    with open(files[-1 if latest else 0]) as handle:
        return yaml.safe_load(handle)


def read_efficiency(run_dir: str) -> dict[str, Any]:
    """The run's ``efficiency.json`` (parameters, MACs, accuracies, run context)."""
    with open(os.path.join(run_dir, EFFICIENCY_FILE)) as handle:
        return json.load(handle)


def read_metrics(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    """Every TensorBoard scalar of the run: ``{tag: [(step, value), ...]}`` in step order, across resumes."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, dict[int, float]] = {}
    for events_file in sorted(glob.glob(os.path.join(glob.escape(run_dir), "events.out.tfevents.*"))):
        accumulator = EventAccumulator(events_file, size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            for event in accumulator.Scalars(tag):
                scalars.setdefault(tag, {})[event.step] = event.value  # a later file wins a repeated step
    return {tag: sorted(values.items()) for tag, values in scalars.items()}


def find_runs(root: str) -> list[str]:
    """Run directories under ``root`` (those with a saved config), sorted."""
    found = {os.path.dirname(p) for p in glob.glob(os.path.join(glob.escape(root), "**", CONFIG_FILE), recursive=True)}
    return sorted(found)


# ---------------------------------------------------------------- checkpoints as runs
def _import(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def checkpoint_run_config(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The resolved CLI config a checkpoint carries (``None`` for checkpoints not written by ``src.cli``)."""
    return checkpoint.get(RUN_CONFIG_KEY)


def datamodule_config(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """``{"class_path": ..., "init_args": {...}}`` of the checkpoint's DataModule, if it can be known."""
    hparams = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    class_path = hparams.pop("_class_path", None)
    run_config = checkpoint_run_config(checkpoint) or {}
    data = run_config.get("data") or {}
    if class_path is None and isinstance(data, dict):
        class_path = data.get("class_path")
        hparams = {**(data.get("init_args") or {}), **hparams}
    if class_path is None:
        return None
    if "." not in class_path:  # a short name as typed on the command line
        class_path = f"src.data.{class_path}"
    return {"class_path": class_path, "init_args": hparams}


def load_checkpoint_run(path: str, map_location: str | torch.device = "cpu") -> tuple[Any, Any]:
    """``(model, datamodule)`` exactly as the run that wrote the checkpoint built them, weights loaded.

    The model comes from the checkpoint's hyperparameters (``ImageClassifier.load_from_checkpoint``);
    the DataModule from the hyperparameters it saved (``save_hyperparameters()``) and its class
    path. ``datamodule`` is ``None`` when the checkpoint does not say which data it was trained on.
    For lesion and pruning tools: ``datamodule.setup("test")`` then ``datamodule.test_dataloader()``.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model_class = _import(checkpoint.get("run_model_class", DEFAULT_MODEL_CLASS))
    model = model_class.load_from_checkpoint(path, map_location=map_location)
    model.eval()
    data = datamodule_config(checkpoint)
    datamodule = _import(data["class_path"])(**data["init_args"]) if data else None
    return model, datamodule
