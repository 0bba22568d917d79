"""The names in a run directory, and the small decisions about them (no file contents read here).

``src.runs`` (its docstring draws the layout) re-exports everything; import from there.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
CONFIG_FILE = "config.yaml"
EFFICIENCY_FILE = "efficiency.json"
PREDICTIONS_FILE = "predictions.csv"
DATA_RECORD = "data.json"  # what a folder data module trained on (src.data.folder writes it)
METRICS_FILE = "metrics.csv"  # a results run's curves (src.sweeping.results); a CSVLogger run's own table
SCALARS_FILE = "scalars.csv"  # every logged scalar as step,tag,value (src.callbacks.metrics_record)
LOGGERS_FILE = "loggers.json"  # the W&B / MLflow run ids of the run, reused on resume (src.cli_support.loggers)
HPC_PREFIX = "hpc_ckpt_"
EVALUATIONS_DIR = "evaluations"
LOCK_FILE = "run.lock"
# "<fd>:<lock file>": a sweep hands the lock it holds for a run to the `src.cli` process it starts for it.
LOCK_FD_ENV = "SRC_RUN_LOCK_FD"
RUN_CONFIG_KEY = "run_config"  # the checkpoint entry holding the run's resolved config (see src.cli)
DEFAULT_MODEL_CLASS = "src.modules.classifier.ImageClassifier"

_HPC_PATTERN = re.compile(rf"^{HPC_PREFIX}(\d+)\.ckpt$")
_VERSION_PATTERN = re.compile(r"^version_(\d+)$")
_NUMBERED = re.compile(r"^(?P<stem>.+?)(?:-(?P<index>\d+))?(?P<ext>\.[^.]+)$")


class RunError(Exception):
    """A user's mistake about runs or checkpoints: the CLI prints the message on one line and exits non-zero."""


class RunBusy(RunError):
    """Another process is writing the run (it holds ``run.lock``); the message names it."""


class CheckpointFallbackWarning(UserWarning):
    """The checkpoint asked for cannot be read; an older intact one of the same run is used instead."""


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


def is_existing_run(run_dir: str) -> bool:
    """Whether an earlier command wrote into ``run_dir`` (anything but a lock file)."""
    return os.path.isdir(run_dir) and any(name != LOCK_FILE for name in os.listdir(run_dir))


def fit_records(run_dir: str) -> list[str]:
    """The files in ``run_dir`` that record a fit (config, efficiency, scalars, data), sorted; ``[]`` for none.

    A fresh fit into a directory that has any is refused: its files would mix with the earlier fit's.
    """
    if not os.path.isdir(run_dir):
        return []
    stems = [CONFIG_FILE, EFFICIENCY_FILE, SCALARS_FILE, DATA_RECORD]
    return sorted(path.name for stem in stems for path in numbered_files(run_dir, stem))


def evaluation_file(filename: str) -> str:
    """Where ``test`` / ``validate`` / ``predict`` on a run put a file, relative to the run directory.

    Apart from the fit's own ``efficiency.json`` and ``config.yaml``: the sweep and the report read
    only the fit's test, never an evaluation of some checkpoint made afterwards.
    """
    return os.path.join(EVALUATIONS_DIR, filename)


def numbered_files(run_dir: str | os.PathLike, filename: str) -> list[Path]:
    """``filename`` and its never-overwrite siblings (``stem-1.ext``, ``stem-2.ext``...), oldest first."""
    stem, ext = Path(filename).stem, Path(filename).suffix
    found = []
    for path in Path(run_dir).glob(f"{stem}*{ext}"):
        match = _NUMBERED.match(path.name)
        if match and match["stem"] == stem and match["ext"] == ext:
            found.append((int(match["index"] or 0), path))
    return [path for _, path in sorted(found)]


def config_files(run_dir: str) -> list[str]:
    """``config.yaml`` then ``config-1.yaml``, ``config-2.yaml``, ... (one per start of the run)."""
    first = os.path.join(run_dir, CONFIG_FILE)
    more = glob.glob(os.path.join(glob.escape(run_dir), "config-*.yaml"))
    numbered = sorted(more, key=lambda p: int(re.sub(r"\D", "", os.path.basename(p)) or 0))
    return [p for p in [first, *numbered] if os.path.isfile(p)]
