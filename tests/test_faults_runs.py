"""Runs under faults (issue 14): divergence, two writers, two sweeps, a run killed in its test, a truncated
``last.ckpt``, SIGTERM to a fit and to a sweep, stale runs, evaluations kept apart from the fit.

Every case checks what the user is left with (files, records, what the sweep does next), not only exit
codes. Tiny CPU runs: ResNet-8 on 16x16 synthetic images, a few steps each, in fresh processes where
signals or concurrency are the point.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from src import files, runs
from src.cli import main as cli_main
from src.sweep import main as sweep_main
from src.sweeping.run_state import assess
from tests.helpers import alive, clean_environment, stop_with_signal, sweep_process, wait_for
from tests.study_runs import QUICKSTART, TINY

STUDY = "faults"
# A run that would train for a long time (8 steps per epoch, 1000 epochs): it is always stopped by a signal.
LONG = [
    "--config", QUICKSTART, "--model.arch", "resnet8",
    "--trainer.max_epochs", "1000",
    "--model.lr_scheduler.init_args.warmup_steps", "0",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
    "--data.image_size", "16", "--data.train_size", "128", "--data.val_size", "32", "--data.test_size", "32",
    "--data.batch_size", "16", "--data.num_workers", "0",
]  # fmt: skip


def environment() -> dict[str, str]:
    return clean_environment(PYTHONUNBUFFERED="1")


def start(module: str, *args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def write_study(directory: Path, **fields) -> Path:
    study = {"name": STUDY, "root": str(directory / "logs"), "configs": [QUICKSTART], "archs": ["resnet8"], **fields}
    path = directory / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def files_of(directory: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in directory.rglob("*") if p.is_file() and p.name != runs.LOCK_FILE}


def lock_record(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / runs.LOCK_FILE).read_text() or "{}")
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------- two sweeps of one study at once
@pytest.fixture(scope="module")
def parallel(tmp_path_factory):
    """Two ``python -m src.sweep`` of the same 2-run study, started together; the runs they leave."""
    root = tmp_path_factory.mktemp("parallel")
    study_file = write_study(root, seeds=[0, 1])
    sweeps = [start("src.sweep", str(study_file), "--", *TINY, cwd=root) for _ in range(2)]
    results = [finish(sweep) for sweep in sweeps]
    return {"root": root, "study_file": study_file, "results": results, "study": root / "logs" / STUDY}


def test_two_sweeps_in_parallel_train_each_run_once(parallel):
    outputs = [out for _, out, _ in parallel["results"]]
    assert [code for code, _, _ in parallel["results"]] == [0, 0], [err[-2000:] for _, _, err in parallel["results"]]
    started = sum(out.count(": running (output:") for out in outputs)
    assert started == 2, outputs  # each of the two runs was started by exactly one sweep
    for seed in (0, 1):
        run_dir = parallel["study"] / "resnet8" / f"seed{seed}"
        assert sorted(p.name for p in run_dir.glob("config*.yaml")) == ["config.yaml"]
        assert sorted(p.name for p in run_dir.glob("efficiency*.json")) == ["efficiency.json"]
        report = runs.read_efficiency(str(run_dir))
        assert report["test_acc"] is not None and report["resumed_at_steps"] == [] and report["global_step"] == 4
    # the other sweep saw each run either in use (skipped, naming the holder) or already finished
    for seed in (0, 1):
        lines = [line for out in outputs for line in out.splitlines() if f"resnet8/seed{seed}:" in line]
        others = [line for line in lines if "running (output:" not in line and f"seed{seed}: test_acc" not in line]
        assert len(others) == 1, outputs
        # in use: named by its pid, or (caught between taking the lock and writing its record) as "another process"
        assert "skipped: in use by" in others[0] or "finished earlier, skipped" in others[0]


# ---------------------------------------------------------------- one writer per run directory
def test_a_second_writer_is_refused_and_names_the_holder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    holder = runs.RunLock(run_dir).acquire(role="test holder")
    try:
        with pytest.raises(SystemExit) as refused:
            cli_main(["fit", "--config", QUICKSTART, *TINY, "--model.arch", "resnet8", "--run_dir", str(run_dir)])
        message = str(refused.value.code)
        assert message.startswith("error: the run directory") and f"process {os.getpid()} on " in message
        assert "test holder" in message
        assert sorted(p.name for p in run_dir.iterdir()) == [runs.LOCK_FILE]  # nothing of a second run written
    finally:
        holder.release()
    assert runs.RunLock(run_dir).holder_if_busy() is None  # released: the next writer gets it


# ---------------------------------------------------------------- SIGTERM to a fit, and a second fit meanwhile
@pytest.mark.slow
def test_sigterm_saves_the_step_exits_143_and_the_run_resumes_from_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    fit = start("src.cli", "fit", *LONG, "--run_dir", "run", cwd=tmp_path)
    try:
        # The first fit's own files first: its checkpoint, and its curves (scalars.csv opens at its first logged
        # value, which can come after the checkpoint), so that what appears next could only be the second fit's.
        wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "scalars.csv").is_file(),
                 what="the first epoch's checkpoint and curves")  # fmt: skip
        assert lock_record(run_dir).get("pid") == fit.pid

        # A second fit on the same directory, meanwhile: refused, naming the first; nothing of it written.
        # The first fit rewrites its own files meanwhile (efficiency.json through a temporary `.<name>.<its pid>.*.tmp`,
        # CI caught one mid-write), so its temporaries are left out; the second fit's would carry its own pid.
        def listing() -> list[str]:
            return sorted(
                p.name for p in run_dir.iterdir() if not (files.TEMPORARY.match(p.name) and f".{fit.pid}." in p.name)
            )

        before = listing()
        second = subprocess.run(
            [sys.executable, "-m", "src.cli", "fit", *LONG, "--run_dir", "run"],
            cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert second.returncode != 0 and "Traceback" not in second.stderr
        assert f"in use by process {fit.pid} on " in second.stderr.strip().splitlines()[-1]
        assert listing() == before  # no config-1.yaml, no efficiency-1.json, no temporary of its own
        last_step = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
        fit.send_signal(signal.SIGTERM)
        code, _, err = finish(fit, timeout=300)
    finally:
        if fit.poll() is None:
            fit.kill()
    assert code == 143, err[-3000:]
    last_line = err.strip().splitlines()[-1]
    hpc = run_dir / "hpc_ckpt_1.ckpt"
    saved = torch.load(hpc, weights_only=True)
    step = saved["global_step"]
    assert step >= last_step > 0 and last_line.startswith(f"error: stopped by SIGTERM at step {step}; saved ")
    assert "saved 'run/hpc_ckpt_1.ckpt'" in last_line and "--run_dir run --ckpt_path last" in last_line
    assert runs.resume_checkpoint(str(run_dir)) == str(hpc)
    assert runs.RunLock(run_dir).holder_if_busy() is None
    # The saved step is where the run continues: two more steps, then it ends, tested.
    cli_main(["fit", "--run_dir", "run", "--ckpt_path", "last", "--trainer.max_steps", str(step + 2)])
    report = runs.read_efficiency(str(run_dir))
    assert report["resumed_at_steps"] == [step] and report["global_step"] == step + 2
    assert report["test_acc"] is not None


# ---------------------------------------------------------------- SIGTERM to a sweep
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_to_a_sweep_stops_its_run_and_exits_nonzero(tmp_path, sig):
    """SIGHUP (a closed terminal) too: the run gets SIGTERM, saves its step, and nothing is orphaned."""
    study_file = write_study(tmp_path, seeds=[0, 1])
    run_dir = tmp_path / "logs" / STUDY / "resnet8" / "seed0"
    with sweep_process(str(study_file), "--", *LONG[4:], cwd=tmp_path, env=environment()) as sweep:
        wait_for(lambda: lock_record(run_dir).get("role") == "src.cli fit", what="the sweep's first run")
        child = lock_record(run_dir)["pid"]
        assert child != sweep.pid and alive(child)
        wait_for(lambda: (run_dir / "efficiency.json").is_file(), what="training to start")
        code, out, err = stop_with_signal(sweep, sig)
    assert code == 128 + sig, err[-3000:]
    assert not alive(child)  # stopped and reaped, not left training under PID 1
    assert f"stopped by {signal.Signals(sig).name}" in err and "seed1" not in out  # nothing started after it
    log = (tmp_path / "logs" / STUDY / "sweep_logs" / "resnet8_seed0.log").read_text()
    assert "error: stopped by SIGTERM" in log  # the run itself got the signal, and said so
    assert runs.RunLock(run_dir).holder_if_busy() is None


# ---------------------------------------------------------------- divergence
def test_a_diverged_run_stops_is_recorded_and_the_sweep_does_not_retry_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study_file = write_study(tmp_path, seeds=[0], grid={"model.optimizer.init_args.lr": [1e6]})
    run_dir = tmp_path / "logs" / STUDY / "resnet8-lr1000000.0" / "seed0"
    assert sweep_main([str(study_file), "--", *TINY]) == 0
    out = capsys.readouterr().out
    assert "resnet8-lr1000000.0/seed0: DIVERGED at step " in out and "1 run(s) diverged" in out
    report = runs.read_efficiency(str(run_dir))
    assert report["status"] == "diverged" and report["test_acc"] is None
    assert isinstance(report["diverged_step"], int) and 0 < report["diverged_step"] <= 4
    assert "training loss" in report["diverged_reason"]
    assert not (run_dir / "checkpoints").exists() or not list((run_dir / "checkpoints").iterdir())
    log = (tmp_path / "logs" / STUDY / "sweep_logs" / "resnet8-lr1000000.0_seed0.log").read_text()
    error_lines = [line for line in log.splitlines() if line.startswith("error:")]
    assert error_lines == [f"error: training diverged at step {report['diverged_step']}: {report['diverged_reason']}"
                           "; the run stops here and is not tested"]  # fmt: skip
    # Not retried blindly: the next sweep skips it, starts nothing; the plan says DIVERGED.
    before = files_of(tmp_path / "logs" / STUDY)
    assert sweep_main([str(study_file), "--", *TINY]) == 0
    assert "DIVERGED at step" in capsys.readouterr().out and files_of(tmp_path / "logs" / STUDY) == before
    assert sweep_main([str(study_file), "--dry-run", "--", *TINY]) == 0
    assert "seed0: DIVERGED at step" in capsys.readouterr().out
    # The CLI's own exit: one error line, non-zero.
    with pytest.raises(SystemExit) as stopped:
        cli_main(["fit", "--config", QUICKSTART, *TINY, "--model.arch", "resnet8", "--run_dir", "direct",
                  "--model.optimizer.init_args.lr", "1e6"])  # fmt: skip
    assert str(stopped.value.code).startswith("error: training diverged at step ")
    # --retry-diverged moves the diverged run aside (kept) and starts it again.
    assert sweep_main([str(study_file), "--retry-diverged", "--", *TINY]) == 0
    moved = tmp_path / "logs" / STUDY / ".replaced" / "resnet8-lr1000000.0" / "seed0-1"
    assert runs.read_efficiency(str(moved))["status"] == "diverged"
    assert "moved aside to" in capsys.readouterr().out and run_dir.is_dir()


# ---------------------------------------------------------------- progress: killed in its test, broken last.ckpt
def copy_run(parallel, tmp_path: Path, seed: int = 0) -> tuple[Path, Path]:
    """A finished run of the parallel-sweeps study, copied into a study of its own under ``tmp_path``."""
    study_file = write_study(tmp_path, seeds=[seed])
    run_dir = tmp_path / "logs" / STUDY / "resnet8" / f"seed{seed}"
    shutil.copytree(parallel["study"] / "resnet8" / f"seed{seed}", run_dir)
    (run_dir / runs.LOCK_FILE).unlink(missing_ok=True)
    return study_file, run_dir


def test_a_run_killed_in_its_test_is_completed_by_testing_not_refitting(parallel, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study_file, run_dir = copy_run(parallel, tmp_path)
    tested = runs.read_efficiency(str(run_dir))
    report = dict(tested, test_acc=None, test_acc_per_mparam=None, test_acc_per_gmac=None, test_ckpt_path=None)
    (run_dir / "efficiency.json").write_text(json.dumps(report))  # as a kill during the final test leaves it
    last = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    assert assess(run_dir, None).status == "resume"
    assert sweep_main([str(study_file), "--", *TINY]) == 0
    assert "continuing from its checkpoint" in capsys.readouterr().out
    completed = runs.read_efficiency(str(run_dir))
    assert completed["test_acc"] == tested["test_acc"] and completed["global_step"] == tested["global_step"]
    assert completed["best_val_acc"] == tested["best_val_acc"]  # the record continued, not restarted
    assert completed["resumed_at_steps"] == [tested["global_step"]]
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == last  # no step trained, nothing re-saved
    assert sorted(p.name for p in run_dir.glob("config*.yaml")) == ["config-1.yaml", "config.yaml"]
    assert sweep_main([str(study_file), "--dry-run", "--", *TINY]) == 0  # the resume's config-1.yaml is no stale one
    assert "seed0: finished, skip" in capsys.readouterr().out


def test_a_truncated_last_checkpoint_falls_back_to_the_newest_intact_one(parallel, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, run_dir = copy_run(parallel, tmp_path, seed=1)
    last = run_dir / "checkpoints" / "last.ckpt"
    best = runs.best_checkpoint(str(run_dir))
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a kill while it was written
    with pytest.warns(runs.CheckpointFallbackWarning) as warned:
        chosen = runs.resume_checkpoint(str(run_dir))
    assert chosen == best and str(last) in str(warned[0].message) and best in str(warned[0].message)
    assert runs.best_checkpoint(str(run_dir)) == best  # --ckpt_path best never reads last.ckpt
    # `test --ckpt_path best` on the run works, and is recorded apart from the fit's own test.
    fit_record = (run_dir / "efficiency.json").read_bytes()
    cli_main(["test", "--run_dir", str(run_dir), "--ckpt_path", "best"])
    evaluation = json.loads((run_dir / "evaluations" / "test.json").read_text())
    assert evaluation["stage"] == "test" and evaluation["test_acc"] is not None
    assert (run_dir / "evaluations" / "test-config.yaml").is_file()
    assert (run_dir / "efficiency.json").read_bytes() == fit_record
    assert sorted(p.name for p in run_dir.glob("config*.yaml")) == ["config.yaml"]
    # Only broken checkpoints: the two messages agree (no "continue with --ckpt_path last" <-> "start without").
    for path in (run_dir / "checkpoints").glob("*.ckpt"):
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(
        runs.RunError, match="there is nothing to continue: start a new run in another directory"
    ) as nothing:
        runs.resolve_checkpoint("last", str(run_dir))
    assert "cannot be read" in str(nothing.value)
    assert not runs.has_checkpoints(str(run_dir)) and runs.fit_records(str(run_dir))  # nothing to continue, and a
    # fresh fit into it is refused too (its files would mix with this fit's): a new run goes elsewhere


def test_evaluations_never_make_an_unfinished_run_finished(parallel, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, run_dir = copy_run(parallel, tmp_path)
    report = dict(runs.read_efficiency(str(run_dir)), test_acc=None)
    (run_dir / "efficiency.json").write_text(json.dumps(report))  # trained, its own test never happened
    cli_main(["test", "--run_dir", str(run_dir), "--ckpt_path", "last"])
    assert json.loads((run_dir / "evaluations" / "test.json").read_text())["test_acc"] is not None
    assert assess(run_dir, None).status == "resume"  # still to be completed by its own test
    # Runs made before evaluations/ existed: a `test` wrote efficiency-1.json beside the fit's; it never counts.
    (run_dir / "efficiency-1.json").write_text(json.dumps({"stage": "test", "test_acc": 0.5}))
    assert assess(run_dir, None).status == "resume"


# ---------------------------------------------------------------- stale runs
def test_a_run_made_with_another_config_is_stale_and_never_skipped_as_finished(parallel, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study_file, run_dir = copy_run(parallel, tmp_path)
    assert sweep_main([str(study_file), "--dry-run", "--", *TINY]) == 0
    assert "seed0: finished, skip" in capsys.readouterr().out  # the same config: finished
    longer = [*TINY, "--trainer.max_epochs", "3"]
    assert sweep_main([str(study_file), "--dry-run", "--", *longer]) == 0
    assert "seed0: STALE: made with another config (trainer.max_epochs 2 -> 3)" in capsys.readouterr().out
    before = files_of(run_dir)
    assert sweep_main([str(study_file), "--", *longer]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: 1 run(s) of study 'faults' were made with another config")
    assert files_of(run_dir) == before  # refused: nothing run, nothing moved
    assert sweep_main([str(study_file), "--rerun-stale", "--", *longer]) == 0
    moved = tmp_path / "logs" / STUDY / ".replaced" / "resnet8" / "seed0-1"
    assert files_of(moved) == {moved / p.relative_to(run_dir): data for p, data in before.items()}  # kept whole
    assert runs.read_efficiency(str(run_dir))["max_epochs"] == 3 and assess(run_dir, None).status == "finished"


def test_a_run_that_appears_while_the_sweep_runs_is_still_checked_for_its_config(
    parallel, tmp_path, capsys, monkeypatch
):
    """Another sweep (or a user) puts a run made with other settings in place after this sweep looked: it was
    skipped as 'finished earlier' (exit 0) and would have been exported as a result of this study."""
    import src.sweep

    monkeypatch.chdir(tmp_path)
    study_file, run_dir = copy_run(parallel, tmp_path)  # made with max_epochs 2
    away = tmp_path / "elsewhere"
    run_dir.rename(away)
    real = src.sweep.planned_configs

    def then_it_appears(*args, **kwargs):
        planned = real(*args, **kwargs)
        away.rename(run_dir)
        return planned

    monkeypatch.setattr(src.sweep, "planned_configs", then_it_appears)
    assert sweep_main([str(study_file), "--", *TINY, "--trainer.max_epochs", "3"]) == 2
    out = capsys.readouterr().out
    assert "seed0: STALE: made with another config (trainer.max_epochs 2 -> 3)" in out, out
    assert "finished earlier, skipped" not in out
    assert {p.name for p in run_dir.parent.iterdir()} == {"seed0"}  # nothing moved, nothing trained
    assert runs.read_efficiency(str(run_dir))["max_epochs"] == 2  # left as it was


# ---------------------------------------------------------------- the divergence guard itself
class _Module:
    device = torch.device("cpu")


class _Trainer:
    """Just what DivergenceGuard reads."""

    def __init__(self) -> None:
        self.global_step, self.world_size, self.should_stop, self.max_steps, self.callbacks = 0, 1, False, -1, []


def test_divergence_guard_names_the_first_non_finite_step():
    from src.callbacks.divergence import DivergenceGuard, TrainingDiverged

    class Efficiency:
        marked: tuple | None = None

        def mark_diverged(self, step, reason):
            Efficiency.marked = (step, reason)

    guard, trainer = DivergenceGuard(check_every_n_steps=5, max_loss_ratio=None), _Trainer()
    trainer.callbacks = [Efficiency()]
    guard.on_train_start(trainer, _Module())
    losses = [2.3, 2.0, 1e30, float("nan"), 1.0]
    with pytest.raises(TrainingDiverged, match=r"^training diverged at step 4: training loss is nan"):
        for loss in losses:
            trainer.global_step += 1
            guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(loss)}, None, 0)
    assert Efficiency.marked == (4, "training loss is nan")
    ratio = DivergenceGuard(max_loss_ratio=1000, reference_steps=3, check_every_n_steps=1)
    ratio.on_train_start(trainer, _Module())
    trainer.global_step = 0
    with pytest.raises(TrainingDiverged, match=r"at step 3: training loss 5000 is over 1000x its start \(2\)"):
        for loss in [2.0, 4.0, 5000.0]:
            trainer.global_step += 1
            ratio.on_train_batch_end(trainer, None, {"loss": torch.tensor(loss)}, None, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = DivergenceGuard()
        quiet.on_train_start(trainer, _Module())
        for step, loss in enumerate([2.3, 2.5, 50.0, 2.0, 900.0], 1):  # noisy, never 1000x its start (2.3)
            trainer.global_step = step
            quiet.on_train_batch_end(trainer, None, {"loss": torch.tensor(loss)}, None, 0)
        quiet.check(trainer)


def test_slurm_array_task_sets_aside_an_attempt_that_died_before_its_first_checkpoint(tmp_path):
    """A re-submitted array (a new SLURM job) found the records of a dead attempt and no checkpoint: the fit was
    refused ('holds checkpoints of SLURM job 1001', none there), so the study never continued (an audit)."""
    import fcntl

    from src.sweeping.plan import plan_runs
    from src.sweeping.slurm import render_sbatch
    from src.sweeping.study import Study

    study = Study(name=STUDY, root=str(tmp_path / "logs"), archs=["resnet8"], seeds=[0])
    run = plan_runs(study.validate())[0]
    script = tmp_path / "sweep.sbatch"
    script.write_text(render_sbatch(study, [run], tmp_path))
    run.run_dir.mkdir(parents=True)
    left = {"config.yaml": "seed_everything: 0\n", "efficiency.json": '{"test_acc": null}', "slurm.json": "{}"}
    for name, text in left.items():
        (run.run_dir / name).write_text(text)
    (run.run_dir / "checkpoints").mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text('#!/bin/sh\necho "launched: $*"\n')
    (bin_dir / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_ARRAY_TASK_ID": "0"}

    with open(run.run_dir / runs.LOCK_FILE, "a") as held:  # a fit of another job is writing it: not touched
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        busy = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert busy.returncode == 1 and "in use by another process" in busy.stderr and "launched" not in busy.stdout
    assert {p.name for p in run.run_dir.iterdir()} == {*left, "checkpoints", runs.LOCK_FILE}

    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, cwd=tmp_path)
    aside = tmp_path / "logs" / STUDY / ".replaced" / "resnet8" / "seed0-1"  # where src.sweep moves such an attempt
    assert done.returncode == 0, done.stderr
    assert f"its files moved aside to {aside}" in done.stdout
    launched = done.stdout.strip().splitlines()[-1]
    assert launched.startswith("launched: -m src.cli fit") and "--ckpt_path" not in launched
    assert [p.name for p in run.run_dir.iterdir()] == [runs.LOCK_FILE]
    assert {p.name: p.read_text() for p in aside.iterdir() if p.is_file()} == left  # kept whole


def test_slurm_array_task_skips_a_diverged_run(tmp_path):
    from src.sweeping.plan import plan_runs
    from src.sweeping.slurm import render_sbatch
    from src.sweeping.study import Study

    study = Study(name=STUDY, root=str(tmp_path / "logs"), archs=["resnet8"], seeds=[0])
    run = plan_runs(study.validate())[0]
    script = tmp_path / "sweep.sbatch"
    script.write_text(render_sbatch(study, [run], tmp_path))
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "efficiency.json").write_text(json.dumps({"status": "diverged", "diverged_step": 3}, indent=2))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text('#!/bin/sh\necho "launched: $*"\n')
    (bin_dir / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_ARRAY_TASK_ID": "0"}
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith(f"{run.run_dir}: DIVERGED, skipped")
    assert "launched" not in done.stdout
