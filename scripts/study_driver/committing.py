"""Committing ended runs into the main checkout: all or nothing, with the checks that keep an arm one clean code
version on one kind of device, and a pruned run with the parent it started from."""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from scripts.study_driver import checkouts
from scripts.study_driver.checkouts import DriverError, git, now
from scripts.study_driver.units import Unit
from src.files import file_sha256
from src.reporting.analysis_plan import PlanError, load_plan
from src.sweeping.plan import plan_runs
from src.sweeping.study import SELECTION_FILE, Study, load_study

GATED = ("torch", "torchvision", "lightning", "torchmetrics")  # what one arm may not mix


def device_kind(record: dict[str, Any]) -> str:
    """``cpu`` or ``gpu`` with the gated packages' versions: what one arm may not mix."""
    provenance = record.get("provenance") or {}
    kind = "cpu" if provenance.get("device") == provenance.get("cpu") else "gpu"
    packages = {name: (provenance.get("packages") or {}).get(name) for name in GATED}
    return json.dumps([kind, packages], sort_keys=True)


def commit_problems(records: dict[str, dict[str, Any]], commit: str, arm_kinds: set[str]) -> list[str]:
    """Why runs (label -> efficiency.json) may not be committed into an arm made at ``commit`` whose committed runs
    have the device kinds ``arm_kinds``: not ended, resumed, another commit, a dirty tree, another device kind."""
    problems = []
    kinds = set(arm_kinds)
    for label, record in records.items():
        provenance = record.get("provenance") or {}
        if record.get("status") not in ("finished", "diverged"):
            problems.append(f"{label}: status {record.get('status')!r}, not finished (or diverged)")
        if record.get("resumed_at_steps"):
            problems.append(f"{label}: resumed at steps {record['resumed_at_steps']} (not one clean run)")
        if not str(provenance.get("git_commit", "")).startswith(commit):
            problems.append(f"{label}: trained at commit {provenance.get('git_commit')!r}, not the arm's {commit}")
        if provenance.get("git_dirty") is not False:
            problems.append(f"{label}: trained from a dirty tree (git_dirty {provenance.get('git_dirty')!r})")
        kind = device_kind(record)
        if kinds and kind not in kinds:
            problems.append(f"{label}: device and packages {kind}, the arm's: {sorted(kinds)}")
        kinds.add(kind)
    return problems


def family_problems(study: Study, records: dict[str, dict[str, Any]], worktree: Path) -> list[str]:
    """Why runs (each a run of the study) may not be committed as a family: a finished dense run without every
    pruned run that starts from it (its checkpoint does not outlive this machine: elsewhere they could never be made);
    a pruned run that did not start from its parent's checkpoint as it is now (the parent made again since)."""
    runs = {run.label: run for run in plan_runs(study)}
    problems = []
    chosen = {runs[label].run_dir for label in records}
    for label, record in records.items():
        run = runs[label]
        if run.after is None and record.get("status") == "finished":
            left = [
                other.label
                for other in runs.values()
                if other.after == run.run_dir and other.run_dir not in chosen and not checkouts.committed(study, other)
            ]
            if left:
                problems.append(
                    f"{label}: its pruned runs {', '.join(left)} are neither in this commit nor committed (they start "
                    "from its checkpoint, which does not outlive this machine: commit them together)"
                )
        if run.after is None:
            continue
        start = record.get("init_from")
        if not isinstance(start, dict) or not start.get("path"):
            problems.append(f"{label}: its efficiency.json records no init_from (a pruned run starts from its parent)")
            continue
        path = Path(str(start["path"]))
        path = path if path.is_absolute() else worktree / path
        parent = (worktree / run.after).resolve()
        if not path.resolve().is_relative_to(parent):
            problems.append(f"{label}: started from {start['path']}, not from its parent {run.after}")
        elif not path.is_file():
            problems.append(
                f"{label}: its parent's checkpoint {path} is gone (moved aside, or the parent made again): nothing "
                "shows that it started from the parent that is committed"
            )
        elif file_sha256(path) != start.get("sha256"):
            problems.append(
                f"{label}: started from another {path.name} than its parent's now (sha256 differs: the parent was made "
                "again after it)"
            )
    return problems


def commit_paths(study: Study, plan: str) -> list[str]:
    """What committing an arm's runs writes: its results, the plan's report, README.md, docs/results.md."""
    return [str(study.results), str(plan_results(plan)), "README.md", "docs/results.md"]


def uncommitted(paths: Sequence[str]) -> str:
    """``git status`` of ``paths`` in this checkout: changes that would go into a run's commit."""
    return git("status", "--porcelain", "--", *paths).stdout


@contextlib.contextmanager
def commit_lock() -> Iterator[None]:
    """One commit into this checkout at a time (two drivers, a driver and a commit by hand): one's put-back could
    otherwise remove what the other copied between its ``--check`` and its ``git add``."""
    common = Path(git("rev-parse", "--git-common-dir").stdout.strip())
    path = (common if common.is_absolute() else checkouts.MAIN / common) / "study-commit.lock"
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"{now()} waiting for another commit into this checkout to end ({path} is held)", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def commit_runs(study_file: str, commit: str, plan: str, labels: Sequence[str], worktree: Path, message: str) -> None:
    """Copy finished runs from the worktree, regenerate and check the arm's and the plan's reports, commit only those
    files. All or nothing: put back as they were on any failure."""
    with commit_lock():
        _commit_runs(study_file, commit, plan, labels, worktree, message)


def _commit_runs(study_file: str, commit: str, plan: str, labels: Sequence[str], worktree: Path, message: str) -> None:
    study = load_study(study_file)
    results = Path(str(study.results))
    paths = commit_paths(study, plan)
    dirty = uncommitted(paths)
    if dirty:
        raise DriverError(f"uncommitted changes in what this commits (they would go into the run's commit):\n{dirty}")
    planned = [run.label for run in plan_runs(study)]
    unknown = [label for label in labels if label not in planned]
    if unknown:
        raise DriverError(f"{', '.join(unknown)}: no run of study {study.name!r} (its runs: {planned[0]}, ...)")
    records = {}
    for label in labels:
        path = worktree / results / label / "efficiency.json"
        try:
            records[label] = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise DriverError(f"{label}: no readable {path} ({error})") from None
    committed_runs = (checkouts.MAIN / results).glob("**/seed*/efficiency.json")
    arm_kinds = {device_kind(json.loads(path.read_text())) for path in committed_runs}
    problems = commit_problems(records, commit, arm_kinds) + family_problems(study, records, worktree)
    if problems:
        raise DriverError("not committed: " + "; ".join(problems))
    done = False
    try:
        for label in labels:
            shutil.copytree(worktree / results / label, checkouts.MAIN / results / label, dirs_exist_ok=True)
        # The results marker (an arm's first run) and the selection's choice (``--check`` verifies that it is what
        # the committed selection runs give).
        for marker in ("results.json", SELECTION_FILE):
            if (worktree / results / marker).exists():
                shutil.copy2(worktree / results / marker, checkouts.MAIN / results / marker)
        regenerate_reports(study_file, plan, results)
        git("add", "--", *paths)
        committing = git("commit", "-q", "-m", message, "--", *paths, check=False)
        if committing.returncode != 0:
            raise DriverError(f"not committed: git commit failed: {committing.stderr.strip()}")
        done = True
    finally:
        if not done:
            print("not committed: putting the results back as they were", file=sys.stderr)
            git("reset", "-q", "--", *paths, check=False)  # out of the index first: checkout restores from it
            git("checkout", "-q", "--", *paths, check=False)
            git("clean", "-fdq", "--", *paths, check=False)


def regenerate_reports(study_file: str, plan: str, results: Path) -> None:
    """The arm's report and the plan's, written and ``--check``ed as CI will."""
    report = [sys.executable, "-m", "src.report"]
    for args in ([study_file], [plan], [str(results), "--check"], [plan, "--check"]):
        if subprocess.run([*report, *args], cwd=checkouts.MAIN).returncode != 0:
            raise DriverError(f"not committed: python -m src.report {' '.join(args)} failed (its output above)")


def plan_results(plan: str) -> Path:
    try:
        return Path(load_plan(plan).results)
    except PlanError as error:
        raise DriverError(str(error)) from None


def unit_message(study: Study, unit: Unit, worktree: Path, labels: list[str]) -> str:
    """The commit message: the unit, each run's test and validation accuracy and time, the CPU."""
    parts = []
    cpu = ""
    for label in labels:
        record = json.loads((worktree / str(study.results) / label / "efficiency.json").read_text())
        cpu = str((record.get("provenance") or {}).get("cpu") or cpu)
        test, val, seconds = record.get("test_acc"), record.get("best_val_acc"), record.get("train_time_sec")
        part = f"{label}: {record.get('status')}"
        if isinstance(test, float) and not label.startswith("select/"):  # a selection run's test is never read
            part = f"{label}: test {test:.4f}"
        if isinstance(val, float):
            part += f", best val {val:.4f}"
        if isinstance(seconds, float):
            part += f", {seconds:,.0f} s"
        parts.append(part)
    return f"{study.name}: {unit.label} ({cpu}, from the arm's pinned worktree)\n\n" + "\n".join(parts)
