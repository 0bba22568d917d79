"""Sweep a study: ``python -m src.sweep configs/studies/cifar10_ladder.yaml [--dry-run | --slurm FILE]``.

Expands a study (architectures x grid overrides x seeds, on top of base configs; see
``src/study/plan.py``) into runs, each in its own predictable directory
``<root>/<study>/<arch>[-<key><value>]/seed<k>/``, and

* runs them one after another on this machine, each as a fresh ``python -m src.cli fit``
  process (its output in ``<root>/<study>/sweep_logs/``), printing one line per run with its
  result; finished runs (tested) are skipped and never touched, unfinished ones resume from
  their ``last.ckpt`` (or start again when they have none);
* ``--dry-run``: prints the plan (status and command of every run) and runs nothing;
* ``--slurm FILE``: writes a SLURM array script with one task per run still to do;
* ``--collect``: copies the runs that already ended into the study's ``results`` folder; trains nothing.

A study with ``results: docs/results/<study>`` accumulates (``src/study/results.py``): every run
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
from pathlib import Path

import yaml

from src.runs import RunBusy, RunLock
from src.study.plan import (
    RunSpec,
    Study,
    StudyError,
    format_command,
    is_study_file,
    load_study,
    plan_runs,
    run_command,
)
from src.study.results import ResultsConflict, export_run, write_index
from src.study.run_state import RunState, assess, move_aside
from src.study.slurm import render_sbatch


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


def write_slurm(study: Study, runs: list[RunSpec], path: str, rerun_stale: bool, retry_diverged: bool) -> None:
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
    """While the sweep waits for a run, pass SIGTERM / SIGINT on to it; a second signal kills it.

    The run is started in its own session, so a Ctrl-C in the terminal reaches it once, through here,
    and a ``kill`` of the sweep alone no longer leaves the run training, re-parented to PID 1.
    """

    def __init__(self) -> None:
        self.child: subprocess.Popen | None = None
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SignalForwarder:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        again = self.signum is not None
        self.signum = signum
        self.forward(kill=again)

    def forward(self, kill: bool = False) -> None:
        child = self.child
        if child is None or child.poll() is not None or self.signum is None:
            return
        if kill:
            child.kill()
        else:
            child.send_signal(self.signum)

    def run(self, command: list[str], **popen: object) -> int:
        self.child = subprocess.Popen(command, start_new_session=True, **popen)
        self.forward()  # a signal that came while it was starting
        try:
            return self.child.wait()
        finally:
            self.child = None


def run_all(
    study: Study,
    runs: list[RunSpec],
    show_output: bool = False,
    rerun_stale: bool = False,
    retry_diverged: bool = False,
) -> int:
    """Run every unfinished run in turn; return the sweep's exit status (0: nothing failed)."""
    log_dir = study.directory / "sweep_logs"
    failed, diverged, busy = 0, 0, 0
    print(f"study {study.name!r}: {len(runs)} runs in {study.directory}/", flush=True)
    clear_the_way(study, runs, rerun_stale, retry_diverged)
    planned = planned_configs(study, runs)
    with SignalForwarder() as forwarder:
        for index, run in enumerate(runs, 1):
            prefix = f"[{index}/{len(runs)}] {run.label}"
            if forwarder.signum is not None:  # a signal between two runs: start no more
                print(f"stopped by {signal.Signals(forwarder.signum).name} before {run.label}", file=sys.stderr)
                return 128 + forwarder.signum
            state = current_state(study, run, planned.get(run.run_dir))
            if state.status in ("finished", "diverged", "stale"):
                print(f"{prefix}: {state_line(state).replace(', skip', ' earlier, skipped', 1)}", flush=True)
                if state.status != "stale" and not state.in_results and study.results:
                    failed += not report_export(study, run, prefix)  # ended before the study had a results folder
                continue
            lock = RunLock(run.run_dir)
            try:
                lock.acquire(role="src.sweep")
            except RunBusy:
                busy += 1
                print(f"{prefix}: skipped: in use by {lock.holder()} (another sweep or run)", flush=True)
                continue
            try:
                state = current_state(study, run, planned.get(run.run_dir))  # it may have moved on while we looked
                if state.status in ("finished", "diverged", "stale"):
                    print(f"{prefix}: {state_line(state)}", flush=True)
                    continue
                code, elapsed = launch(study, run, state, lock, forwarder, log_dir, show_output, prefix)
            finally:
                lock.release()
            if forwarder.signum is not None:
                name = signal.Signals(forwarder.signum).name
                print(
                    f"{prefix}: stopped by {name} (exit code {code}); the sweep stops here. Re-run the same "
                    "command to continue",
                    file=sys.stderr,
                    flush=True,
                )
                return 128 + forwarder.signum
            state = assess(run.run_dir, None)
            if state.status == "diverged":
                diverged += 1
                print(f"{prefix}: DIVERGED {state.detail} ({elapsed:.0f}s)", flush=True)
            elif code != 0:
                failed += 1
                print(f"{prefix}: FAILED (exit code {code}, {elapsed:.0f}s)", flush=True)
            elif state.status != "finished":
                failed += 1
                print(f"{prefix}: ended without a test accuracy ({elapsed:.0f}s)", flush=True)
            else:
                print(f"{prefix}: {result_line(state.report)} ({elapsed:.0f}s)", flush=True)
            if state.status in ("finished", "diverged") and study.results:
                failed += not report_export(study, run, prefix)
    if diverged:
        print(f"{diverged} run(s) diverged: recorded as such, not retried (--retry-diverged)", flush=True)
    if busy:
        print(f"{busy} run(s) were in use by other processes and left to them", flush=True)
    if failed:
        print(f"{failed} of {len(runs)} runs failed; re-run the same command to retry them", file=sys.stderr)
    return 1 if failed else 0


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
    forwarder: SignalForwarder,
    log_dir: Path,
    show_output: bool,
    prefix: str,
) -> tuple[int, float]:
    """Start the run's ``src.cli fit`` process, handing it the run's lock; ``(exit code, seconds)``."""
    resume = state.status == "resume"
    command = run_command(study, run, resume=resume)
    popen = {"env": {**os.environ, **lock.child_env()}, "pass_fds": [lock.fd]}
    start = time.monotonic()
    if show_output:
        code = forwarder.run(command, **popen)
    else:
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{run.variant}_seed{run.seed}.log"
        action = "continuing from its checkpoint" if resume else "running"
        print(f"{prefix}: {action} (output: {log_path})", flush=True)
        with open(log_path, "a") as log:
            log.write(f"$ {format_command(command)}\n")
            log.flush()
            code = forwarder.run(command, stdout=log, stderr=subprocess.STDOUT, **popen)
    return code, time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        study = build_study(args, extra)
        runs = plan_runs(study)
        if args.dry_run:
            print_plan(study, runs)
            return 0
        if args.collect:
            return collect(study, runs)
        if args.slurm:
            write_slurm(study, runs, args.slurm, args.rerun_stale, args.retry_diverged)
            return 0
        return run_all(study, runs, args.show_output, args.rerun_stale, args.retry_diverged)
    except (StudyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
