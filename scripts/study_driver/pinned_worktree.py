"""The pinned worktree: made at the arm's commit with the pinned packages, the committed results copied in, and
what a run left there moved aside before a unit starts from nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from scripts.study_driver import checkouts
from scripts.study_driver.checkouts import DriverError, committed_status, cpu_env, git, last_line, now, stamp
from scripts.study_driver.units import Unit
from src.sweeping.plan import plan_runs
from src.sweeping.study import RunSpec, Study

PINS = ("torch==2.14.1", "torchvision==0.29.1", "lightning==2.6.6", "torchmetrics==1.9.0")  # the arms' packages
NO_BF16 = 3  # the bf16 probe's exit status when PyTorch has no bf16 kernels for this CPU

# What the pinned commit's code plans: the units are read with this checkout's code, the runs made with the pin's.
PLAN_PROBE = """
import json, sys
from src.sweeping.plan import plan_runs
from src.sweeping.study import load_study
study = load_study(sys.argv[1])
runs = plan_runs(study)
print(json.dumps([[r.label, str(r.run_dir), str(study.results_dir(r)), str(r.after), r.selects] for r in runs]))
"""


def unit_done(study: Study, unit: Unit) -> bool:
    """Every run of the unit committed -- or its dense run committed as diverged: its pruned runs are never made
    (they would start from weights that are not there)."""
    if all(checkouts.committed(study, run) for run in unit.runs):
        return True
    return unit.selects is None and committed_status(study, unit.main) == "diverged"


def prepare_worktree(worktree: Path, commit: str) -> Path:
    """The worktree at ``commit`` with its pinned virtual environment (made when missing); its python."""
    if not worktree.exists():
        git("worktree", "prune")  # a worktree of a machine that is gone is still registered: it would refuse the add
        git("worktree", "add", str(worktree), commit)
    inside = git("rev-parse", "--show-toplevel", cwd=worktree, check=False)
    if inside.returncode != 0 or Path(inside.stdout.strip()).resolve() != worktree.resolve():
        raise DriverError(f"{worktree} exists and is no git worktree: move it away (or name another --worktree)")
    head = git("rev-parse", "HEAD", cwd=worktree).stdout.strip()
    wanted = git("rev-parse", f"{commit}^{{commit}}").stdout.strip()
    if head != wanted:
        raise DriverError(f"{worktree} is at {head[:12]}, not the arm's commit {wanted[:12]}")
    python = worktree / ".venv" / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(worktree / ".venv")], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PINS, "-e", ".[dev]"], cwd=worktree, check=True)
    check = (
        "import sys; from importlib.metadata import version; pins = dict(p.split('==') for p in sys.argv[1:]); "
        "wrong = [f'{n} {version(n).split(\"+\")[0]} (the arm: {v})' for n, v in pins.items() "
        "if version(n).split('+')[0] != v]; print(', '.join(wrong))"
    )
    found = subprocess.run([str(python), "-c", check, *PINS], capture_output=True, text=True)
    if found.returncode != 0:  # an install cut off: the python is there, its packages are not
        said = last_line(found.stderr)
        raise DriverError(f"{worktree}/.venv cannot tell its packages ({said}): remove it to rebuild it pinned")
    wrong = found.stdout.strip()
    if wrong:
        raise DriverError(f"{worktree}/.venv has {wrong}: remove it to rebuild it pinned")
    return python


def has_bf16(python: Path) -> bool:
    """Whether PyTorch has bf16 kernels for this CPU (AVX-512); without them bf16 is emulated ~11x slower."""
    probe = f"import sys, torch; sys.exit(0 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else {NO_BF16})"
    found = subprocess.run([str(python), "-c", probe], env=cpu_env(), capture_output=True, text=True)
    if found.returncode not in (0, NO_BF16):
        said = last_line(found.stderr)
        raise DriverError(f"{python} cannot import torch ({said}): remove the worktree's .venv to rebuild it pinned")
    return found.returncode == 0


def planned_here(study: Study) -> list[list[Any]]:
    """What this checkout's code plans, in the form of ``PLAN_PROBE``'s answer."""
    return [[r.label, str(r.run_dir), str(study.results_dir(r)), str(r.after), r.selects] for r in plan_runs(study)]


def same_plan(study_file: str, study: Study, worktree: Path, python: Path) -> None:
    """The pinned commit's code must plan the runs this checkout's code cut into units (names, folders, parents):
    else the driver would wait for runs the sweep never makes, or commit them under other names."""
    there = subprocess.run(
        [str(python), "-c", PLAN_PROBE, study_file], cwd=worktree, env=cpu_env(), capture_output=True, text=True
    )
    if there.returncode != 0:
        raise DriverError(f"the arm's commit cannot plan {study_file} ({last_line(there.stderr)})")
    pinned, here = json.loads(there.stdout), planned_here(study)
    if pinned != here:
        first = next((f"{a} there, {b} here" for a, b in zip(pinned, here) if a != b), f"{len(pinned)} runs there")
        raise DriverError(
            f"the arm's commit plans other runs of {study_file} than this checkout's code ({len(pinned)} vs "
            f"{len(here)} runs; first difference: {first}): run the driver from a checkout that plans as the pin does"
        )


def run_state(run_dir: Path) -> tuple[str, bool]:
    """``(status, resumed)`` of a run folder from its ``efficiency.json`` (``("none", False)`` without one)."""
    try:
        record = json.loads((run_dir / "efficiency.json").read_text())
    except (OSError, ValueError):
        return "none", False
    return str(record.get("status")), bool(record.get("resumed_at_steps"))


def sync_results(study: Study, worktree: Path) -> None:
    """Copy the study's committed results (main checkout's HEAD) into the worktree, where the sweep reads them."""
    results = str(study.results)
    if git("cat-file", "-e", f"HEAD:{results}", check=False).returncode != 0:
        return
    archive = subprocess.run(
        ["git", "archive", "HEAD", "--", results], cwd=checkouts.MAIN, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(worktree)], input=archive.stdout, check=True)
    # A copy of a result that is no longer committed (``git rm``: to be made again), with no run of this machine
    # behind it, would be skipped by the sweep as finished and committed again: it goes aside.
    listed = git("ls-tree", "-r", "--name-only", "HEAD", "--", results).stdout.splitlines()
    kept = {str(Path(name).parent) for name in listed if name.endswith("/efficiency.json")}
    for run in plan_runs(study):
        target = study.results_dir(run)
        copy = worktree / target if target is not None else None
        if copy is None or not copy.is_dir() or str(target) in kept or (worktree / run.run_dir).exists():
            continue
        aside = aside_dir(study, run, worktree)
        shutil.move(str(copy), aside / "results")
        print(f"{now()} {run.label}: not committed now: the worktree's copy of its result moved to {aside}", flush=True)


def aside_dir(study: Study, run: RunSpec, worktree: Path) -> Path:
    """A new folder for what the worktree held of ``run``, in the study's ``.interrupted/``: moved, never deleted."""
    base = worktree / study.directory / ".interrupted" / f"{run.variant.replace('/', '_')}_seed{run.seed}_{stamp()}"
    base.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 100):  # twice in one second: the same run moved aside again
        aside = base.with_name(base.name + (f"-{attempt}" if attempt > 1 else ""))
        try:
            aside.mkdir()
            return aside
        except FileExistsError:
            continue
    raise DriverError(f"{base}: 99 folders of that name already")


def set_aside(study: Study, run: RunSpec, worktree: Path, why: str) -> Path:
    """Move what a run left in the worktree (its folder, its uncommitted results copy) into ``.interrupted/``."""
    aside = aside_dir(study, run, worktree)
    if (worktree / run.run_dir).exists():
        shutil.move(str(worktree / run.run_dir), aside / "run")
    target = study.results_dir(run)
    if target is not None and (worktree / target).exists() and not checkouts.committed(study, run):
        shutil.move(str(worktree / target), aside / "results")
    print(f"{now()} {run.label}: {why}: moved to {aside} (it starts from nothing)", flush=True)
    return aside


def fresh_start(study: Study, unit: Unit, worktree: Path) -> None:
    """Every run of the unit that is no clean finished (or diverged) run is moved aside: it starts from nothing.
    So is every pruned run whose parent is made again: it started from weights that are gone."""
    parent_again = False  # the unit's dense run is not committed and is made (again) from nothing
    for run in unit.runs:
        folder = worktree / run.run_dir
        is_parent = unit.selects is None and run is unit.main
        if checkouts.committed(study, run):
            continue
        if not folder.exists():
            parent_again = parent_again or is_parent
            continue
        lock = folder / "run.lock"
        if lock.exists() and subprocess.run(["flock", "-n", str(lock), "true"]).returncode != 0:
            raise DriverError(f"{folder} is in use by another process (its run.lock is held): not touched")
        status, resumed = run_state(folder)
        if run.after is not None and parent_again:
            set_aside(study, run, worktree, f"its parent {unit.main.label} is made again (this one started from it)")
            continue
        if (status == "finished" and not resumed) or status == "diverged":
            continue
        set_aside(study, run, worktree, f"no clean finished run (status {status}, resumed {resumed})")
        parent_again = parent_again or is_parent


def blocked(study: Study, unit: Unit, worktree: Path) -> str | None:
    """Why the unit cannot be finished on this machine: a pruned run left whose parent was committed elsewhere."""
    if not checkouts.committed(study, unit.main) or committed_status(study, unit.main) == "diverged":
        return None
    left = [run for run in unit.runs if run.after is not None and not checkouts.committed(study, run)]
    checkpoints = worktree / unit.main.run_dir / "checkpoints"
    if left and not (checkpoints.is_dir() and any(checkpoints.glob("*.ckpt"))):
        return (
            f"{len(left)} pruned run(s) of {unit.main.label} are not committed and start from its checkpoint, which "
            "is not on this machine (the parent was trained elsewhere): they cannot be made here"
        )
    return None
