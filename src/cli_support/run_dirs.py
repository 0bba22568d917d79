"""Which directory a command of ``src.cli`` writes to, and what it refuses (``src.runs`` draws the layout).

In order of precedence: ``--run_dir DIR``; a TensorBoard/CSV logger's fixed ``save_dir/name/version``;
for ``fit --ckpt_path``, the run the checkpoint belongs to (a run continues only in its own directory);
for ``test``/``validate``/``predict`` of a run's checkpoint, that run (its ``evaluations/``); else a fresh
``<save_dir>/<name>/version_N``. A run another process writes (it holds ``run.lock``) is refused, and so
is starting a fit over a run that already has checkpoints (continue it with ``--ckpt_path last``).

A ``--ckpt_path`` checkpoint's saved config becomes the command's defaults, its logger's fixed
``save_dir/name/version`` included. The checkpoint is data that may come from anyone, so for
``test``/``validate``/``predict`` a directory named that way only is used when it is the run the checkpoint
file sits in (``RUN/checkpoints/x.ckpt`` -> ``RUN``); a logger version the user gives keeps its precedence.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch.utilities import rank_zero_info

from src import runs
from src.cli_support import slurm_job
from src.cli_support.loggers import is_directory_logger, point_logger_at_run
from src.files import remove_temporaries

LOG_ROOT = "lightning_logs"
DEFAULT_LOGGER_NAME = "default"
# "<pid>:<run dir>" of the process that chose a fresh run directory: DDP processes it launches join that run.
RUN_DIR_ENV = "SRC_CLI_RUN_DIR"


def launching_rank() -> bool:
    """Whether this process starts the run (global rank zero), before Lightning has set any ranks up.

    DDP processes Lightning launches (LOCAL_RANK), torchrun/SLURM tasks (RANK, SLURM_PROCID) other than
    the first join a run whose lock rank zero holds.
    """
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        value = os.environ.get(key)
        if value is not None and value.strip().isdigit():
            return int(value) == 0
    return True


# ---------------------------------------------------------------- where the loggers would put a run
def loggers(config: Namespace) -> list:
    """The config's ``trainer.logger`` entries as a list (``[None]`` / ``[True]`` for Lightning's default)."""
    logger = config.trainer.get("logger")
    return list(logger) if isinstance(logger, list) else [logger]


def logger_location(config: Namespace) -> tuple[str, str]:
    """Where a fresh run goes: a TensorBoard/CSV logger's ``save_dir/name``; W&B and MLflow have no such folder."""
    for logger in loggers(config):
        init_args = logger.get("init_args") if is_directory_logger(logger) else None
        if init_args is not None and init_args.get("save_dir") is not None:
            return str(init_args["save_dir"]), str(init_args.get("name") or "")
    return LOG_ROOT, DEFAULT_LOGGER_NAME


def named_run_dir(config: Namespace) -> str | None:
    """``save_dir/name/version`` when the logger config fixes its version, else ``None``."""
    for logger in loggers(config):  # W&B's version is its run id, not a folder
        init_args = logger.get("init_args") if is_directory_logger(logger) else None
        if init_args is not None and init_args.get("version") is not None:
            version = init_args["version"]
            save_dir, name = logger_location(config)
            return os.path.join(save_dir, name, version if isinstance(version, str) else f"version_{version}")
    return None


def checked_named_run_dir(
    named: str | None, checkpoint_path: str | None, run_config: Any, subcommand: str
) -> str | None:
    """``named`` for ``test``/``validate``/``predict``, unless only the checkpoint's own config names it and the
    checkpoint file is not in that run: then ``None`` (the checkpoint's own run or a fresh directory), said once.

    Why: the checkpoint's saved logger ``save_dir/name/version`` becomes a default of the command, and a file
    from elsewhere could name any folder -- an existing run or any other directory -- for the command to write
    into. The run a checkpoint belongs to is the folder that holds it (``runs.run_dir_of_checkpoint``).
    """
    if named is None or not isinstance(run_config, dict) or not isinstance(run_config.get("trainer"), dict):
        return named
    if named_run_dir(Namespace(trainer=run_config["trainer"])) != named:
        return named  # the user's own logger version (a config file, the command line): it comes first
    owner = runs.run_dir_of_checkpoint(checkpoint_path) if checkpoint_path is not None else None
    if owner is not None and os.path.realpath(owner) == os.path.realpath(named):
        return named  # the checkpoint's own run: what it names is where it is
    instead = f"its own run '{owner}'" if owner is not None else "a new run directory"
    if launching_rank():
        print(
            f"The checkpoint's saved logger config names the run directory '{named}', but the checkpoint file "
            f"'{checkpoint_path}' is not in that run; {subcommand} does not write there (a checkpoint's contents "
            f"do not choose where a command writes) and records into {instead} if it can (--run_dir DIR chooses)",
            flush=True,
        )
    return None


def fresh_run_dir(config: Namespace) -> str:
    """A new ``<save_dir>/<name>/version_N``; processes launched for DDP join their launcher's run."""
    launcher_pid, _, launcher_dir = os.environ.get(RUN_DIR_ENV, "").partition(":")
    # Lightning's DDP launcher starts ranks 1..N-1 as children with LOCAL_RANK set; any other child
    # process (a test, a notebook's subprocess) is a run of its own.
    launched_rank = os.environ.get("LOCAL_RANK", "0") != "0"
    if launcher_dir and launcher_pid == str(os.getppid()) and launched_rank:
        return launcher_dir
    save_dir, name = logger_location(config)
    run_dir = runs.next_version_dir(save_dir, name)
    os.environ[RUN_DIR_ENV] = f"{os.getpid()}:{run_dir}"
    return run_dir


def forget_fresh_run_dir() -> None:
    """Called in-process (a notebook, a test): leave no run directory behind for the next command to join."""
    if os.environ.get(RUN_DIR_ENV, "").partition(":")[0] == str(os.getpid()):
        del os.environ[RUN_DIR_ENV]


def remove_debris(run_dir: str) -> None:
    """The temporary files a killed writer of this run left (checkpoints, efficiency.json, ...); call it
    holding the run's lock, so no live writer has any."""
    removed = [
        os.path.join(folder, name)
        for folder in (run_dir, runs.checkpoint_dir(run_dir))
        for name in remove_temporaries(folder)
    ]
    if removed:
        rank_zero_info(f"Removed {len(removed)} unfinished file(s) a killed process left in {run_dir}")


# ---------------------------------------------------------------- runs a command must not write into
def refuse_busy_run(run_dir: str | None) -> None:
    """Another process writing the run (it holds its lock) comes first: anything else we said would mislead."""
    if run_dir is not None and launching_rank():
        runs.RunLock(run_dir).refuse_if_busy()


def refuse_used_run_dir(run_dir: str) -> None:
    """A fresh fit never starts in a directory another fit wrote into: its files would mix with that fit's
    (the report would read the first config). Continuing a run with checkpoints is ``--ckpt_path last``; a
    SLURM requeue of the job that wrote them continues (or restarts) itself."""
    records = runs.fit_records(run_dir)
    if not records and not runs.has_checkpoints(run_dir):
        return
    job = slurm_job.current_job()
    if job is not None:
        slurm_job.refuse_another_job(run_dir, job)  # a requeue of the same job passes
        return
    if runs.has_checkpoints(run_dir):
        raise runs.RunError(
            f"the run directory '{run_dir}' already holds checkpoints of a run; continue it with "
            "--ckpt_path last, or start a new run in another directory"
        )
    raise runs.RunError(
        f"the run directory '{run_dir}' already holds the records of another fit ({', '.join(records)}) and no "
        "checkpoint to continue from: start the new run in another directory, or move this one away first "
        "(a sweep moves such an attempt into <study>/.replaced/ itself)"
    )


# ---------------------------------------------------------------- the run a checkpoint belongs to
def fit_run_dir(checkpoint_path: str | None, given: str | None, named: str | None) -> tuple[str | None, str | None]:
    """``(run directory, checkpoint to continue from)`` of a ``fit``; ``(None, None)``: a fresh directory.

    With a checkpoint: the run it belongs to (``--run_dir`` may only repeat it). Without: the named
    directory, unless an earlier fit wrote into it (checkpoints or records) -- an error, except for a requeue
    of the SLURM job that made them, which continues from the newest checkpoint (or starts over without one).
    """
    if checkpoint_path is not None:  # continue the run the checkpoint belongs to, in its own directory
        owner = runs.run_dir_of_checkpoint(checkpoint_path)
        if owner is None:
            raise runs.RunError(
                f"'{checkpoint_path}' is not inside a run directory (<run>/checkpoints/*.ckpt or "
                "<run>/hpc_ckpt_N.ckpt), so there is no run to continue; copy the whole run directory"
            )
        refuse_busy_run(owner)
        if given and os.path.realpath(given) != os.path.realpath(owner):
            raise runs.RunError(
                f"--ckpt_path belongs to the run '{owner}', not --run_dir '{given}'; a run continues only "
                "in its own directory (drop --run_dir)"
            )
        return owner, None
    if named is not None and (runs.has_checkpoints(named) or runs.fit_records(named)):
        refuse_used_run_dir(named)
        # A requeued SLURM job: the same command, the same directory -- continue from its newest checkpoint.
        return named, runs.resume_checkpoint(named)
    if named is None and int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0:
        raise runs.RunError(
            "this SLURM job was requeued, but without --run_dir its first attempt's directory is unknown, so "
            "it would silently start over; launch SLURM jobs with --run_dir DIR"
        )
    return named, None


def evaluated_run_dir(checkpoint_path: str | None, subcommand: str) -> str | None:
    """test/validate/predict of a run's checkpoint: that run's directory (its ``evaluations/``), as if
    ``--run_dir`` named it, so the result stays with the run rather than in an unrelated new version_N.

    ``None`` (a fresh directory, as before) for a checkpoint file that is not inside a run this CLI wrote,
    and while the run's fit still holds its lock: testing a checkpoint of a running fit must keep working.
    """
    owner = runs.run_dir_of_checkpoint(checkpoint_path) if checkpoint_path is not None else None
    if owner is None or not runs.config_files(owner):
        return None
    if not launching_rank():  # a DDP process Lightning started: follow its launcher's choice
        launcher_pid = os.environ.get(RUN_DIR_ENV, "").partition(":")[0]
        return None if launcher_pid == str(os.getppid()) else owner
    holder = runs.RunLock(owner).holder_if_busy()
    if holder is not None:
        print(f"The run '{owner}' is in use by {holder}; {subcommand} writes into a new directory", flush=True)
        return None
    return owner


# ---------------------------------------------------------------- the config pointed at the run
# What a command writes at the top of a run directory it continues or evaluates (Lightning's TensorBoardLogger
# writes hparams.yaml when no *file* is there, so a dangling link is written through).
WRITTEN_IN_A_RUN = ("hparams.yaml", runs.CONFIG_FILE, runs.EFFICIENCY_FILE, runs.SCALARS_FILE, runs.METRICS_FILE,
                    runs.LOGGERS_FILE, runs.LOCK_FILE, runs.PREDICTIONS_FILE, runs.EVALUATIONS_DIR)  # fmt: skip


def refuse_planted_links(run_dir: str) -> None:
    """A run directory whose files this command writes must not hold them as symbolic links.

    A run folder received from elsewhere could hold ``hparams.yaml`` (or ``evaluations/``...) as a link to any
    file or folder the user can write; writing the run's file would write there. ``RunError`` names each.
    """
    linked = [name for name in WRITTEN_IN_A_RUN if os.path.islink(os.path.join(run_dir, name))]
    if linked:
        raise runs.RunError(
            f"the run directory '{run_dir}' holds {', '.join(repr(name) for name in linked)} as symbolic link(s): "
            "this command writes those files, and would write through the link to wherever it points. Remove the "
            "link(s) (the run's own files are written in their place), or evaluate into another folder with "
            "--run_dir DIR"
        )


def point_config_at_run_dir(config: Namespace, run_dir: str) -> None:
    """Logger, checkpoints and ``default_root_dir`` (where Lightning's SLURM hpc checkpoints go) -> run_dir."""
    config.trainer.default_root_dir = run_dir
    parent, leaf = os.path.split(run_dir)
    entries = loggers(config)
    if entries == [None] or entries == [True]:
        config.trainer.logger = Namespace(
            class_path="lightning.pytorch.loggers.TensorBoardLogger",
            init_args=Namespace(save_dir=parent, name="", version=leaf, default_hp_metric=False),
        )
    for logger in entries:  # one logger run per run directory (src.cli_support.loggers)
        if isinstance(logger, Namespace):
            point_logger_at_run(logger, run_dir, LOG_ROOT)
    wanted = runs.checkpoint_dir(run_dir)
    dirpath = config.checkpoint.get("dirpath") if config.get("checkpoint") is not None else None
    if dirpath is not None and os.path.realpath(dirpath) != os.path.realpath(wanted):
        raise runs.RunError(
            f"checkpoint.dirpath '{dirpath}' would put this run's checkpoints outside its directory; "
            f"they go to '{wanted}' (choose the run's place with --run_dir)"
        )
    if config.get("checkpoint") is not None:
        config.checkpoint.dirpath = wanted


# ---------------------------------------------------------------- what a command created, and leaves or removes
def first_missing(path: str) -> str | None:
    """The outermost of ``path`` and its parents that does not exist yet (``None`` if ``path`` exists)."""
    path, missing = os.path.abspath(path), None
    while not os.path.exists(path) and os.path.dirname(path) != path:
        missing, path = path, os.path.dirname(path)
    return missing


def file_stamps(directory: str) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime)}`` of the files under ``directory`` (none if it does not exist)."""
    stamps = {}
    for folder, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(folder, name)
            try:
                stat = os.stat(path)
            except OSError:
                continue
            stamps[os.path.relpath(path, directory)] = (stat.st_size, stat.st_mtime_ns)
    return stamps


def remove_unused_run_dir(run_dir: str | None, first_created: str | None, trainer: Any) -> None:
    """A failed command leaves no run directory it created, unless training reached a checkpoint or a step.

    Validation (bad data, a schedule that does not fit, a full disk...) can only fail once the trainer has
    set the directory up (events file, config.yaml, data.json); what it left would look like a run. Call it
    only for a directory this command created (``first_created``: the outermost folder it created).
    """
    if not run_dir or not os.path.isdir(run_dir) or runs.has_checkpoints(run_dir):
        return
    if trainer is not None and (trainer.global_step > 0 or not trainer.is_global_zero):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    # and the parents this command created (lightning_logs/<name>/), if nothing else went into them since
    parent, top = os.path.dirname(os.path.abspath(run_dir)), os.path.abspath(first_created or run_dir)
    while (parent == top or parent.startswith(top + os.sep)) and os.path.isdir(parent) and not os.listdir(parent):
        os.rmdir(parent)
        parent = os.path.dirname(parent)
