"""Sweep a study: ``python -m src.sweep configs/studies/cifar10_ladder.yaml [--dry-run | --slurm FILE]``.

Expands a study (architectures x grid overrides x seeds, on top of base configs; see
``src/sweeping/plan.py``) into runs, each in its own predictable directory
``<root>/<study>/<arch>[-<key><value>]/seed<k>/``, and

* runs them one after another on this machine, each as a fresh ``python -m src.cli fit``
  process (its output in ``<root>/<study>/sweep_logs/``), printing one line per run with its
  result; finished runs (tested) are skipped and never touched, unfinished ones resume from
  their ``last.ckpt`` (or start again when they have none);
* ``--jobs N``: runs N of them at once, one per visible GPU (``--runs-per-gpu K``: K per GPU) or, without
  GPUs, each on its own share of the CPUs (``src/sweeping/slots.py``); this process claims, watches and
  exports every run, so the results folder is written by one process only;
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

Everything after ``--`` is passed to every run unchanged; it may not set what the sweep sets (the seed, the arch,
the run folder, a ``grid`` or ``select`` key: ``Study.validate`` refuses it).

This file is the command: its arguments, the plan it prints, and the loop that starts, settles and
exports runs (``run_all``). What it uses lives in ``src/sweeping/``: ``study`` (the study file), ``plan`` (its runs),
``study_state`` / ``run_state`` (what each run is now), ``jobs`` / ``slots`` (where runs go),
``processes`` (the runs as processes), ``results`` (the committed results folder), ``slurm``.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from src.runs import RunBusy, RunLock
from src.sweeping.collect import collect
from src.sweeping.cpu_precision_check import slow_bf16_runs_notice
from src.sweeping.jobs import check_jobs, make_slots, print_slots
from src.sweeping.plan import plan_runs, write_study_selection
from src.sweeping.processes import Running, SignalForwarder, launch, wait_any
from src.sweeping.pruned_nets import waits_for
from src.sweeping.results import ResultsConflict, export
from src.sweeping.run_state import assess
from src.sweeping.selection import summary
from src.sweeping.slots import Slot
from src.sweeping.slurm import write_slurm
from src.sweeping.study import (
    STUDY_KEYS,
    RunSpec,
    Study,
    StudyError,
    format_command,
    is_study_file,
    load_study,
    run_command,
)
from src.sweeping.study_state import (
    assess_runs,
    clear_the_way,
    current_state,
    planned_config,
    planned_configs,
    result_line,
    state_line,
)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(
        prog="python -m src.sweep",
        description="Run a study (architectures x overrides x seeds), print its plan, or write a SLURM array script.",
        epilog="Arguments after -- are passed to every run unchanged (e.g. -- --trainer.max_steps 2000); they may not "
        "set what the sweep sets (seed, arch, run_dir, a grid or select key).",
    )
    parser.add_argument("study", nargs="?", help="study file (configs/studies/*.yaml)")
    parser.add_argument("--name", help="study name (its folder under --root)")
    parser.add_argument("--root", help="log root of the study (default: lightning_logs)")
    parser.add_argument(
        "--config", action="append", help="base run config, repeat to stack (replaces the study's); or the study file"
    )
    parser.add_argument(
        "--arch", nargs="+", help="architectures by full name, e.g. resnet20_2 (replaces the study's archs and widths)"
    )
    parser.add_argument("--seed", nargs="+", type=int, help="seeds (replaces the study's)")
    parser.add_argument(
        "--grid", action="append", default=[], metavar="KEY=V1,V2", help="a grid axis, e.g. model.shortcut=A,B"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan; run nothing")
    parser.add_argument(
        "--selection-only",
        action="store_true",
        help="make only the 'select' runs (each variant's choice, written to selection.json); train no seed",
    )
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
    parser.add_argument(
        "--runs-per-gpu",
        type=int,
        default=1,
        metavar="K",
        help="with --jobs: let K runs share each visible GPU (small nets leave a large GPU idle; default 1)",
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
                data = yaml.safe_load(Path(args.study).read_text())
            except yaml.YAMLError as error:
                mark = getattr(error, "problem_mark", None)
                where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
                problem = getattr(error, "problem", None) or " ".join(str(error).split())
                raise StudyError(f"study file {args.study!r} is not valid YAML{where}: {problem}") from None
            raise StudyError(_not_a_study(args.study, data))
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
    for axis in args.grid:
        key, sep, values = axis.partition("=")
        if not sep or not key or not values:
            raise StudyError(f"--grid wants KEY=V1,V2,... (e.g. model.shortcut=A,B), got {axis!r}")
        study.grid[key] = [yaml.safe_load(value) for value in values.split(",")]
    study.extra_args = [*study.extra_args, *extra]
    whole = copy.deepcopy(study)
    if args.arch:  # full names (resnet20_2): they replace the study's archs and widths
        study.archs, study.widths, study.narrowed = list(args.arch), None, True
        if isinstance(study.seeds, dict):  # per-arch seeds: those of the archs asked for
            study.seeds = {arch: seeds for arch, seeds in study.seeds.items() if arch in study.archs}
    if args.seed:
        study.seeds = list(args.seed)
    if args.arch or args.seed:
        try:  # a study of --name and --arch alone has no whole beyond what was asked for
            study.whole = whole.validate()
        except (StudyError, ValueError):
            study.whole = None
    return study.validate()


def print_plan(study: Study, runs: list[RunSpec]) -> None:
    results = f" (results in {study.results}/)" if study.results else ""
    print(f"study {study.name!r}: {len(runs)} runs in {study.directory}/{results}")
    for index, (run, state) in enumerate(zip(runs, assess_runs(study, runs)), 1):
        prefix = f"[{index}/{len(runs)}] {run.label}"
        holder = RunLock(run.run_dir).holder_if_busy()
        busy = f" (in use now by {holder})" if holder else ""
        if run.pending:  # before its state: a run made before the selection changed is no finished one (an audit)
            print(f"{prefix}: pending: trains at the value chosen for {run.variant} once its selection runs ended")
            continue
        if state.status in ("finished", "diverged", "stale"):
            print(f"{prefix}: {state_line(state)}{busy}")
            continue
        if run.after is not None and (why := waits_for(run.after)) is not None:
            prefix += f" (waits: {why})"
        resume = state.status == "resume"
        action = "resume" if resume else ("restart" if state.status == "restart" else "run")
        print(f"{prefix}: {action}: {format_command(run_command(study, run, resume))}{busy}")


@dataclass
class Tally:
    """What the sweep counts for its closing lines and its exit status."""

    failed: int = 0
    held: int = 0  # runs held back: their variant's selection has no choice
    diverged: int = 0
    busy: int = 0
    stopped: int = 0
    stale: int = 0  # found stale mid-sweep (a selection that now chooses another value): not a success


def run_all(
    study: Study,
    runs: list[RunSpec],
    show_output: bool = False,
    rerun_stale: bool = False,
    retry_diverged: bool = False,
    jobs: int = 1,
    runs_per_gpu: int = 1,
) -> int:
    """Run every unfinished run, ``jobs`` at a time (``runs_per_gpu`` of them on one GPU); return the sweep's exit
    status (0: nothing failed).

    One loop serves both: with ``jobs=1`` the single slot is this machine as it is (no pinning, no
    environment changes), and each run is waited for before the next is looked at, as always.
    A run is looked at (finished? in use? stale?) only once a slot is free for it, so what it shows
    is current when it starts; ended runs are reported and exported in this process, one at a time.
    """
    log_dir = study.directory / "sweep_logs"
    tally = Tally()
    print(f"study {study.name!r}: {len(runs)} runs in {study.directory}/", flush=True)
    # May refuse: before anything is moved.
    free: list[Slot | None] = [None] if jobs == 1 else list(make_slots(study, runs, jobs, runs_per_gpu))
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
            if study.select is not None and run.selects is None:  # a variant's run: at its value chosen now
                while any(entry.run.selects == run.variant for entry in running):
                    free.append(settle(wait_any(running), running, study, forwarder, tally))
                if forwarder.signum is not None:  # it came while we waited: start nothing (handled below)
                    continue
                run = chosen_run(study, run, planned)
                if run.pending:
                    tally.held += 1
                    why = why_pending(study, run)
                    print(f"{prefix}: HELD BACK: {run.variant}'s selection has no choice ({why})", flush=True)
                    continue
            state = current_state(study, run, planned_config(study, run, planned))
            if state.status in ("finished", "diverged", "stale"):
                print(f"{prefix}: {state_line(state).replace(', skip', ' earlier, skipped', 1)}", flush=True)
                tally.stale += state.status == "stale"
                if state.status != "stale" and not state.in_results and study.results:
                    tally.failed += not report_export(study, run, prefix)  # ended before the study had results
                continue
            if run.after is not None:  # a pruned entry's run: its parent must have finished (in another slot?)
                while any(entry.run.run_dir == run.after for entry in running):
                    free.append(settle(wait_any(running), running, study, forwarder, tally))
                if forwarder.signum is not None:  # it came while we waited: start nothing (handled above)
                    continue
                reason = waits_for(run.after)
                if reason is not None:
                    tally.held += 1
                    print(f"{prefix}: HELD BACK: {reason}", flush=True)
                    continue
            lock = RunLock(run.run_dir)
            try:
                lock.acquire(role="src.sweep")
            except RunBusy:
                tally.busy += 1
                print(f"{prefix}: skipped: in use by {lock.holder()} (another sweep or run)", flush=True)
                continue
            try:
                # It may have moved on while we looked (or appeared: its config is parsed then).
                state = current_state(study, run, planned_config(study, run, planned))
                if state.status in ("finished", "diverged", "stale"):
                    print(f"{prefix}: {state_line(state)}", flush=True)
                    tally.stale += state.status == "stale"
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
    for path in write_study_selection(study):
        print(f"wrote {path}", flush=True)
    return final_status(tally, len(runs))


def _not_a_study(path: str, data: Any) -> str:
    """Why a YAML file (``data``, as read) without ``archs`` is not a study: a run config, or a misspelt key."""
    keys = [str(key) for key in data] if isinstance(data, dict) else []
    if not {"model", "trainer", "data"} & set(keys):
        near = {key: difflib.get_close_matches(key, STUDY_KEYS, n=1) for key in keys if key not in STUDY_KEYS}
        hints = [f"{key!r} (did you mean {match[0]!r}?)" for key, match in near.items() if match]
        if hints or set(keys) & set(STUDY_KEYS):
            return (
                f"study file {path!r} has no 'archs'"
                + (f"; unknown keys: {', '.join(hints)}" if hints else "")
                + f"; a study's keys: {list(STUDY_KEYS)}"
            )
    return f"{path!r} has no 'archs': it is a run config; pass it with --config"


def final_status(tally: Tally, planned: int) -> int:
    """The sweep's last lines and exit status: 2 when a run is stale, 1 when one failed or was held, else 0."""
    if tally.held:
        print(f"{tally.held} run(s) held back: a selection with no choice or a parent run not finished (see above)",
              file=sys.stderr)  # fmt: skip
    if tally.diverged:
        print(f"{tally.diverged} run(s) diverged: recorded as such, not retried (--retry-diverged)", flush=True)
    if tally.busy:
        print(f"{tally.busy} run(s) were in use by other processes and left to them", flush=True)
    if tally.failed:
        print(f"{tally.failed} of {planned} runs failed; re-run the same command to retry them", file=sys.stderr)
    if tally.stale:
        print(
            f"{tally.stale} run(s) are STALE: made with another config than the study plans now (a selection "
            "that chooses another value since they ran?); --rerun-stale moves them aside and runs them again",
            file=sys.stderr,
        )
        return 2
    return 1 if tally.failed or tally.held else 0


def chosen_run(study: Study, run: RunSpec, planned: dict[Path, dict]) -> RunSpec:
    """The run as the study plans it now (its variant's selection may have ended since the sweep started)."""
    runs = plan_runs(study)
    for path in write_study_selection(study):
        print(f"wrote {path}", flush=True)
    now = next(other for other in runs if other.label == run.label)
    if not now.pending:
        planned.update(planned_configs(study, [now]))  # the stale check compares against the chosen values
    return now


def why_pending(study: Study, run: RunSpec) -> str:
    """Why a variant has no choice: its selection runs have not all ended, or none of its candidates finished."""
    data = summary(study, plan_runs(study)) or {}
    entry = next((v for v in data.get("variants", []) if v["variant"] == run.variant), None)
    if entry is None or entry["status"] == "pending":
        return "not all its selection runs ended: re-run the same command"
    return "every candidate diverged or failed: widen the select grid (e.g. smaller learning rates)"


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


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        study = build_study(args, extra)
        runs = plan_runs(study)
        if args.selection_only:
            if study.select is None:
                raise StudyError("--selection-only: the study has no 'select' block, so it has no selection runs")
            runs = [run for run in runs if run.selects is not None]
        check_jobs(args)
        if not (args.collect or args.slurm) and (slow := slow_bf16_runs_notice(study, runs)):
            print(slow, flush=True)
        if args.dry_run:
            print_plan(study, runs)
            if args.jobs and args.jobs > 1:
                print_slots(make_slots(study, runs, args.jobs, args.runs_per_gpu))
            return 0
        if args.collect:
            return collect(study, runs)
        if args.slurm:
            write_slurm(study, runs, args.slurm, args.rerun_stale, args.retry_diverged, args.jobs)
            return 0
        return run_all(
            study, runs, args.show_output, args.rerun_stale, args.retry_diverged, args.jobs or 1, args.runs_per_gpu
        )
    except (StudyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
