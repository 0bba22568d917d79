"""``scripts/study_driver/``: a study arm made unit by unit on a machine that goes away -- the units (a pruned
run never apart from its parent's checkpoint), the time a unit needs, what is moved aside and what may be
committed into an arm. The loop itself trains, so its rehearsal is the command in its docstring, not a test."""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.study_driver import checkouts, command, committing, pinned_worktree
from scripts.study_driver.checkouts import DriverError
from scripts.study_driver.committing import commit_problems
from scripts.study_driver.pinned_worktree import blocked, fresh_start
from scripts.study_driver.units import OVERHEAD_S, Unit, eta_of, plan_units, selection_of, unit_seconds
from src.sweeping.study import load_study

FRONTIER = "configs/studies/cifar10_frontier_16ep.yaml"


@pytest.fixture
def frontier(monkeypatch):
    monkeypatch.chdir(checkouts.MAIN)
    return load_study(FRONTIER).validate()


def _unit(units: list[Unit], label: str) -> Unit:
    return next(unit for unit in units if unit.main.label == label and unit.selects is None)


def test_the_frontier_splits_into_selection_units_and_dense_runs_with_their_pruned_runs(frontier):
    units = plan_units(frontier)
    assert sum(len(unit.runs) for unit in units) == 129  # every run of the study, once
    assert len({run.run_dir for unit in units for run in unit.runs}) == 129
    selecting = [unit for unit in units if unit.selects is not None]
    assert len(selecting) == 10 and all(len(unit.runs) == 3 for unit in selecting)
    resnet56 = _unit(units, "resnet56/seed1")
    assert len(resnet56.runs) == 13 and resnet56.runs[0] == resnet56.main  # the parent first, then 12 pruned runs
    assert all(run.after == resnet56.main.run_dir for run in resnet56.runs[1:])
    args = resnet56.sweep_args()
    assert args[:2] == ["--arch", "resnet56"] and args[-2:] == ["--seed", "1"] and "resnet56-p20-ft" in args
    assert selection_of(units, resnet56).sweep_args() == ["--arch", "resnet56", "--selection-only"]
    assert units.index(selection_of(units, resnet56)) < units.index(_unit(units, "resnet56/seed0"))
    assert _unit(units, "resnet8/seed2").runs == [_unit(units, "resnet8/seed2").main]  # nothing prunes resnet8


def test_a_units_time_scales_its_first_runs_rate_to_every_step_it_takes(frontier):
    units = plan_units(frontier)
    resnet56 = _unit(units, "resnet56/seed1")
    # 1 s a step: the parent's 2,800 steps left, 6 fine-tunes of 352 steps, 6 pruned nets scored as they are.
    expected = 2800 + 6 * 352 + 13 * OVERHEAD_S
    assert unit_seconds(frontier, resnet56, resnet56.main, (16, 2816, 2800)) == pytest.approx(expected)
    choosing = selection_of(units, resnet56)  # 3 runs of 4 epochs (704 steps), the first at step 4
    expected = 700 + 2 * 704 + 3 * OVERHEAD_S
    assert unit_seconds(frontier, choosing, choosing.main, (4, 704, 700)) == pytest.approx(expected)


def test_the_eta_is_the_newest_progress_line_after_an_earlier_attempts_lines(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("[train] epoch 3 step 600/2816 (21.3%) 1.2 it/s eta 0:30:00 train/loss_step=1.1\n")
    offset = log.stat().st_size
    assert eta_of(log, offset) is None  # the earlier attempt's line is not this one's
    with open(log, "a") as handle:
        handle.write("$ python -m src.cli fit ...\n")
        handle.write("[train] epoch 0 step 38/2816 (1.3%) 1.25 it/s eta 0:37:09 train/loss_step=2.395\n")
        handle.write("[train] epoch 0 step 76/2816 (2.7%) 0.01 it/s eta 1 day, 2:03:04 train/loss_step=2.2\n")
    assert eta_of(log, offset) == (76, 2816, (26 * 60 + 3) * 60 + 4)
    assert eta_of(tmp_path / "missing.log") is None


def _record(**changes):
    record = {
        "status": "finished",
        "resumed_at_steps": [],
        "provenance": {"git_commit": "abc1234" + "0" * 33, "git_dirty": False, "device": "AMD EPYC", "cpu": "AMD EPYC",
                       "packages": {"torch": "2.14.1", "torchvision": "0.29.1", "lightning": "2.6.6",
                                    "torchmetrics": "1.9.0"}},
    }  # fmt: skip
    for key, value in changes.items():
        if key in ("git_commit", "git_dirty", "device"):
            record["provenance"][key] = value
        else:
            record[key] = value
    return record


def test_commit_refuses_what_would_make_the_arm_more_than_one_clean_code_version_and_device(tmp_path):
    good = _record()
    kind = committing.device_kind(good)
    assert commit_problems({"a/seed0": good, "b/seed0": _record(status="diverged")}, "abc1234", {kind}) == []
    cases = {
        "status 'trained', not finished": _record(status="trained"),
        "resumed at steps [704]": _record(resumed_at_steps=[704]),
        "not the arm's abc1234": _record(git_commit="def5678"),
        "dirty tree": _record(git_dirty=True),
        "device and packages": _record(device="NVIDIA H200"),
    }
    for message, record in cases.items():
        (problem,) = commit_problems({"a/seed0": record}, "abc1234", {kind})
        assert problem.startswith("a/seed0: ") and message in problem
    # An arm's first runs set its kind: two kinds in one commit are refused too.
    assert len(commit_problems({"a/seed0": good, "b/seed0": _record(device="NVIDIA H200")}, "abc1234", set())) == 1


def test_a_pruned_run_is_never_made_without_its_parents_checkpoint_on_this_machine(frontier, tmp_path, monkeypatch):
    resnet56 = _unit(plan_units(frontier), "resnet56/seed1")
    monkeypatch.setattr(checkouts, "committed", lambda study, run: run is resnet56.main)
    reason = blocked(frontier, resnet56, tmp_path)
    assert reason is not None and "12 pruned run(s) of resnet56/seed1" in reason and "trained elsewhere" in reason
    checkpoints = tmp_path / resnet56.main.run_dir / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.ckpt").write_bytes(b"")
    assert blocked(frontier, resnet56, tmp_path) is None  # trained here: its pruned runs can start from it
    monkeypatch.setattr(checkouts, "committed", lambda study, run: False)
    assert blocked(frontier, resnet56, tmp_path) is None  # nothing committed: the unit is made whole


def test_a_run_cut_off_or_resumed_is_moved_aside_and_a_clean_one_kept(frontier, tmp_path, monkeypatch):
    units = plan_units(frontier)
    resnet20 = _unit(units, "resnet20/seed0")
    monkeypatch.setattr(checkouts, "committed", lambda study, run: False)
    states = {0: {"status": "finished"}, 1: {"status": "finished", "resumed_at_steps": [900]}, 2: None}
    for run, state in zip(resnet20.runs, states.values()):
        (tmp_path / run.run_dir).mkdir(parents=True)
        (tmp_path / run.run_dir / "metrics.csv").write_text("step\n")
        if state is not None:
            (tmp_path / run.run_dir / "efficiency.json").write_text(json.dumps(state))
    fresh_start(frontier, resnet20, tmp_path)
    kept, resumed, cut = resnet20.runs[:3]
    assert (tmp_path / kept.run_dir / "efficiency.json").exists()
    assert not (tmp_path / resumed.run_dir).exists() and not (tmp_path / cut.run_dir).exists()
    aside = sorted((tmp_path / frontier.directory / ".interrupted").iterdir())
    assert sorted(path.name.rsplit("_", 1)[0] for path in aside) == ["resnet20-p14_seed0", "resnet20-p8_seed0"]
    assert (resumed.variant, cut.variant) == ("resnet20-p8", "resnet20-p14")
    assert all((path / "run" / "metrics.csv").exists() for path in aside)  # moved, never deleted


def test_a_run_whose_lock_is_held_stops_the_driver(frontier, tmp_path, monkeypatch):
    resnet8 = _unit(plan_units(frontier), "resnet8/seed0")
    monkeypatch.setattr(checkouts, "committed", lambda study, run: False)
    folder = tmp_path / resnet8.main.run_dir
    folder.mkdir(parents=True)
    with open(folder / "run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(DriverError, match="in use by another process"):
            fresh_start(frontier, resnet8, tmp_path)
    assert folder.is_dir()


def test_the_study_file_must_be_the_one_at_the_arms_commit(monkeypatch, tmp_path):
    """The units are read from the main checkout's study file; the runs train the pinned commit's."""
    monkeypatch.setattr(checkouts, "MAIN", tmp_path)
    (tmp_path / "study.yaml").write_text("archs: [resnet8]\n")
    for git_args in (["init", "-q"], ["add", "study.yaml"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit",
                                                             "-qm", "pin"]):  # fmt: skip
        checkouts.git(*git_args)
    command.same_study_file("study.yaml", "HEAD")
    (tmp_path / "study.yaml").write_text("archs: [resnet8, resnet14]\n")
    with pytest.raises(DriverError, match="differs from the one at the arm's commit HEAD"):
        command.same_study_file("study.yaml", "HEAD")
    with pytest.raises(DriverError, match="does not exist at the arm's commit"):
        command.same_study_file("other.yaml", "HEAD")


def test_a_bad_until_or_plan_is_one_error_line(capsys, monkeypatch):
    monkeypatch.chdir(checkouts.MAIN)
    plan = "configs/studies/plans/cifar10_frontier.yaml"
    for until, message in (("yesterday 00:00", "already past (read as UTC)"), ("half past", "is not a time")):
        assert command.main(["run", FRONTIER, "--commit", "HEAD", "--plan", plan, "--until", until]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: --until ") and message in err and err.count("\n") == 1
    assert command.main(["run", FRONTIER, "--commit", "HEAD", "--plan", "nothing.yaml", "--dry-run"]) == 1
    assert "nothing.yaml" in capsys.readouterr().err
    assert command.parse_until(None) is None


def test_a_unit_that_would_not_end_in_time_is_stopped_in_its_first_minutes(frontier, tmp_path, monkeypatch):
    """The sweep of the unit is a stand-in here: it announces its first run and writes one progress line."""
    unit = _unit(plan_units(frontier), "resnet56/seed1")
    log = tmp_path / "lightning_logs" / "cifar10_frontier_16ep" / "sweep_logs" / "resnet56_seed1.log"
    log.parent.mkdir(parents=True)
    fake = tmp_path / "python"
    fake.write_text(
        "#!/bin/bash\n"
        f"echo '[1/13] resnet56/seed1: running (output: {log.relative_to(tmp_path)})'\n"
        "sleep 0.5\n"  # as a run does: its progress comes after the sweep announced it
        f"echo '[train] epoch 0 step 16/2816 (0.6%) 1.0 it/s eta 0:46:40 train/loss_step=2.3' >> {log}\n"
        "trap 'echo stopped > stopped; exit 143' TERM\n"
        "sleep 30 & wait\n"
    )
    fake.chmod(0o755)
    monkeypatch.setattr(command, "POLL_S", 0.2)
    monkeypatch.setattr(command, "FIRST_LOOK", 0)
    # About 2 h of work (1 s a step) against 1 h left: stopped; against 3 h: kept (the stand-in then just ends).
    started = command.time.time()
    assert command.make_unit(frontier, FRONTIER, unit, tmp_path, fake, started + 3600) is None
    assert (tmp_path / "stopped").read_text() == "stopped\n" and command.time.time() - started < 20
    (tmp_path / "stopped").unlink()
    monkeypatch.setattr(command, "CHECK_FOR", 2)  # past its first minutes a unit is kept whatever happens
    fake.write_text(fake.read_text().replace("sleep 30", "sleep 3"))
    assert command.make_unit(frontier, FRONTIER, unit, tmp_path, fake, started + 3 * 3600) == 0
    assert not (tmp_path / "stopped").exists()


# ------------------------------------------------------------------------------------------------ a toy arm in git
TOY = """name: toy
root: lightning_logs
results: docs/results/toy
archs: [resnet8, {name: resnet8-p, prune: resnet8, pruning: {params: 50000}, args: {trainer.max_steps: 0}}]
seeds: [0, 1]
"""


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A main checkout (a git repository holding a toy study) and a worktree beside it with finished runs: a dense
    resnet8 per seed and its pruned run, which started from the dense run's checkpoint."""
    main, worktree = tmp_path / "main", tmp_path / "worktree"
    main.mkdir()
    (main / "study.yaml").write_text(TOY)
    (main / "docs/results/toy-plan").mkdir(parents=True)  # what a commit writes besides the runs: there already
    for name in ("README.md", "docs/results.md", "docs/results/toy-plan/report.md"):
        (main / name).write_text("# \n")
    monkeypatch.setattr(checkouts, "MAIN", main)
    monkeypatch.chdir(main)
    for git_args in (["init", "-q"], ["config", "user.name", "t"], ["config", "user.email", "t@t"],
                    ["add", "."], ["commit", "-qm", "pin"]):  # fmt: skip
        checkouts.git(*git_args)
    commit = checkouts.git("rev-parse", "HEAD").stdout.strip()
    study = load_study("study.yaml")
    for seed in (0, 1):
        parent = worktree / f"lightning_logs/toy/resnet8/seed{seed}"
        (parent / "checkpoints").mkdir(parents=True)
        (parent / "checkpoints" / "best.ckpt").write_bytes(b"weights %d" % seed)
        digest = hashlib.sha256(b"weights %d" % seed).hexdigest()
        start = {"path": f"lightning_logs/toy/resnet8/seed{seed}/checkpoints/best.ckpt", "sha256": digest}
        for variant, extra in (("resnet8", {}), ("resnet8-p", {"init_from": start})):
            record = _record(git_commit=commit, **extra)
            folder = worktree / "docs/results/toy" / variant / f"seed{seed}"
            folder.mkdir(parents=True)
            (folder / "efficiency.json").write_text(json.dumps(record))
    monkeypatch.setattr(committing, "regenerate_reports", lambda study_file, plan, results: None)
    monkeypatch.setattr(committing, "plan_results", lambda plan: Path("docs/results/toy-plan"))
    return study, commit, worktree


def _head_files() -> set[str]:
    return set(checkouts.git("ls-tree", "-r", "--name-only", "HEAD").stdout.split())


def test_a_commit_that_git_refuses_leaves_nothing_staged_and_the_next_one_lands(toy):
    study, commit, worktree = toy
    hook = checkouts.MAIN / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\nexit 1\n")
    hook.chmod(0o755)
    labels = ["resnet8/seed0", "resnet8-p/seed0"]
    with pytest.raises(DriverError, match="git commit failed"):
        committing.commit_runs("study.yaml", commit, "plan.yaml", labels, worktree, "toy: seed 0")
    assert checkouts.git("status", "--porcelain").stdout == ""  # nothing staged, nothing copied
    hook.unlink()
    committing.commit_runs("study.yaml", commit, "plan.yaml", labels, worktree, "toy: seed 0")
    assert {"docs/results/toy/resnet8/seed0/efficiency.json", "docs/results/toy/resnet8-p/seed0/efficiency.json"} <= (
        _head_files()
    )


def test_a_parent_is_committed_only_with_its_pruned_runs_and_they_only_from_its_checkpoint(toy):
    study, commit, worktree = toy
    before = _head_files()

    def refused(labels: list[str], message: str) -> None:
        with pytest.raises(DriverError, match=message):
            committing.commit_runs("study.yaml", commit, "plan.yaml", labels, worktree, "toy")
        assert _head_files() == before and checkouts.git("status", "--porcelain").stdout == ""

    refused(["resnet8/seed0"], r"its pruned runs resnet8-p/seed0 are neither in this commit nor committed")
    refused(["resnet9/seed0"], "no run of study 'toy'")
    # The parent made again after its pruned run started: another checkpoint.
    (worktree / "lightning_logs/toy/resnet8/seed0/checkpoints/best.ckpt").write_bytes(b"weights again")
    refused(["resnet8/seed0", "resnet8-p/seed0"], "sha256 differs: the parent was made again after it")
    (worktree / "lightning_logs/toy/resnet8/seed0/checkpoints/best.ckpt").unlink()
    refused(["resnet8/seed0", "resnet8-p/seed0"], "its parent's checkpoint .* is gone")
    record = json.loads((worktree / "docs/results/toy/resnet8-p/seed1/efficiency.json").read_text())
    record["init_from"]["path"] = "lightning_logs/toy/resnet8/seed0/checkpoints/best.ckpt"  # another seed's parent
    (worktree / "docs/results/toy/resnet8-p/seed1/efficiency.json").write_text(json.dumps(record))
    refused(["resnet8/seed1", "resnet8-p/seed1"], "not from its parent lightning_logs/toy/resnet8/seed1")
    # A diverged parent has no pruned runs: committed alone, and its unit is done.
    parent = worktree / "docs/results/toy/resnet8/seed0/efficiency.json"
    parent.write_text(json.dumps({**json.loads(parent.read_text()), "status": "diverged"}))
    committing.commit_runs("study.yaml", commit, "plan.yaml", ["resnet8/seed0"], worktree, "toy: diverged")
    unit = plan_units(study)[0]
    assert unit.main.label == "resnet8/seed0" and pinned_worktree.unit_done(study, unit)
    assert blocked(study, unit, worktree) is None
    assert not pinned_worktree.unit_done(study, plan_units(study)[1])


def test_a_copy_of_a_result_no_longer_committed_goes_aside_unless_a_run_here_is_behind_it(toy):
    study, commit, worktree = toy
    labels = ["resnet8/seed0", "resnet8-p/seed0"]
    committing.commit_runs("study.yaml", commit, "plan.yaml", labels, worktree, "toy: seed 0")
    (worktree / "lightning_logs/toy/resnet8-p/seed1").mkdir(parents=True)  # made on this machine, not yet committed
    shutil.rmtree(worktree / "lightning_logs/toy/resnet8/seed1")  # its copy came from a commit, since removed
    pinned_worktree.sync_results(study, worktree)
    results = worktree / "docs/results/toy"
    assert (results / "resnet8/seed0").is_dir() and (results / "resnet8-p/seed1").is_dir()
    assert not (results / "resnet8/seed1").exists()  # a copy with no run here and no commit: aside
    (aside,) = (worktree / "lightning_logs/toy/.interrupted").iterdir()
    assert aside.name.startswith("resnet8_seed1_") and (aside / "results" / "efficiency.json").exists()


def test_a_parent_made_again_takes_its_pruned_runs_aside_with_it(toy, monkeypatch):
    study, commit, worktree = toy
    monkeypatch.setattr(checkouts, "committed", lambda study, run: False)
    unit = plan_units(study)[0]
    parent, child = unit.runs
    for run, state in ((parent, {"status": "finished", "resumed_at_steps": [5]}), (child, {"status": "finished"})):
        (worktree / run.run_dir).mkdir(parents=True, exist_ok=True)
        (worktree / run.run_dir / "efficiency.json").write_text(json.dumps(state))
    fresh_start(study, unit, worktree)
    assert not (worktree / parent.run_dir).exists() and not (worktree / child.run_dir).exists()
    assert len(list((worktree / "lightning_logs/toy/.interrupted").iterdir())) == 2
    (worktree / child.run_dir).mkdir(parents=True)  # a pruned run whose parent is not here at all
    (worktree / child.run_dir / "efficiency.json").write_text(json.dumps({"status": "finished"}))
    fresh_start(study, unit, worktree)
    assert not (worktree / child.run_dir).exists()


def test_units_that_fail_with_nothing_ended_stop_the_driver(toy, monkeypatch, capsys):
    study, commit, worktree = toy
    calls = []
    for module, name in ((command, "ready"), (pinned_worktree, "sync_results"), (pinned_worktree, "fresh_start")):
        monkeypatch.setattr(module, name, lambda *args: None)
    monkeypatch.setattr(checkouts, "committed", lambda study, run: False)
    monkeypatch.setattr(command, "make_unit", lambda study, file, unit, *rest: calls.append(unit.label) or 1)
    empty = worktree.parent / "empty"  # no run ended there
    empty.mkdir()
    args = command.argparse.Namespace(study="study.yaml", commit=commit, plan="plan.yaml")
    assert command.drive_units(args, study, plan_units(study), empty, Path("python"), None) == 1
    assert calls == ["resnet8/seed0 (+ 1 pruned runs)", "resnet8/seed1 (+ 1 pruned runs)"]
    out = capsys.readouterr().out
    assert "the sweep exited with status 1" in out and "2 units in a row failed with nothing ended: stopping" in out


def test_the_pinned_code_must_plan_the_runs_this_checkout_cut_into_units(frontier, monkeypatch):
    pinned_worktree.same_plan(FRONTIER, frontier, checkouts.MAIN, Path(sys.executable))  # the same code: the same
    monkeypatch.setattr(pinned_worktree, "planned_here", lambda study: [["resnet8/seed0", "x", "y", "None", None]])
    with pytest.raises(DriverError, match="plans other runs of .* than this checkout's code"):
        pinned_worktree.same_plan(FRONTIER, frontier, checkouts.MAIN, Path(sys.executable))


def test_a_worktree_python_without_torch_is_an_error_not_a_cpu_without_bf16(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(DriverError, match="cannot import torch .*No module named 'torch'"):
        pinned_worktree.has_bf16(fake)
    fake.write_text(f"#!/bin/sh\nexit {pinned_worktree.NO_BF16}\n")
    assert pinned_worktree.has_bf16(fake) is False


def test_an_empty_or_past_until_says_how_to_write_it():
    with pytest.raises(DriverError, match="is not a time"):
        command.parse_until("")
    with pytest.raises(DriverError, match="after midnight: 'tomorrow 00:00'"):
        command.parse_until("00:00")


STOPPED_BY_SIGNAL = """
import sys, time
from pathlib import Path
from scripts.study_driver import command, units
from src.sweeping.study import load_study
study = load_study(sys.argv[1])
unit = units.plan_units(study)[-1]
with command.stopping_signals():
    command.make_unit(study, sys.argv[1], unit, Path(sys.argv[2]), Path(sys.argv[3]), None)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_driver_stopped_by_a_signal_stops_its_sweep(tmp_path, signum):
    """Python's default SIGTERM ends a process at once: the sweep and its training went on without the driver."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/bash\ntrap 'echo stopped > stopped; exit 143' TERM\necho started > started\n"
                    "sleep 60 & wait\n")  # fmt: skip
    fake.chmod(0o755)
    driver = subprocess.Popen(
        [sys.executable, "-c", STOPPED_BY_SIGNAL, FRONTIER, str(tmp_path), str(fake)], cwd=checkouts.MAIN
    )
    deadline = time.time() + 300  # a loaded machine: the signal must come after the handler is in place
    while not (tmp_path / "started").exists() and time.time() < deadline:
        time.sleep(0.1)
    assert (tmp_path / "started").exists(), "the stand-in sweep never started"
    driver.send_signal(signum)
    assert driver.wait(timeout=30) == 128 + signum
    assert (tmp_path / "stopped").read_text() == "stopped\n"  # the sweep was stopped, not left running
