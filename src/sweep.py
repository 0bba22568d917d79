"""Sweep a study: ``python -m src.sweep configs/studies/cifar10_ladder.yaml [--dry-run | --slurm FILE]``.

Expands a study (architectures x grid overrides x seeds, on top of base configs; see
``src/sweeping/plan.py``) into runs, each in its own predictable directory
``<root>/<study>/<arch>[-<key><value>]/seed<k>/``, and

* runs them one after another on this machine, each as a fresh ``python -m src.cli fit``
  process (its output in ``<root>/<study>/sweep_logs/``), printing one line per run with its
  result; finished runs (tested) are skipped and never touched, unfinished ones resume from
  their ``last.ckpt`` (or start again when they have none);
* ``--jobs N``: runs N of them at once, one per visible GPU or, without GPUs, each on its own share
  of the CPUs (``src/sweeping/slots.py``); this process claims, watches and exports every run, so the
  results folder is written by one process only;
* ``--dry-run``: prints the plan (status and command of every run) and runs nothing; with
  ``--jobs`` also where the runs would go;
* ``--slurm FILE``: writes a SLURM array script with one task per run still to do (``--jobs N``: at
  most N tasks at once, the array's ``%N``);
* ``--collect``: copies the runs that already ended into the study's ``results`` folder; trains nothing.

A study with ``results: docs/results/<study>`` accumulates (``src/sweeping/results.py``): every run
that ends (finished or diverged) is copied there -- config, fit records, data.json, diagnostics,
its curves as ``metrics.csv``, no checkpoints -- to be committed; a run found there with the
config the study plans now counts as finished and is skipped even when the log root is empty (a
fresh machine), and one found there with another config is STALE. After a SLURM array, run
``--collect`` to copy its runs.

The study can come from a file, the command line, or both (the command line wins)::

    python -m src.sweep --name mini --config configs/cifar10/resnet20.yaml \\
        --arch resnet20 plain20 --seed 0 1 --grid model.shortcut=A,B -- --trainer.max_steps 2000

Everything after ``--`` is passed to every run unchanged.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import yaml

from src.runs import RunBusy, RunLock
from src.sweeping.plan import (
    RunSpec,
    Study,
    StudyError,
    format_command,
    is_study_file,
    load_study,
    plan_runs,
    run_command,
)
from src.sweeping.results import ResultsConflict, export_run, write_index
from src.sweeping.run_state import RunState, assess, move_aside
from src.sweeping.slots import CAN_PIN, Slot, assign_slots, cpu_ranges, pinned, usable_cpus, visible_gpus
from src.sweeping.slurm import render_sbatch

POLL_SECONDS = 0.2  # how often a parallel sweep looks whether one of its runs has ended


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(
        prog="python -m src.sweep",
        description="Run a study (architectures x overrides x seeds), print its plan, or write a SLURM array script.",
        epilog="Arguments after -- are passed to every run unchanged (e.g. -- --trainer.max_steps 2000).",
    )
    parser.add_argument("study", nargs="?", help="study file (configs/studies/*.yaml)")
    parser.add_argument("--name", help="study name (its folder under --root)")
    parser.add_argument("--root", help="log root of the study (default: lightning_logs)")
    parser.add_argument(
        "--config", action="append", help="base run config, repeat to stack (replaces the study's); or the study file"
    )
    parser.add_argument("--arch", nargs="+", help="architectures (replaces the study's)")
    parser.add_argument("--seed", nargs="+", type=int, help="seeds (replaces the study's)")
    parser.add_argument(
        "--grid", action="append", default=[], metavar="KEY=V1,V2", help="a grid axis, e.g. model.shortcut=A,B"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan; run nothing")
    parser.add_argument("--slurm", metavar="FILE", help="write a SLURM array script (one task per run to do)")
    parser.add_argument(
        "--collect",
        action="store_true",
        help="copy the runs that ended (finished or diverged) into the study's 'results' folder; train nothing",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="run N runs at once: one per visible GPU, or without GPUs each on cpus/N CPUs (default 1); "
        "with --slurm: at most N array tasks at once",
    )
    parser.add_argument("--show-output", action="store_true", help="stream each run's output here, not to its log")
    parser.add_argument(
        "--rerun-stale",
        action="store_true",
        help="move runs made with another config aside (into <study>/.replaced/, never deleted) and run them again",
    )
    parser.add_argument(
        "--retry-diverged",
        action="store_true",
        help="move diverged runs aside (into <study>/.replaced/) and start them again",
    )
    return parser.parse_args(argv), extra


def build_study(args: argparse.Namespace, extra: list[str]) -> Study:
    """The study from the file (if any) with the command line's replacements."""
    studies = [config for config in args.config or [] if is_study_file(config)]
    if studies:  # `--config study.yaml` reads as the study file, the way `python -m src.cli` users type it
        if args.study or len(studies) > 1:
            raise StudyError(f"one study file at a time, got {[args.study, *studies] if args.study else studies}")
        args.study = studies[0]
        args.config = [config for config in args.config if config not in studies] or None
    if args.study:
        if not is_study_file(args.study) and Path(args.study).is_file():
            try:  # a file that is not YAML at all is that, not "a run config"
                yaml.safe_load(Path(args.study).read_text())
            except yaml.YAMLError as error:
                mark = getattr(error, "problem_mark", None)
                where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
                problem = getattr(error, "problem", None) or " ".join(str(error).split())
                raise StudyError(f"study file {args.study!r} is not valid YAML{where}: {problem}") from None
            raise StudyError(f"{args.study!r} has no 'archs': it is a run config; pass it with --config")
        study = load_study(args.study)
    else:
        if not args.name:
            raise StudyError("give a study file, or --name with --arch (and --config, --seed, --grid)")
        study = Study(name=args.name)
    if args.name:
        study.name = args.name
    if args.root:
        study.root = args.root
    if args.config:
        study.configs = list(args.config)
    if args.arch:
        study.archs = list(args.arch)
    if args.seed:
        study.seeds = list(args.seed)
    for axis in args.grid:
        key, sep, values = axis.partition("=")
        if not sep or not key or not values:
            raise StudyError(f"--grid wants KEY=V1,V2,... (e.g. model.shortcut=A,B), got {axis!r}")
        study.grid[key] = [yaml.safe_load(value) for value in values.split(",")]
    study.extra_args = [*study.extra_args, *extra]
    return study.validate()


def result_line(report: dict | None) -> str:
    if not report:
        return "no efficiency.json"
    parts = []
    if report.get("test_acc") is not None:
        parts.append(f"test_acc {report['test_acc']:.4f}")
    if report.get("best_val_acc") is not None:
        parts.append(f"best val_acc {report['best_val_acc']:.4f}")
    if report.get("params_total") is not None:
        parts.append(f"{report['params_total']:,} params")
    if report.get("macs_per_sample"):
        parts.append(f"{report['macs_per_sample'] / 1e6:.2f}M MACs")
    return ", ".join(parts) or "no results recorded"


def planned_configs(study: Study, runs: list[RunSpec]) -> dict[Path, dict]:
    """The config each run's command resolves to now (parsed in this process, nothing built), by run directory.

    Only runs that already have a directory need one (to tell a stale run); parsing is cheap once
    the CLI is imported.
    """

    def exists(run: RunSpec) -> bool:
        results = study.results_dir(run)
        return run.run_dir.is_dir() or (results is not None and results.is_dir())

    existing = [run for run in runs if exists(run)]
    if not existing:
        return {}
    from src.cli import resolved_config  # lightning and the models: imported only when a run exists

    return {run.run_dir: resolved_config(run_command(study, run)[3:]) for run in existing}


def results_state(study: Study, run: RunSpec, planned: dict | None) -> RunState | None:
    """The run's state from the study's results folder: finished / diverged / stale there, else None."""
    target = study.results_dir(run)
    if target is None or not target.is_dir():
        return None
    state = assess(target, planned)
    if state.status not in ("finished", "diverged", "stale"):
        return None  # a results folder without a fit record: not a result
    state.in_results = True
    return state


def current_state(study: Study, run: RunSpec, planned: dict | None) -> RunState:
    """A matching committed result first (finished / diverged / stale there), else the log directory's state."""
    return results_state(study, run, planned) or assess(run.run_dir, planned)


def assess_runs(study: Study, runs: list[RunSpec]) -> list[RunState]:
    planned = planned_configs(study, runs)
    return [current_state(study, run, planned.get(run.run_dir)) for run in runs]


def state_line(state: RunState) -> str:
    where = " (in results)" if state.in_results else ""
    if state.status == "finished":
        return f"finished{where}, skip ({result_line(state.report)})"
    if state.status == "diverged":
        return f"DIVERGED{where} {state.detail}; skip (--retry-diverged moves it aside and starts it again)"
    if state.status == "stale":
        what = "the results run was made" if state.in_results else "made"
        return f"STALE: {what} with another config ({state.detail}); --rerun-stale moves it aside and runs it again"
    return ""


def print_plan(study: Study, runs: list[RunSpec]) -> None:
    results = f" (results in {study.results}/)" if study.results else ""
    print(f"study {study.name!r}: {len(runs)} runs in {study.directory}/{results}")
    for index, (run, state) in enumerate(zip(runs, assess_runs(study, runs)), 1):
        prefix = f"[{index}/{len(runs)}] {run.label}"
        holder = RunLock(run.run_dir).holder_if_busy()
        busy = f" (in use now by {holder})" if holder else ""
        if state.status in ("finished", "diverged", "stale"):
            print(f"{prefix}: {state_line(state)}{busy}")
            continue
        resume = state.status == "resume"
        action = "resume" if resume else ("restart" if state.status == "restart" else "run")
        print(f"{prefix}: {action}: {format_command(run_command(study, run, resume))}{busy}")


def clear_the_way(study: Study, runs: list[RunSpec], rerun_stale: bool, retry_diverged: bool) -> list[RunState]:
    """Refuse a study with stale runs (unless ``rerun_stale``); move aside what is to be run again."""
    states = assess_runs(study, runs)
    stale = [(run, state) for run, state in zip(runs, states) if state.status == "stale"]
    if stale and not rerun_stale:
        for run, state in stale:
            print(f"{run.label}: {state_line(state)}", file=sys.stderr)
        raise StudyError(
            f"{len(stale)} run(s) of study {study.name!r} were made with another config than planned now; "
            "rerun them with --rerun-stale (the old runs are moved aside, not deleted) or give the study a new --name"
        )
    moving = {"stale"} | ({"diverged"} if retry_diverged else set())
    planned = planned_configs(study, runs) if any(state.in_results for state in states) else {}
    for index, (run, state) in enumerate(zip(runs, states)):
        if state.status not in moving:
            continue
        if state.in_results:  # the committed result goes aside (never deleted); then the log run is looked at
            target = move_aside(study.results_dir(run), study.results)
            print(f"{run.label}: {state.status} in results, moved aside to {target}", flush=True)
            state = states[index] = assess(run.run_dir, planned.get(run.run_dir))
            if state.status not in moving:
                continue
        try:
            with RunLock(run.run_dir).acquire(role="src.sweep (moving the run aside)"):
                target = move_aside(run.run_dir, study.directory)
        except RunBusy as busy:
            print(f"{run.label}: not moved aside: {busy}", flush=True)
            continue
        print(f"{run.label}: {state.status}, moved aside to {target}", flush=True)
        states[index] = RunState("missing")
    return states


def export(study: Study, run: RunSpec) -> str | None:
    """Copy an ended run into the study's results folder; the line to print, or None without ``results``."""
    target = study.results_dir(run)
    if target is None:
        return None
    outcome = export_run(run.run_dir, target)  # ResultsConflict: the caller says so
    write_index(study.results, study.name, study_file_path(study))
    return f"copied to {target}" if outcome == "copied" else f"already in {target}"


def study_file_path(study: Study) -> str | None:
    """The study file as results.json names it: relative to here (the repository root) when it is inside."""
    if study.source is None:
        return None
    path = Path(study.source)
    if path.is_absolute():
        try:
            path = path.relative_to(Path.cwd())
        except ValueError:
            pass
    return path.as_posix()


def collect(study: Study, runs: list[RunSpec]) -> int:
    """``--collect``: copy every run that ended (finished or diverged) into the results folder; trains nothing."""
    if not study.results:
        raise StudyError(
            f"study {study.name!r} has no 'results' folder to collect into: add e.g. "
            f"`results: docs/results/{study.name}` to the study file"
        )
    planned = planned_configs(study, runs)
    copied, conflicts = 0, 0
    for index, run in enumerate(runs, 1):
        prefix = f"[{index}/{len(runs)}] {run.label}"
        state = assess(run.run_dir, planned.get(run.run_dir))
        if state.status == "stale":
            print(f"{prefix}: not copied: made with another config than planned ({state.detail})", flush=True)
            continue
        if state.status not in ("finished", "diverged"):
            held = results_state(study, run, planned.get(run.run_dir))
            note = f"; {state_line(held)}" if held else ""
            print(f"{prefix}: nothing to copy ({state.status} in {study.directory}){note}", flush=True)
            continue
        try:
            line = export(study, run)
        except ResultsConflict as conflict:
            conflicts += 1
            print(f"{prefix}: NOT COPIED: {conflict}", file=sys.stderr, flush=True)
            continue
        copied += line.startswith("copied")
        print(f"{prefix}: {state.status}, {line}", flush=True)
    print(f"{copied} run(s) copied into {study.results}/; commit them (git add {study.results})", flush=True)
    return 1 if conflicts else 0


def write_slurm(
    study: Study, runs: list[RunSpec], path: str, rerun_stale: bool, retry_diverged: bool, jobs: int | None = None
) -> None:
    """Write the array script; ``jobs`` caps the tasks running at once (the study's ``slurm.max_parallel``)."""
    if jobs is not None:  # the same promise as here: at most N runs at once, each on its own GPU(s)
        study.slurm = {**study.slurm, "max_parallel": jobs}
    states = clear_the_way(study, runs, rerun_stale, retry_diverged)
    todo = [run for run, state in zip(runs, states) if state.status not in ("finished", "diverged")]
    if not todo:
        print(f"study {study.name!r}: all {len(runs)} runs are finished or diverged; no SLURM script written")
        return
    target = Path(path)
    if target.exists():
        raise StudyError(f"{path!r} exists; choose another file name (the sweep never overwrites a file)")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_sbatch(study, todo, Path.cwd()))
    counts = {status: sum(state.status == status for state in states) for status in ("finished", "diverged")}
    left_out = " and ".join(f"{count} {status}" for status, count in counts.items() if count)
    note = f" ({left_out} runs left out)" if left_out else ""
    print(f"wrote {path}: {len(todo)} array tasks{note}. Submit with: sbatch {path}")


class SignalForwarder:
    """While the sweep waits for its runs, pass SIGTERM / SIGINT on to every one; a second signal kills them.

    The runs are started in their own sessions, so a Ctrl-C in the terminal reaches each once, through
    here, and a ``kill`` of the sweep alone no longer leaves runs training, re-parented to PID 1.
    """

    def __init__(self) -> None:
        self.children: list[subprocess.Popen] = []
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SignalForwarder:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        if exc_type is not None:  # the sweep itself broke: stop its runs rather than orphan them
            self.signum = self.signum or signal.SIGTERM
            self.forward()
            for child in self.children:
                child.wait()
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        again = self.signum is not None
        self.signum = signum
        self.forward(kill=again)

    def forward(self, kill: bool = False) -> None:
        if self.signum is None:
            return
        for child in self.children:
            if child.poll() is not None:
                continue
            if kill:
                child.kill()
            else:
                child.send_signal(self.signum)

    def start(self, command: list[str], **popen: object) -> subprocess.Popen:
        """Start a run in its own session and watch it; a signal that came while it started reaches it too."""
        child = subprocess.Popen(command, start_new_session=True, **popen)
        self.children.append(child)
        if self.signum is not None and child.poll() is None:
            child.send_signal(self.signum)
        return child

    def done(self, child: subprocess.Popen) -> None:
        """Stop watching a run that has ended."""
        self.children.remove(child)


@dataclass
class Running:
    """A run this sweep started and has not yet seen end: what it holds until then."""

    run: RunSpec
    prefix: str
    lock: RunLock
    child: subprocess.Popen
    slot: Slot | None
    log: IO[str] | None
    started: float


@dataclass
class Tally:
    """What the sweep counts for its closing lines and its exit status."""

    failed: int = 0
    diverged: int = 0
    busy: int = 0
    stopped: int = 0


def run_all(
    study: Study,
    runs: list[RunSpec],
    show_output: bool = False,
    rerun_stale: bool = False,
    retry_diverged: bool = False,
    jobs: int = 1,
) -> int:
    """Run every unfinished run, ``jobs`` at a time; return the sweep's exit status (0: nothing failed).

    One loop serves both: with ``jobs=1`` the single slot is this machine as it is (no pinning, no
    environment changes), and each run is waited for before the next is looked at, as always.
    A run is looked at (finished? in use? stale?) only once a slot is free for it, so what it shows
    is current when it starts; ended runs are reported and exported in this process, one at a time.
    """
    log_dir = study.directory / "sweep_logs"
    tally = Tally()
    print(f"study {study.name!r}: {len(runs)} runs in {study.directory}/", flush=True)
    free: list[Slot | None] = [None] if jobs == 1 else make_slots(study, runs, jobs)  # may refuse: before any move
    clear_the_way(study, runs, rerun_stale, retry_diverged)
    planned = planned_configs(study, runs)
    running: list[Running] = []
    with SignalForwarder() as forwarder:
        for index, run in enumerate(runs, 1):
            prefix = f"[{index}/{len(runs)}] {run.label}"
            while not free:
                free.append(settle(wait_any(running), running, study, forwarder, tally))
            if forwarder.signum is not None:  # start no more; wait for the runs that got the signal
                while running:
                    settle(wait_any(running), running, study, forwarder, tally)
                if not tally.stopped:  # the signal came between two runs
                    print(f"stopped by {signal.Signals(forwarder.signum).name} before {run.label}", file=sys.stderr)
                return 128 + forwarder.signum
            state = current_state(study, run, planned.get(run.run_dir))
            if state.status in ("finished", "diverged", "stale"):
                print(f"{prefix}: {state_line(state).replace(', skip', ' earlier, skipped', 1)}", flush=True)
                if state.status != "stale" and not state.in_results and study.results:
                    tally.failed += not report_export(study, run, prefix)  # ended before the study had results
                continue
            lock = RunLock(run.run_dir)
            try:
                lock.acquire(role="src.sweep")
            except RunBusy:
                tally.busy += 1
                print(f"{prefix}: skipped: in use by {lock.holder()} (another sweep or run)", flush=True)
                continue
            try:
                state = current_state(study, run, planned.get(run.run_dir))  # it may have moved on while we looked
                if state.status in ("finished", "diverged", "stale"):
                    print(f"{prefix}: {state_line(state)}", flush=True)
                    lock.release()
                    continue
                slot = free.pop(0)
                running.append(launch(study, run, state, lock, slot, forwarder, log_dir, show_output, prefix))
            except BaseException:
                lock.release()
                raise
        while running:
            settle(wait_any(running), running, study, forwarder, tally)
    if forwarder.signum is not None:
        return 128 + forwarder.signum
    if tally.diverged:
        print(f"{tally.diverged} run(s) diverged: recorded as such, not retried (--retry-diverged)", flush=True)
    if tally.busy:
        print(f"{tally.busy} run(s) were in use by other processes and left to them", flush=True)
    if tally.failed:
        print(f"{tally.failed} of {len(runs)} runs failed; re-run the same command to retry them", file=sys.stderr)
    return 1 if tally.failed else 0


def wait_any(running: list[Running]) -> Running:
    """The first of the running runs to end (waited for); one alone is simply waited on, as before ``--jobs``."""
    if len(running) == 1:
        running[0].child.wait()
        return running[0]
    while True:
        for entry in running:
            if entry.child.poll() is not None:
                return entry
        time.sleep(POLL_SECONDS)


def settle(
    entry: Running, running: list[Running], study: Study, forwarder: SignalForwarder, tally: Tally
) -> Slot | None:
    """Report a run that ended, release its lock and export it; return its slot, free again."""
    code, elapsed = entry.child.returncode, time.monotonic() - entry.started
    running.remove(entry)
    forwarder.done(entry.child)
    entry.lock.release()
    if entry.log is not None:
        entry.log.close()
    run, prefix = entry.run, entry.prefix
    state = assess(run.run_dir, None)
    if forwarder.signum is not None and state.status not in ("finished", "diverged"):
        tally.stopped += 1
        name = signal.Signals(forwarder.signum).name
        print(
            f"{prefix}: stopped by {name} (exit code {code}); the sweep stops here. Re-run the same "
            "command to continue",
            file=sys.stderr,
            flush=True,
        )
        return entry.slot
    if state.status == "diverged":
        tally.diverged += 1
        print(f"{prefix}: DIVERGED {state.detail} ({elapsed:.0f}s)", flush=True)
    elif code != 0:
        tally.failed += 1
        print(f"{prefix}: FAILED (exit code {code}, {elapsed:.0f}s)", flush=True)
    elif state.status != "finished":
        tally.failed += 1
        print(f"{prefix}: ended without a test accuracy ({elapsed:.0f}s)", flush=True)
    else:
        print(f"{prefix}: {result_line(state.report)} ({elapsed:.0f}s)", flush=True)
    if state.status in ("finished", "diverged") and study.results:
        tally.failed += not report_export(study, run, prefix)
    return entry.slot


def report_export(study: Study, run: RunSpec, prefix: str) -> bool:
    """Copy an ended run into the results folder and say so; False (said on stderr) when it may not."""
    try:
        print(f"{prefix}: {export(study, run)}", flush=True)
    except ResultsConflict as conflict:
        print(f"{prefix}: NOT COPIED to results: {conflict}", file=sys.stderr, flush=True)
        return False
    return True


def launch(
    study: Study,
    run: RunSpec,
    state: RunState,
    lock: RunLock,
    slot: Slot | None,
    forwarder: SignalForwarder,
    log_dir: Path,
    show_output: bool,
    prefix: str,
) -> Running:
    """Start the run's ``src.cli fit`` process in ``slot`` (None: as this process runs), handing it the run's lock."""
    resume = state.status == "resume"
    command = run_command(study, run, resume=resume)
    env = {**os.environ, **lock.child_env()}
    popen: dict = {"env": slot.env(env) if slot is not None else env, "pass_fds": [lock.fd]}
    log = None
    if not show_output:
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{run.variant}_seed{run.seed}.log"
        action = "continuing from its checkpoint" if resume else "running"
        where = f" on {slot.describe()}" if slot is not None else ""
        print(f"{prefix}: {action}{where} (output: {log_path})", flush=True)
        log = open(log_path, "a")
        log.write(f"$ {format_command(command)}\n")
        log.flush()
        popen.update(stdout=log, stderr=subprocess.STDOUT)
    try:
        with pinned(slot.cpus if slot is not None else ()):
            child = forwarder.start(command, **popen)
    except BaseException:
        if log is not None:
            log.close()
        raise
    return Running(run, prefix, lock, child, slot, log, time.monotonic())


def make_slots(study: Study, runs: list[RunSpec], jobs: int) -> list[Slot]:
    """The slots for ``--jobs`` on this machine (saying so when capped); refuses runs that want several GPUs."""
    import torch

    from src.data.base import available_cpus

    gpus = visible_gpus(os.environ, torch.cuda.device_count())
    slots, notice = assign_slots(jobs, gpus, usable_cpus(available_cpus()))
    if notice:
        print(notice, flush=True)
    if any(slot.gpu is not None for slot in slots):
        check_one_device(study, runs)
    return slots


ONE_DEVICE = (1, "1", "auto", -1, "-1", [0], "0,")  # every way of saying "the GPU it sees", given one to see


def check_one_device(study: Study, runs: list[RunSpec]) -> None:
    """Refuse, before anything starts, runs whose config wants more than the one GPU a slot gives them."""
    from src.cli import resolved_config

    for run in runs:
        trainer = resolved_config(run_command(study, run)[3:]).get("trainer") or {}
        devices, nodes = trainer.get("devices", "auto"), trainer.get("num_nodes") or 1
        if devices not in ONE_DEVICE or nodes != 1:
            nodes_note = f" on {nodes} nodes" if nodes != 1 else ""
            raise StudyError(
                f"--jobs gives each run one GPU, but {run.label} asks for trainer.devices {devices}{nodes_note}; "
                "set trainer.devices: 1 (e.g. -- --trainer.devices 1) or sweep with --jobs 1"
            )


def print_slots(slots: list[Slot]) -> None:
    """``--dry-run --jobs N``: where the runs would go, and the environment each would get."""
    print(f"--jobs {len(slots)}: {len(slots)} runs at once, each started when a slot is free:")
    for slot in slots:
        gpu = f"CUDA_VISIBLE_DEVICES={slot.gpu} " if slot.gpu is not None else ""
        cpus = f"pinned to CPUs {cpu_ranges(slot.cpus)}" if CAN_PIN else "(this system cannot pin CPUs)"
        print(f"  slot {slot.index + 1}: {gpu}OMP_NUM_THREADS={slot.threads}, {cpus}")


def check_jobs(args: argparse.Namespace) -> None:
    """``--jobs`` with the options it cannot mean anything with: one clear refusal."""
    if args.jobs is None:
        return
    if args.jobs < 1:
        raise StudyError(f"--jobs must be at least 1 (runs at once), got {args.jobs}")
    if args.collect:
        raise StudyError("--jobs sets how many runs train at once; --collect trains nothing: drop one of them")
    if args.show_output and args.jobs > 1 and not args.dry_run and not args.slurm:
        raise StudyError(
            f"--show-output streams one run's output here; with --jobs {args.jobs} each run writes its own log "
            "under <study>/sweep_logs/: drop --show-output (or use --jobs 1)"
        )


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        study = build_study(args, extra)
        runs = plan_runs(study)
        check_jobs(args)
        if args.dry_run:
            print_plan(study, runs)
            if args.jobs and args.jobs > 1:
                print_slots(make_slots(study, runs, args.jobs))
            return 0
        if args.collect:
            return collect(study, runs)
        if args.slurm:
            write_slurm(study, runs, args.slurm, args.rerun_stale, args.retry_diverged, args.jobs)
            return 0
        return run_all(study, runs, args.show_output, args.rerun_stale, args.retry_diverged, args.jobs or 1)
    except (StudyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
