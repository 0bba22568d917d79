"""``python -m scripts.study_driver``: the loop over an arm's units (made, watched against ``--until``, committed)
and the command line."""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from scripts import study_driver
from scripts.study_driver import checkouts, pinned_worktree
from scripts.study_driver.checkouts import DriverError, cpu_env, git, iso, now
from scripts.study_driver.committing import commit_paths, commit_runs, plan_results, uncommitted, unit_message
from scripts.study_driver.pinned_worktree import blocked, has_bf16, prepare_worktree, run_state, same_plan, unit_done
from scripts.study_driver.units import Unit, eta_of, log_name, plan_units, selection_of, unit_seconds
from src.sweeping.study import Study, StudyError, load_study

CHECK_FOR = 600  # seconds of a unit during which its ETA may still stop it; later it is kept whatever happens
FIRST_LOOK = 180  # seconds before the first ETA is read: the first steps' rate says little
SAFETY = 1.15  # the ETA is scaled by this (a rate that drifts, a shared core)
POLL_S = 15  # how often a unit's progress is looked at
FAILURES_IN_A_ROW = 2  # units whose sweep failed with nothing ended: then the machine or the data is wrong, stop


class SweepChild:
    """The sweep of one unit, its output echoed, the run it is on now read from its 'running (output: LOG)' lines."""

    def __init__(self, command: list[str], worktree: Path) -> None:
        self.process = subprocess.Popen(
            command, cwd=worktree, env=cpu_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.worktree = worktree
        self.current: tuple[Path, int] | None = None  # the log of the run being made, and its size when it started
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            print(line, end="", flush=True)
            found = re.search(r": running .*\(output: (.+)\)$", line.rstrip())
            if found:
                log = self.worktree / found.group(1)
                self.current = (log, log.stat().st_size if log.exists() else 0)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait()


def make_unit(
    study: Study, study_file: str, unit: Unit, worktree: Path, python: Path, until: float | None
) -> int | None:
    """Make the unit's runs: the sweep's exit status, or ``None`` when it was stopped because it would not end by
    ``until``."""
    command = [str(python), "-m", "src.sweep", study_file, *unit.sweep_args()]
    child = SweepChild(command, worktree)
    started = time.time()
    try:
        while child.process.poll() is None:
            time.sleep(POLL_S)
            waited = time.time() - started
            if until is None or waited > CHECK_FOR or waited < FIRST_LOOK or child.current is None:
                continue
            log, offset = child.current
            progress = eta_of(log, offset)
            first = next((run for run in unit.runs if log.name == log_name(run)), None)
            if progress is None or first is None:
                continue
            end = time.time() + unit_seconds(study, unit, first, progress) * SAFETY
            if end > until:
                print(
                    f"{now()} {unit.label} would end ~{iso(end)}, after --until {iso(until)}: stopping it", flush=True
                )
                child.stop()
                return None
    except BaseException:  # Ctrl-C, and SIGTERM / SIGHUP (stopping_signals): no sweep goes on without the driver
        child.stop()
        raise
    child.thread.join()
    return child.process.returncode


@contextlib.contextmanager
def stopping_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP end the driver as Ctrl-C does, through ``make_unit``'s clean-up: by default Python dies at
    once, and the unit's sweep and its training went on, holding the run's lock (run.sh's lesson, 00d2f79)."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    before = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def parse_until(text: str | None) -> float | None:
    """``--until`` (``20:15``, ``tomorrow 01:30``: what ``date -d`` reads, in UTC) as a time, which must be ahead."""
    if text is None:
        return None
    found = subprocess.run(["date", "-u", "-d", text, "+%s"], capture_output=True, text=True)
    if not text.strip() or found.returncode != 0:
        raise DriverError(f"--until {text!r} is not a time `date -d` reads (e.g. 20:15, 'tomorrow 01:30')")
    until = float(found.stdout.strip())
    if until <= time.time():
        raise DriverError(
            f"--until {text!r} is {iso(until)}, already past (read as UTC"
            + (f"; after midnight: 'tomorrow {text.strip()}')" if re.fullmatch(r"\d{1,2}:\d\d", text.strip()) else ")")
        )
    return until


def same_study_file(study_file: str, commit: str) -> None:
    """The units are read from this checkout's study file: it must be the one the arm's commit trains."""
    pinned = git("show", f"{commit}:{study_file}", check=False)
    if pinned.returncode != 0:
        raise DriverError(f"{study_file} does not exist at the arm's commit {commit}")
    if pinned.stdout != (checkouts.MAIN / study_file).read_text():
        raise DriverError(f"{study_file} differs from the one at the arm's commit {commit}: one study per arm")


def resolve_commit(name: str) -> str:
    """``--commit`` (a sha, a tag, HEAD) as the full sha the runs' provenance records."""
    found = git("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}", check=False)
    if found.returncode != 0:
        raise DriverError(f"--commit {name!r} is no commit of {checkouts.MAIN}")
    return found.stdout.strip()


def drive(args: argparse.Namespace) -> int:
    until = parse_until(args.until)  # what the command line got wrong first, before git is asked anything
    plan_results(args.plan)
    study = load_study(args.study)
    args.commit = resolve_commit(args.commit)
    same_study_file(args.study, args.commit)
    units = plan_units(study)
    worktree = Path(args.worktree or checkouts.MAIN.parent / f"study-{study.name}").resolve()
    if args.dry_run:
        for unit in units:
            done = sum(checkouts.committed(study, run) for run in unit.runs)
            print(f"{unit.label}: {done}/{len(unit.runs)} committed")
        return 0
    python = prepare_worktree(worktree, args.commit)
    if not has_bf16(python):
        print(f"{now()} this CPU has no bf16 kernels in PyTorch (no AVX-512): the arm's bf16 runs would take ~11x "
              "their time here; not starting any", flush=True)  # fmt: skip
        return 2
    pinned_worktree.sync_results(study, worktree)
    same_plan(args.study, study, worktree, python)
    if until is not None:
        print(f"{now()} --until: no unit that will not have ended by {iso(until)}", flush=True)
    with stopping_signals():
        return drive_units(args, study, units, worktree, python, until)


def ready(study: Study, plan: str, worktree: Path) -> None:
    """What would refuse a unit's runs after hours of training, checked before it starts: changes in this checkout
    to what the commit writes, a worktree whose tracked files differ from the arm's commit (its runs: a dirty tree)."""
    dirty = uncommitted(commit_paths(study, plan))
    if dirty:
        raise DriverError(f"uncommitted changes in what each unit's commit writes (commit or stash them):\n{dirty}")
    changed = git("status", "--porcelain", "--untracked-files=no", cwd=worktree).stdout
    if changed:
        raise DriverError(f"{worktree} has changes to tracked files: its runs would be from a dirty tree:\n{changed}")


def drive_units(
    args: argparse.Namespace, study: Study, units: list[Unit], worktree: Path, python: Path, until: float | None
) -> int:
    """The loop: each unit not yet committed, made and committed, in the sweep's order."""
    did_not_fit: dict[str, float] = {}  # arch -> seconds that were left when a unit of it would not end in time
    failed_in_a_row = 0
    for unit in units:
        if (worktree / "STOP_STUDY").exists():
            (worktree / "STOP_STUDY").unlink()
            print(f"{now()} STOP_STUDY: stopping", flush=True)
            break
        if unit_done(study, unit):
            continue
        choosing = selection_of(units, unit)
        reason = blocked(study, unit, worktree)
        if choosing is not None and not unit_done(study, choosing):
            reason = f"waits for {choosing.label} to be committed (they choose its settings)"
        if reason:
            print(f"{now()} {unit.label}: skipped: {reason}", flush=True)
            continue
        left = until - time.time() if until is not None else None
        if left is not None:
            if left < CHECK_FOR:
                print(f"{now()} --until: too little time left for a unit", flush=True)
                break
            if unit.main.arch in did_not_fit and left <= did_not_fit[unit.main.arch]:
                print(f"{now()} {unit.label}: skipped: a unit of {unit.main.arch} did not fit in more time", flush=True)
                continue
        ready(study, args.plan, worktree)
        pinned_worktree.sync_results(study, worktree)
        pinned_worktree.fresh_start(study, unit, worktree)
        print(f"{now()} start {unit.label}", flush=True)
        status = make_unit(study, args.study, unit, worktree, python, until)
        if status is None:
            did_not_fit[unit.main.arch] = left or 0.0
            pinned_worktree.fresh_start(study, unit, worktree)
        elif status != 0:
            print(f"{now()} {unit.label}: the sweep exited with status {status} (its output above)", flush=True)
        ended = [
            run.label
            for run in unit.runs
            if not checkouts.committed(study, run)
            and (target := study.results_dir(run)) is not None
            and run_state(worktree / target) in (("finished", False), ("diverged", False))
        ]
        # A diverged dense run has no pruned runs: they would start from weights that are not there.
        parent_diverged = run_state(worktree / unit.main.run_dir)[0] == "diverged"
        finished_whole = all(
            checkouts.committed(study, run) or run.label in ended or (run.after is not None and parent_diverged)
            for run in unit.runs
        )
        if ended and (finished_whole or unit.selects is not None):  # a selection run stands alone
            commit_runs(args.study, args.commit, args.plan, ended, worktree, unit_message(study, unit, worktree, ended))
            print(f"{now()} committed {', '.join(ended)}", flush=True)
        elif ended:
            print(f"{now()} {unit.label} did not end whole: {', '.join(ended)} not committed", flush=True)
        failed_in_a_row = failed_in_a_row + 1 if status not in (None, 0) and not ended else 0
        if failed_in_a_row >= FAILURES_IN_A_ROW:
            print(
                f"{now()} {failed_in_a_row} units in a row failed with nothing ended: stopping (the machine, the "
                "data or the pinned worktree is wrong; the sweeps' output above says what)",
                flush=True,
            )
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    summary = (study_driver.__doc__ or "").split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m scripts.study_driver", description=summary)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "commit"):
        sub = commands.add_parser(name)
        sub.add_argument("study", help="the arm's study file, e.g. configs/studies/cifar10_frontier_16ep.yaml")
        sub.add_argument("--commit", required=True, help="the arm's commit: every run trains at it")
        sub.add_argument("--plan", required=True, help="the analysis plan whose report is regenerated with each run")
        sub.add_argument("--worktree", help="the pinned worktree (default: ../study-<study name>)")
    run_parser = commands.choices["run"]
    run_parser.add_argument("--until", help="start or keep no unit that will not have ended by then (UTC)")
    run_parser.add_argument("--dry-run", action="store_true", help="list the units and what is committed")
    commit_parser = commands.choices["commit"]
    commit_parser.add_argument("-m", "--message", required=True)
    commit_parser.add_argument(
        "runs", nargs="+", help="runs by label, e.g. resnet56/seed0 select/resnet8-lr0.1/seed100"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return drive(args)
        args.commit = resolve_commit(args.commit)
        study = load_study(args.study)
        worktree = Path(args.worktree or checkouts.MAIN.parent / f"study-{study.name}").resolve()
        commit_runs(args.study, args.commit, args.plan, args.runs, worktree, args.message)
        return 0
    except (DriverError, StudyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as error:  # git, venv or pip: say which and what it said
        said = (error.stderr or "").strip() if isinstance(error.stderr, str) else ""
        command = " ".join(map(str, error.cmd))
        print(f"error: {command} failed (exit status {error.returncode}): {said}", file=sys.stderr)
        return 1
