"""Run directories: the one place that knows their layout.

A *run* is one training of one configuration. Everything it writes lives in one directory::

    <run_dir>/
      config.yaml            the resolved config (a resumed run adds config-1.yaml, ... beside it)
      hparams.yaml           the model's hyperparameters (Lightning)
      efficiency.json        parameters, MACs, accuracy per parameter (one record, continued on resume)
      events.out.tfevents.*  TensorBoard (the default logger; CSV, W&B, MLflow files when configured)
      scalars.csv            every logged scalar as ``step,tag,value``, whatever the logger (the report reads it)
      loggers.json           the W&B / MLflow run ids, so a resumed run logs into the same logger run
      predictions.csv        written by ``predict``
      checkpoints/           best-by-val ``epoch...-step...-val_acc....ckpt`` and ``last.ckpt``
      hpc_ckpt_<N>.ckpt      Lightning's SLURM requeue checkpoints, and the checkpoint a fit saves when it
                             gets SIGTERM (the run directory is the Trainer's ``default_root_dir``, so no
                             other run ever sees them)
      evaluations/           what ``test`` / ``validate`` / ``predict`` on an existing run recorded
                             (``test.json``, ``test-1.json``, ``test-config.yaml``, ...), kept apart from
                             the fit's own ``efficiency.json``
      run.lock               held (flock) by the one process writing the run; names it (pid, host)
      slurm.json             under SLURM: the job that started the run (and every later start), so a
                             requeue continues it and a new job is refused (``src.slurm_job``)

The directory is ``--run_dir DIR`` when given (a sweep or a SLURM job names it), else a fresh
``lightning_logs/<logger name>/version_N``. The CLI, the sweep, the report and the checkpoint
tools (lesion, pruning) find checkpoints and saved files through the functions here and never
build these paths by hand.
"""

from __future__ import annotations

import fcntl
import glob
import importlib
import json
import os
import re
import socket
import sys
import warnings
from datetime import datetime, timezone
from typing import Any

import torch
import yaml

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
CONFIG_FILE = "config.yaml"
EFFICIENCY_FILE = "efficiency.json"
PREDICTIONS_FILE = "predictions.csv"
SCALARS_FILE = "scalars.csv"  # every logged scalar as step,tag,value (src.callbacks.metrics_record)
LOGGERS_FILE = "loggers.json"  # the W&B / MLflow run ids of the run, reused on resume (src.loggers)
HPC_PREFIX = "hpc_ckpt_"
EVALUATIONS_DIR = "evaluations"
LOCK_FILE = "run.lock"
# "<fd>:<lock file>": a sweep hands the lock it holds for a run to the `src.cli` process it starts for it.
LOCK_FD_ENV = "SRC_RUN_LOCK_FD"
RUN_CONFIG_KEY = "run_config"  # the checkpoint entry holding the run's resolved config (see src.cli)
DEFAULT_MODEL_CLASS = "src.modules.classifier.ImageClassifier"

_HPC_PATTERN = re.compile(rf"^{HPC_PREFIX}(\d+)\.ckpt$")
_VERSION_PATTERN = re.compile(r"^version_(\d+)$")


class RunError(Exception):
    """A user's mistake about runs or checkpoints: the CLI prints the message on one line and exits non-zero."""


class RunBusy(RunError):
    """Another process is writing the run (it holds ``run.lock``); the message names it."""


class CheckpointFallbackWarning(UserWarning):
    """The checkpoint asked for cannot be read; an older intact one of the same run is used instead."""


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


def _saved_checkpoints(run_dir: str) -> list[str]:
    """Every checkpoint file of the run, in tie-break order: hpc (newest first), last, then the others."""
    directory = checkpoint_dir(run_dir)
    others = sorted(
        os.path.join(directory, name)
        for name in (os.listdir(directory) if os.path.isdir(directory) else [])
        if name.endswith(".ckpt") and name != LAST_CHECKPOINT
    )
    return [*reversed(hpc_checkpoints(run_dir)), *filter(None, [last_checkpoint(run_dir)]), *others]


def read_checkpoint(path: str) -> tuple[dict[str, Any] | None, str | None]:
    """``(checkpoint, None)``, or ``(None, why)`` for a file that cannot be read (truncated, not a checkpoint).

    Memory-mapped: reading a checkpoint's step and callback states does not pull its tensors in.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # truncated zip, pickle errors, not a zip at all
        return None, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        return None, "not a Lightning checkpoint"
    return checkpoint, None


def _intact_checkpoints(run_dir: str) -> tuple[list[tuple[int, str, dict[str, Any]]], dict[str, str]]:
    """``([(global_step, path, checkpoint), ...] newest first, {broken path: why})``."""
    intact, broken = [], {}
    for order, path in enumerate(_saved_checkpoints(run_dir)):
        checkpoint, why = read_checkpoint(path)
        if checkpoint is None:
            broken[path] = why or "unreadable"
        else:
            intact.append((int(checkpoint.get("global_step") or 0), -order, path, checkpoint))
    intact.sort(key=lambda item: item[:2], reverse=True)  # highest step; at equal steps hpc, last, others
    return [(step, path, checkpoint) for step, _, path, checkpoint in intact], broken


def resume_checkpoint(run_dir: str) -> str | None:
    """The checkpoint to continue the run from: the intact one with the most steps (hpc, last, best, ...).

    A requeued or SIGTERM'd job may hold an hpc checkpoint from an earlier preemption *and* a newer
    ``last.ckpt`` written after it; Lightning on its own would take the hpc one and lose the progress
    in between. A truncated ``last.ckpt`` (a kill while it was written) is passed over, with a
    warning naming it and the checkpoint used instead, rather than blocking the run for good.
    """
    intact, broken = _intact_checkpoints(run_dir)
    chosen = intact[0][1] if intact else None
    last = os.path.join(checkpoint_dir(run_dir), LAST_CHECKPOINT)
    # No last.ckpt at all is ordinary (a SIGTERM before the first epoch ended leaves only its hpc checkpoint):
    # only a broken one is worth a warning.
    if chosen is not None and chosen != last and last in broken:
        warnings.warn(
            f"'{last}' cannot be read ({broken[last]}); continuing from '{chosen}' (step {intact[0][0]}), "
            "the newest intact checkpoint",
            CheckpointFallbackWarning,
            stacklevel=2,
        )
    return chosen


def has_checkpoints(run_dir: str) -> bool:
    """Whether a run has already saved an intact checkpoint it could be resumed from.

    Broken files alone (a kill during the first checkpoint write) do not count: such a run has nothing
    to continue from and is started again (new checkpoints get new names; the broken files stay).
    """
    return bool(_intact_checkpoints(run_dir)[0])


def best_checkpoint(run_dir: str) -> str | None:
    """The best-by-monitor checkpoint, as ModelCheckpoint recorded it in the run's newest intact checkpoint.

    Any intact checkpoint of the run knows the best one (the best checkpoint itself included), so a
    broken ``last.ckpt`` does not hide it. The recorded path is taken relative to the run's
    ``checkpoints/`` folder, so a run directory that was moved or copied still finds its own file.
    """
    intact, broken = _intact_checkpoints(run_dir)
    for _, _, checkpoint in intact:
        for state in (checkpoint.get("callbacks") or {}).values():
            if isinstance(state, dict) and state.get("best_model_path"):  # ModelCheckpoint and subclasses
                path = os.path.join(checkpoint_dir(run_dir), os.path.basename(state["best_model_path"]))
                if path in broken:
                    raise RunError(f"the run's best checkpoint '{path}' cannot be read ({broken[path]})")
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
            broken = _intact_checkpoints(run_dir)[1]
            detail = (
                f"{len(broken)} checkpoint file(s) there cannot be read, e.g. '{next(iter(broken))}'"
                if broken
                else f"nothing in '{checkpoint_dir(run_dir)}' or '{run_dir}/{HPC_PREFIX}*.ckpt'"
            )
            raise RunError(
                f"--ckpt_path {ckpt_path}: the run '{run_dir}' has no such checkpoint ({detail}); "
                "start it without --ckpt_path, or check the run directory"
            )
        return found
    if not os.path.isfile(ckpt_path):
        raise RunError(f"--ckpt_path: no checkpoint file '{ckpt_path}' (valid: a .ckpt file, or last/best/hpc)")
    return ckpt_path


def is_existing_run(run_dir: str) -> bool:
    """Whether an earlier command wrote into ``run_dir`` (anything but a lock file)."""
    return os.path.isdir(run_dir) and any(name != LOCK_FILE for name in os.listdir(run_dir))


def evaluation_file(filename: str) -> str:
    """Where ``test`` / ``validate`` / ``predict`` on a run put a file, relative to the run directory.

    Apart from the fit's own ``efficiency.json`` and ``config.yaml``: the sweep and the report read
    only the fit's test, never an evaluation of some checkpoint made afterwards.
    """
    return os.path.join(EVALUATIONS_DIR, filename)


# ---------------------------------------------------------------- one writer per run
class RunLock:
    """``run.lock`` in the run directory, held with ``flock`` by the one process writing the run.

    Not ``src.data.locking.file_lock``: that one *waits* (right for a download), this one refuses at
    once and says who holds it; and it is an ``flock``, tied to the open file rather than to the
    process, so a sweep can hand the very lock it claimed a run with to the ``src.cli`` process it
    starts for it (``LOCK_FD_ENV``), and reading the holder's record never drops it (POSIX record
    locks are dropped when *any* descriptor of the file is closed). The kernel releases it when the
    holder exits in any way, ``kill -9`` included: a crashed run leaves no stale lock, only a stale
    record, which the next holder overwrites.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = os.fspath(run_dir)
        self.path = os.path.join(self.run_dir, LOCK_FILE)
        self._fd: int | None = None
        self._inherited = False

    @property
    def fd(self) -> int | None:
        return self._fd

    def acquire(self, role: str = "src.cli") -> RunLock:
        """Take the lock, or raise ``RunBusy`` naming the process that holds it."""
        inherited = self._inherited_fd()
        if inherited is not None:  # our parent (a sweep) holds it for us: same open file, same lock
            self._fd, self._inherited = inherited, True
            self._write_record(role)
            return self
        os.makedirs(self.run_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise self._busy(self.holder()) from None
        self._fd = fd
        self._write_record(role)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        if not self._inherited:  # an inherited lock stays with the parent that claimed the run
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def child_env(self) -> dict[str, str]:
        """Environment (and, with ``pass_fds=[lock.fd]``, descriptor) that hands this lock to a child."""
        assert self._fd is not None, "acquire the lock first"
        return {LOCK_FD_ENV: f"{self._fd}:{os.path.realpath(self.path)}"}

    def refuse_if_busy(self) -> None:
        """Raise ``RunBusy`` if another process holds the lock (one that was handed to us does not count)."""
        holder = self.holder_if_busy()
        if holder is not None:
            raise self._busy(holder)

    def _busy(self, holder: str) -> RunBusy:
        return RunBusy(
            f"the run directory '{self.run_dir}' is in use by {holder}; wait for it to finish, "
            "or use another run directory"
        )

    def holder_if_busy(self) -> str | None:
        """Who holds the lock now (``holder()``), or ``None`` when nobody does (or it was handed to us)."""
        if self._inherited_fd() is not None:
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return self.holder()
        finally:
            os.close(fd)  # closing drops the shared lock if we got it
        return None

    def holder(self) -> str:
        """``process 123 on host (src.cli, since ...)`` from the record the holder wrote."""
        try:
            with open(self.path) as handle:
                record = json.loads(handle.read() or "{}")
        except (OSError, ValueError):
            record = {}
        if not record.get("pid"):
            return "another process (it has not written its name yet)"
        where = record.get("host") or "?"
        note = ""
        if where == socket.gethostname() and not _alive(int(record["pid"])):
            note = "; that process is gone, so the lock is held by a process it started, or by a stale network lock"
        return f"process {record['pid']} on {where} ({record.get('role', '?')}, since {record.get('since', '?')}{note})"

    def _inherited_fd(self) -> int | None:
        fd_text, _, path = os.environ.get(LOCK_FD_ENV, "").partition(":")
        if not fd_text.isdigit() or path != os.path.realpath(self.path):
            return None
        fd = int(fd_text)
        try:
            if not os.path.samestat(os.fstat(fd), os.stat(self.path)):
                return None  # the variable came along, the descriptor did not (a process of ours it started)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a no-op for the open file that holds it
        except OSError:
            return None
        return fd

    def _write_record(self, role: str) -> None:
        assert self._fd is not None
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "role": role,
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(record).encode(), 0)

    def __enter__(self) -> RunLock:
        return self.acquire() if self._fd is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
