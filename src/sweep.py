"""Sweep a study: ``python -m src.sweep configs/studies/cifar10_ladder.yaml [--dry-run | --slurm FILE]``.

Expands a study (architectures x grid overrides x seeds, on top of base configs; see
``src/study/plan.py``) into runs, each in its own predictable directory
``<root>/<study>/<arch>[-<key><value>]/seed<k>/``, and

* runs them one after another on this machine, each as a fresh ``python -m src.cli fit``
  process (its output in ``<root>/<study>/sweep_logs/``), printing one line per run with its
  result; finished runs (tested) are skipped and never touched, unfinished ones resume from
  their ``last.ckpt`` (or start again when they have none);
* ``--dry-run``: prints the plan (status and command of every run) and runs nothing;
* ``--slurm FILE``: writes a SLURM array script with one task per run still to do.

The study can come from a file, the command line, or both (the command line wins)::

    python -m src.sweep --name mini --config configs/cifar10/resnet20.yaml \\
        --arch resnet20 plain20 --seed 0 1 --grid model.shortcut=A,B -- --trainer.max_steps 2000

Everything after ``--`` is passed to every run unchanged.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

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
from src.study.runs_io import last_checkpoint, read_efficiency, run_status
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
    parser.add_argument("--show-output", action="store_true", help="stream each run's output here, not to its log")
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


def print_plan(study: Study, runs: list[RunSpec]) -> None:
    print(f"study {study.name!r}: {len(runs)} runs in {study.directory}/")
    for index, run in enumerate(runs, 1):
        status = run_status(run.run_dir)
        if status == "finished":
            print(f"[{index}/{len(runs)}] {run.label}: finished, skip ({result_line(read_efficiency(run.run_dir))})")
            continue
        resume = last_checkpoint(run.run_dir) is not None
        action = "resume" if resume else ("restart" if status == "unfinished" else "run")
        print(f"[{index}/{len(runs)}] {run.label}: {action}: {format_command(run_command(study, run, resume))}")


def write_slurm(study: Study, runs: list[RunSpec], path: str) -> None:
    todo = [run for run in runs if run_status(run.run_dir) != "finished"]
    if not todo:
        print(f"study {study.name!r}: all {len(runs)} runs are finished; no SLURM script written")
        return
    target = Path(path)
    if target.exists():
        raise StudyError(f"{path!r} exists; choose another file name (the sweep never overwrites a file)")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_sbatch(study, todo, Path.cwd()))
    skipped = len(runs) - len(todo)
    note = f" ({skipped} finished runs left out)" if skipped else ""
    print(f"wrote {path}: {len(todo)} array tasks{note}. Submit with: sbatch {path}")


def run_all(study: Study, runs: list[RunSpec], show_output: bool = False) -> int:
    """Run every unfinished run in turn; return how many failed."""
    log_dir = study.directory / "sweep_logs"
    failed = 0
    print(f"study {study.name!r}: {len(runs)} runs in {study.directory}/", flush=True)
    for index, run in enumerate(runs, 1):
        prefix = f"[{index}/{len(runs)}] {run.label}"
        status = run_status(run.run_dir)
        if status == "finished":
            print(f"{prefix}: finished earlier, skipped ({result_line(read_efficiency(run.run_dir))})", flush=True)
            continue
        resume = last_checkpoint(run.run_dir) is not None
        command = run_command(study, run, resume=resume)
        start = time.monotonic()
        if show_output:
            code = subprocess.call(command)
        else:
            log_dir.mkdir(parents=True, exist_ok=True)
            log_path = log_dir / f"{run.variant}_seed{run.seed}.log"
            print(f"{prefix}: {'resuming' if resume else 'running'} (output: {log_path})", flush=True)
            with open(log_path, "a") as log:
                log.write(f"$ {format_command(command)}\n")
                log.flush()
                code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
        elapsed = time.monotonic() - start
        if code != 0:
            failed += 1
            print(f"{prefix}: FAILED (exit code {code}, {elapsed:.0f}s)", flush=True)
        elif run_status(run.run_dir) != "finished":
            failed += 1
            print(f"{prefix}: ended without a test accuracy ({elapsed:.0f}s)", flush=True)
        else:
            print(f"{prefix}: {result_line(read_efficiency(run.run_dir))} ({elapsed:.0f}s)", flush=True)
    return failed


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        study = build_study(args, extra)
        runs = plan_runs(study)
        if args.dry_run:
            print_plan(study, runs)
            return 0
        if args.slurm:
            write_slurm(study, runs, args.slurm)
            return 0
    except (StudyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    failed = run_all(study, runs, show_output=args.show_output)
    if failed:
        print(f"{failed} of {len(runs)} runs failed; re-run the same command to retry them", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
