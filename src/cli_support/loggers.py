"""Loggers pointed at a run directory: one logger run per run directory, whichever logger.

Why: the run directory (``src.runs``) is a run's identity; each logger names runs its own way, so
each gets that identity in its own terms (``point_logger_at_run``):

* TensorBoard and CSV (*directory loggers*: ``save_dir/name/version`` is a folder): write straight into
  the run directory (``save_dir`` = its parent, ``name`` = "", ``version`` = its leaf), as always.
* W&B: ``save_dir`` = the run directory (``wandb/`` goes inside it), ``name`` = the run's label (its
  path relative to the log root, e.g. ``ladder/resnet20/seed0``), ``id`` = that label plus a random
  suffix, made at the run's first start and recorded in ``loggers.json``. Never ``version``: W&B takes
  it as the run id, and with ``resume="allow"`` every ``seed0`` of a sweep would log into one run. A
  resumed run (same directory) finds its id in ``loggers.json`` and resumes that W&B run.
* MLflow: a local file store unless a ``tracking_uri`` is given (``<log root>/mlruns``, or the logger's
  own ``save_dir``: ``mlflow_tracking_uri``), ``run_name`` = the label, tags ``run`` and ``run_dir``.
  (MLflow 3.7+ keeps file stores in "maintenance mode" and refuses them unless ``MLFLOW_ALLOW_FILE_STORE``
  is set; for a file store chosen here it is set, for this process and the DDP ranks it starts.)
  The run id MLflow assigns is recorded in ``loggers.json``; a resumed run with the same tracking URI
  logs into that run again (``run_id``). MLflow takes no ``version``.
* Any other logger: ``save_dir`` (if it has one) = the run directory; nothing else is changed.

``RunTrainer`` keeps the Trainer's ``log_dir`` (where config.yaml, efficiency.json, data.json go) the
run directory with every logger: Lightning takes it from the first logger, which for W&B is its
``save_dir`` and for MLflow the store, shared by all runs.
"""

from __future__ import annotations

import glob
import json
import os
import re
import uuid
from typing import Any

import lightning.pytorch as pl
from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_warn

from src.class_paths import entry_class
from src.files import write_json_atomic
from src.runs import LOGGERS_FILE

DIRECTORY_LOGGERS = (TensorBoardLogger, CSVLogger)
MLFLOW_DEFAULT_SAVE_DIR = "./mlruns"
_WANDB_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def logger_class(logger: Any) -> type | None:
    """The class a logger entry of the config names (``None`` for ``true``/``false``/``null`` or an unknown path).

    Never imports untrusted code (``entry_class``): the entry may be a default taken from a checkpoint; a
    logger of the user's own config was imported when the config was parsed, so it is loaded and found.
    """
    return entry_class(logger)


def is_directory_logger(logger: Any) -> bool:
    """TensorBoard / CSV: their ``save_dir/name/version`` is the run's folder (``lightning_logs/<name>/version_N``)."""
    cls = logger_class(logger)
    return cls is not None and issubclass(cls, DIRECTORY_LOGGERS)


def run_label(run_dir: str, log_root: str) -> str:
    """The run's name for loggers: its path relative to the log root, else to the working directory, else absolute."""
    path = os.path.abspath(run_dir)
    for root in (os.path.abspath(log_root), os.getcwd()):
        if path.startswith(root + os.sep):
            return os.path.relpath(path, root).replace(os.sep, "/")
    return path


def new_wandb_id(label: str) -> str:
    """A W&B run id: readable (the label's tail, characters W&B allows) and unique (a random suffix)."""
    slug = _WANDB_ID_UNSAFE.sub("-", label).strip("-.")[-40:].lstrip("-.")
    return f"{slug}-{uuid.uuid4().hex[:8]}" if slug else uuid.uuid4().hex


def read_logger_ids(run_dir: str) -> dict[str, Any]:
    """``loggers.json`` of the run (``{"wandb": {"id": ...}, "mlflow": {"run_id": ..., "tracking_uri": ...}}``)."""
    try:
        with open(os.path.join(run_dir, LOGGERS_FILE)) as handle:
            ids = json.load(handle)
    except (OSError, ValueError):
        return {}
    return ids if isinstance(ids, dict) else {}


def mlflow_tracking_uri(init_args: Namespace, run_dir: str, log_root: str) -> str:
    """The given ``tracking_uri``; else the file store ``save_dir`` names, where ``save_dir`` holds no runs.

    MLflow's default ``./mlruns``, the log root, or a folder the run directory is inside (a TensorBoard
    ``save_dir: lightning_logs`` that jsonargparse carries over when a config swaps the logger) would
    mix the store with run directories: then the store is ``<that folder>/mlruns``.
    """
    if init_args.get("tracking_uri"):
        return str(init_args.tracking_uri)
    save_dir = str(init_args.get("save_dir") or MLFLOW_DEFAULT_SAVE_DIR)
    folder = os.path.abspath(log_root if save_dir == MLFLOW_DEFAULT_SAVE_DIR else save_dir)
    if folder == os.path.abspath(log_root) or os.path.abspath(run_dir).startswith(folder + os.sep):
        folder = os.path.join(folder, "mlruns")
    return "file:" + folder


def mlflow_run_exists(uri: str, run_id: str) -> bool:
    """Whether a file store still holds the run (``<store>/<experiment id>/<run id>/meta.yaml``); other stores: yes."""
    if not uri.startswith("file:"):
        return True  # a database or server: MLflow itself says so if it does not
    store = uri[len("file:") :]
    return bool(glob.glob(os.path.join(glob.escape(store), "*", glob.escape(run_id), "meta.yaml")))


def point_logger_at_run(logger: Namespace, run_dir: str, log_root: str) -> None:
    """Point one logger entry of the (instantiation) config at ``run_dir``; see the module docstring."""
    init_args = logger.get("init_args")
    if init_args is None:
        return
    cls = logger_class(logger)
    parent, leaf = os.path.split(run_dir)
    label = run_label(run_dir, log_root)
    recorded = read_logger_ids(run_dir)
    if cls is not None and issubclass(cls, DIRECTORY_LOGGERS):
        init_args.save_dir, init_args.name, init_args.version = parent or ".", "", leaf
    elif cls is not None and issubclass(cls, WandbLogger):
        wandb_id = (recorded.get("wandb") or {}).get("id") or new_wandb_id(label)
        init_args.save_dir, init_args.name, init_args.id, init_args.version = run_dir, label, wandb_id, None
        init_args.dir = None
    elif cls is not None and issubclass(cls, MLFlowLogger):
        uri = mlflow_tracking_uri(init_args, run_dir, log_root)
        mlflow = recorded.get("mlflow") or {}
        init_args.tracking_uri, init_args.run_name = uri, label
        if uri.startswith("file:"):  # MLflow >= 3.7 refuses file stores (in "maintenance mode") unless asked
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        init_args.tags = {**(init_args.get("tags") or {}), "run": label, "run_dir": os.path.abspath(run_dir)}
        if mlflow.get("run_id") and mlflow.get("tracking_uri") == uri:  # the same run, in the same store
            if mlflow_run_exists(uri, mlflow["run_id"]):
                init_args.run_id = mlflow["run_id"]
            else:
                rank_zero_warn(
                    f"MLflow run {mlflow['run_id']} (recorded in {os.path.join(run_dir, LOGGERS_FILE)}) is not in "
                    f"the store {uri} any more; this run logs into a new MLflow run"
                )
    elif "save_dir" in init_args:
        init_args.save_dir = run_dir


def logger_ids(loggers: list[Logger]) -> dict[str, Any]:
    """What ``loggers.json`` records of these loggers (W&B id, MLflow run id and store); creates the MLflow run."""
    ids: dict[str, Any] = {}
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger.version:
            ids["wandb"] = {"id": logger.version}
        elif isinstance(logger, MLFlowLogger) and logger.run_id:
            ids["mlflow"] = {"run_id": logger.run_id, "tracking_uri": logger._tracking_uri}
    return ids


class LoggerRunIds(Callback):
    """Record the W&B / MLflow run ids in the run directory (``loggers.json``), rank zero, at the run's start."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        ids = logger_ids(trainer.loggers)
        if not ids:
            return
        merged = {**read_logger_ids(self.run_dir), **ids}
        if merged != read_logger_ids(self.run_dir):
            os.makedirs(self.run_dir, exist_ok=True)
            write_json_atomic(os.path.join(self.run_dir, LOGGERS_FILE), merged)


class RunTrainer(Trainer):
    """A Trainer whose ``log_dir`` is the run directory (``default_root_dir``) whatever the first logger is.

    Lightning's ``log_dir`` is the first logger's ``log_dir`` for TensorBoard and CSV (the run directory
    here), else its ``save_dir``: W&B's folder, or MLflow's store (shared by every run, or none for a
    remote server); the run's own files would go there.
    """

    @property
    def log_dir(self) -> str | None:
        if self.loggers and not isinstance(self.loggers[0], DIRECTORY_LOGGERS):
            return self.strategy.broadcast(self.default_root_dir)  # a collective, as Lightning's
        return super().log_dir
