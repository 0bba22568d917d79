"""Which SLURM job a run directory belongs to: a requeue of that job continues the run, a new job does not.

Lightning's SLURM requeue (``SLURMEnvironment(auto_requeue=True)``) brings the *same* job back -- the same
``SLURM_JOB_ID``, ``SLURM_RESTART_COUNT`` > 0, the same command and ``--run_dir`` -- and the run continues
from its newest checkpoint without any flag. From inside, a *new* job given the same ``--run_dir`` (or
``--config <run>/config.yaml``, which names it) looks alike, and used to continue another job's run
silently. So every ``fit`` under SLURM writes its job into ``<run>/slurm.json`` when it starts, and a job
that finds checkpoints of a run recorded by another job is refused, with the two ways out: a new
``--run_dir``, or ``--ckpt_path last`` to continue that run deliberately (which records the new job, so
*its* requeues continue too).

Runs without a record (made outside SLURM, or before the record existed) count as another job's unless
this job was requeued (``SLURM_RESTART_COUNT`` > 0): its first start would have written the record.
Outside SLURM nothing here applies.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_warn

from src.files import temporary_path
from src.runs import RunError, has_checkpoints

RECORD_FILE = "slurm.json"


@dataclass(frozen=True)
class Job:
    """This process's SLURM job: its id, and how often SLURM restarted (requeued) it."""

    job_id: str
    restart_count: int


def current_job() -> Job | None:
    """The SLURM job this process runs in, as Lightning sees it (``None`` outside SLURM or interactively)."""
    job_id = os.environ.get("SLURM_JOB_ID", "").strip()
    if not job_id or not SLURMEnvironment.detect():
        return None
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0").strip()
    return Job(job_id, int(restarts) if restarts.isdigit() else 0)


def read_record(run_dir: str) -> dict[str, Any] | None:
    """``slurm.json`` of the run (``None`` when it has none, or it cannot be read)."""
    try:
        with open(os.path.join(run_dir, RECORD_FILE)) as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def refuse_another_job(run_dir: str, job: Job) -> None:
    """Raise ``RunError`` unless the checkpoints in ``run_dir`` are this job's own (a requeue continues)."""
    recorded = (read_record(run_dir) or {}).get("job_id")
    if recorded == job.job_id or (recorded is None and job.restart_count > 0):
        return
    whose = f"SLURM job {recorded}" if recorded else "a run started outside this job"
    why = "" if recorded else f", SLURM_RESTART_COUNT={job.restart_count}"
    if not has_checkpoints(run_dir):  # an attempt that died before its first checkpoint: nothing to continue
        raise RunError(
            f"the run directory '{run_dir}' holds the records of {whose} and no checkpoint to continue from, and this "
            f"is a new job ({job.job_id}{why}); start the new run in another --run_dir, or move this one away first "
            "(a sweep's array task moves such an attempt into <study>/.replaced/ itself)"
        )
    raise RunError(
        f"the run directory '{run_dir}' holds checkpoints of {whose}, and this is a new job ({job.job_id}{why}), "
        "not a requeue of it; start a new run with another --run_dir, or continue that run deliberately with "
        "--ckpt_path last"
    )


def record_start(run_dir: str) -> None:
    """Write this job into ``<run_dir>/slurm.json`` (the current job first, every start kept); no-op outside SLURM.

    Atomic (a temporary file renamed over it): a job killed while writing leaves the previous record.
    """
    job = current_job()
    if job is None:
        return
    record = read_record(run_dir) or {}
    start = {
        "job_id": job.job_id,
        "restart_count": job.restart_count,
        "array": _array_task(),
        "host": socket.gethostname(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    record = {"job_id": job.job_id, "starts": [*(record.get("starts") or []), start]}
    path = os.path.join(run_dir, RECORD_FILE)
    temporary = temporary_path(path)
    with open(temporary, "w") as handle:
        json.dump(record, handle, indent=2)
    os.replace(temporary, path)


def _array_task() -> str | None:
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array_job}_{task}" if array_job and task else None


def cpu_binding_problem() -> str | None:
    """Why this srun task may use fewer CPUs than the job gave each task, if it does; else ``None``.

    Since Slurm 22.05 ``srun`` no longer inherits ``--cpus-per-task`` from ``sbatch``: each task is bound
    to one CPU, data loaders get no workers and per-image decoding starves the GPUs. The affinity mask is
    the truth (``src.machine.available_cpus`` counts it): more workers than bound CPUs would only
    contend for them. The fix is in the launch, so say how to launch.
    """
    wanted = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if not wanted.isdigit() or "SLURM_STEP_ID" not in os.environ or not hasattr(os, "sched_getaffinity"):
        return None  # not inside an srun step, or nothing to compare with
    bound = len(os.sched_getaffinity(0))
    if bound >= int(wanted):
        return None
    return (
        f"this SLURM task may run on {bound} CPU(s), but the job asked for {wanted} per task "
        "(SLURM_CPUS_PER_TASK): since Slurm 22.05 srun does not pass --cpus-per-task on; launch with "
        'srun --cpus-per-task="$SLURM_CPUS_PER_TASK" (or export SRUN_CPUS_PER_TASK="$SLURM_CPUS_PER_TASK")'
    )


def warn_if_cpus_unbound() -> None:
    problem = cpu_binding_problem()
    if problem is not None:
        rank_zero_warn(problem)
