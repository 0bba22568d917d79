"""SLURM that uses its CPUs and never mixes jobs (issue 16, item 2), with SLURM's environment faked.

* a requeue of the same job (same ``SLURM_JOB_ID``, ``SLURM_RESTART_COUNT`` > 0) continues its run;
* a *new* job given a run directory with checkpoints (unfinished or finished) is refused, on one line naming
  the directory and the ways out; ``--ckpt_path last`` continues it on purpose;
* without SLURM nothing changes;
* every launch through ``srun`` passes ``--cpus-per-task`` on (the templates, the study's array script).

Tiny in-process CPU runs: ResNet-8 on 16x16 synthetic images, 2 steps per epoch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from src import runs
from src.cli import main
from src.cli_support import slurm_job
from src.sweep import main as sweep_main
from tests.conftest import REPO_ROOT
from tests.study_runs import QUICKSTART, TINY

FIT = ["fit", "--config", QUICKSTART, "--model.arch", "resnet8", *TINY]


def in_slurm_job(monkeypatch, job_id: str | None, restarts: int = 0) -> None:
    """This process inside SLURM job ``job_id`` (one task, requeued ``restarts`` times), or outside SLURM."""
    for key in [key for key in os.environ if key.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    if job_id is None:
        return
    fake = {
        "SLURM_JOB_ID": job_id, "SLURM_RESTART_COUNT": str(restarts), "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "study",
        "SLURM_NODELIST": "localhost", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
    }  # fmt: skip
    for key, value in fake.items():
        monkeypatch.setenv(key, value)


def fit(run_dir: Path, *extra: str) -> None:
    main([*FIT, "--run_dir", str(run_dir), *extra])


def files_of(directory: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in directory.rglob("*") if p.is_file() and p.name != runs.LOCK_FILE}


def refused(run_dir: Path, *extra: str) -> str:
    """The one-line error of a fit that must be refused; the run directory is left exactly as it was."""
    before = files_of(run_dir)
    with pytest.raises(SystemExit) as stopped:
        fit(run_dir, *extra)
    assert files_of(run_dir) == before
    message = str(stopped.value)
    assert "\n" not in message and message.startswith("error: ")
    return message


def starts(run_dir: Path) -> list[tuple[str, int]]:
    record = json.loads((run_dir / slurm_job.RECORD_FILE).read_text())
    return [(start["job_id"], start["restart_count"]) for start in record["starts"]]


@pytest.fixture
def cwd(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_requeue_continues_and_a_new_job_is_refused(cwd, monkeypatch):
    run_dir = cwd / "runs" / "job"
    in_slurm_job(monkeypatch, "100")
    fit(run_dir, "--trainer.max_epochs", "1", "--test_after_fit", "false")
    assert starts(run_dir) == [("100", 0)]  # the job is recorded when it starts

    # A new job on the unfinished run: refused, naming the directory, the job that made it, and what to do.
    in_slurm_job(monkeypatch, "200")
    message = refused(run_dir, "--trainer.max_epochs", "2")
    assert f"'{run_dir}'" in message and "SLURM job 100" in message and "new job (200)" in message
    assert "another --run_dir" in message and "--ckpt_path last" in message

    # The same job requeued: the same command continues from its checkpoint, no flag needed.
    in_slurm_job(monkeypatch, "100", restarts=1)
    fit(run_dir, "--trainer.max_epochs", "2")
    report = runs.read_efficiency(str(run_dir))
    assert report["resumed_at_steps"] == [2] and report["global_step"] == 4 and report["test_acc"] is not None
    assert starts(run_dir) == [("100", 0), ("100", 1)]

    # The finished run: refused to a new job, even one that was itself requeued.
    for restarts in (0, 3):
        in_slurm_job(monkeypatch, "200", restarts=restarts)
        assert "SLURM job 100" in refused(run_dir, "--trainer.max_epochs", "2")

    # On purpose: --ckpt_path last lets the new job continue it, and records it, so its requeues continue too.
    in_slurm_job(monkeypatch, "200")
    fit(run_dir, "--trainer.max_epochs", "2", "--ckpt_path", "last")
    assert starts(run_dir) == [("100", 0), ("100", 1), ("200", 0)]
    assert json.loads((run_dir / slurm_job.RECORD_FILE).read_text())["job_id"] == "200"
    assert runs.read_efficiency(str(run_dir))["global_step"] == 4  # nothing more to train


def test_a_new_job_on_an_attempt_with_no_checkpoint_is_told_so(cwd, monkeypatch):
    """It said 'holds checkpoints of SLURM job 100' and offered --ckpt_path last, which cannot help (an audit)."""
    run_dir = cwd / "runs" / "dead"
    in_slurm_job(monkeypatch, "100")
    fit(run_dir, "--trainer.max_epochs", "1", "--test_after_fit", "false")
    shutil.rmtree(run_dir / "checkpoints")  # as if killed before its first checkpoint was written
    in_slurm_job(monkeypatch, "200")
    message = refused(run_dir, "--trainer.max_epochs", "1")
    assert "holds the records of SLURM job 100 and no checkpoint to continue from" in message
    assert "new job (200)" in message and "another --run_dir" in message and "--ckpt_path" not in message


def test_without_slurm_nothing_changes_and_unrecorded_runs_need_a_requeue(cwd, monkeypatch):
    run_dir = cwd / "runs" / "laptop"
    in_slurm_job(monkeypatch, None)
    fit(run_dir, "--trainer.max_epochs", "1", "--test_after_fit", "false")
    assert not (run_dir / slurm_job.RECORD_FILE).exists()  # outside SLURM: no record
    assert "already holds checkpoints" in refused(run_dir)  # as before this change

    # A run with no record (made outside SLURM, or before records existed): a first start of a job is refused ...
    in_slurm_job(monkeypatch, "300")
    message = refused(run_dir)
    assert "a run started outside this job" in message and "SLURM_RESTART_COUNT=0" in message
    # ... a requeued job continues it (its first start would have recorded the job, so the run is its own).
    in_slurm_job(monkeypatch, "300", restarts=1)
    fit(run_dir, "--trainer.max_epochs", "2", "--test_after_fit", "false")
    assert runs.read_efficiency(str(run_dir))["resumed_at_steps"] == [2]
    assert starts(run_dir) == [("300", 1)]


# ---------------------------------------------------------------- CPUs for every srun task
def test_every_sbatch_template_passes_cpus_per_task_to_srun():
    scripts = sorted((REPO_ROOT / "scripts" / "slurm").glob("*.sbatch"))
    assert [p.name for p in scripts] == ["1node.sbatch", "multinode.sbatch", "template.sbatch"]
    for script in scripts:
        launches = [line for line in script.read_text().splitlines() if re.match(r"\s*srun\b", line)]
        assert launches and all('--cpus-per-task="$SLURM_CPUS_PER_TASK"' in line for line in launches), script


def test_the_study_array_script_gives_srun_tasks_their_cpus(cwd, capsys):
    root = cwd / "logs"
    study = {
        "name": "cpus", "root": str(root), "configs": [QUICKSTART], "archs": ["resnet8"], "seeds": [0, 1],
        "slurm": {"srun": True, "sbatch": {"cpus-per-task": 6}},
    }  # fmt: skip
    study_file = cwd / "study.yaml"
    study_file.write_text(yaml.safe_dump(study))
    script = cwd / "sweep.sbatch"
    assert sweep_main([str(study_file), "--slurm", str(script), "--", "--trainer.max_steps", "4"]) == 0
    text = script.read_text()
    assert "#SBATCH --cpus-per-task=6\n" in text
    assert 'export SRUN_CPUS_PER_TASK="$SLURM_CPUS_PER_TASK"' in text
    # Run two array tasks with a stand-in srun that shows what it was given.
    bin_dir = cwd / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\necho "srun cpus=${SRUN_CPUS_PER_TASK:-unset} $*"\n')
    (bin_dir / "srun").chmod(0o755)
    only_hpc = root / "cpus" / "resnet8" / "seed1"  # a job preempted before its first epoch ended
    only_hpc.mkdir(parents=True)
    (only_hpc / "hpc_ckpt_1.ckpt").write_bytes(b"")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_CPUS_PER_TASK": "6"}

    def task(index: int) -> str:
        done = subprocess.run(
            ["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": str(index)}, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    first = task(0)
    assert first.startswith("srun cpus=6 python -m src.cli fit") and "--ckpt_path" not in first
    assert task(1).rstrip().endswith("--ckpt_path last")  # a re-submitted array continues it on purpose


def test_a_task_bound_to_fewer_cpus_than_it_asked_for_is_told_how_to_launch(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    problem = slurm_job.cpu_binding_problem()
    assert problem is not None and "1 CPU(s)" in problem and "asked for 8" in problem
    assert 'srun --cpus-per-task="$SLURM_CPUS_PER_TASK"' in problem
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert slurm_job.cpu_binding_problem() is None
    monkeypatch.delenv("SLURM_STEP_ID")  # not in an srun step: nothing to say
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    assert slurm_job.cpu_binding_problem() is None
