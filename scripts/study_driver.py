"""Run a study arm on a machine that goes away: one unit at a time, from a worktree pinned to the arm's commit,
each finished unit committed into this checkout at once.

    python -m scripts.study_driver run configs/studies/cifar10_frontier_16ep.yaml --commit 1a2b3c4 --until 20:15
    python -m scripts.study_driver run STUDY --commit SHA --dry-run      # the units and what of each is committed
    python -m scripts.study_driver commit STUDY --commit SHA --plan configs/studies/plans/cifar10_frontier.yaml \\
        resnet56/seed0 resnet56-p8/seed0 ...                            # by hand: what ``run`` does after a unit

Why a driver, not ``python -m src.sweep`` alone (what the depth study's ``scripts/depth_study/run.sh`` taught):

* **One code version per arm.** The runs train in a git worktree (default ``../study-<study>``) at ``--commit``, with
  the packages pinned (``PINS``); ``commit`` refuses a run trained at another commit, from a dirty tree, resumed, or on
  another kind of device or other packages than the arm's committed runs.
* **Checkpoints do not outlive the machine.** A pruned entry's run starts from its parent's checkpoint, so a *unit*
  is a dense run together with every pruned run that starts from it (and, for a variant's first unit, its selection
  runs, which the sweep makes first): a unit is made in one sitting and committed whole. A unit whose parent was
  committed from another machine cannot be finished here (its checkpoint is gone): the driver says so and skips it.
* **A session ends at a known time** (``--until``): during a unit's first minutes its first run's ETA (the
  ``[train] ... eta`` lines of ``src.callbacks.progress``) is scaled to the whole unit's steps; a unit that would not
  end in time is stopped and its runs moved aside (``.interrupted/``), and the driver tries the next, smaller one.
* **A run cut off is started again from nothing**, never resumed (a resumed run is not one clean run of the arm):
  its files are moved into ``<study dir>/.interrupted/``, never deleted.
* **What is committed is what the sweep sees**: the main checkout's committed results of the study are copied into
  the worktree before each unit, so the sweep skips them and the selection reads the committed selection runs (a
  copy no longer committed, with no run of this machine behind it, is moved aside: the run is made again). To make
  again a run trained on this machine, ``git rm`` its result *and* move its run folder out of the worktree.
* **A pruned run is committed only with the parent it started from**: its ``init_from`` checkpoint must be the
  parent's, byte for byte (sha256), and a dense run only with all its pruned runs (or after them).
* **Stopped, it stops its sweep** (SIGTERM, SIGHUP, Ctrl-C): no training goes on without it, holding a run's lock.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.reporting.analysis_plan import PlanError, load_plan
from src.sweeping.plan import plan_runs
from src.sweeping.study import SELECTION_FILE, RunSpec, Study, StudyError, load_study

MAIN = Path(__file__).resolve().parents[1]
PINS = ("torch==2.14.1", "torchvision==0.29.1", "lightning==2.6.6", "torchmetrics==1.9.0")  # the arms' packages
GATED = ("torch", "torchvision", "lightning", "torchmetrics")  # what one arm may not mix
CHECK_FOR = 600  # seconds of a unit during which its ETA may still stop it; later it is kept whatever happens
FIRST_LOOK = 180  # seconds before the first ETA is read: the first steps' rate says little
SAFETY = 1.15  # the ETA is scaled by this (a rate that drifts, a shared core)
POLL_S = 15  # how often a unit's progress is looked at
OVERHEAD_S = 150  # seconds per run beyond its steps: start, data, test on 10k images, validation
FAILURES_IN_A_ROW = 2  # units whose sweep failed with nothing ended: then the machine or the data is wrong, stop
NO_BF16 = 3  # the bf16 probe's exit status when PyTorch has no bf16 kernels for this CPU
ETA_LINE = re.compile(r"^\[train\] .*?step (\d+)/(\d+) .*? eta (?:(\d+) days?, )?(\d+):(\d\d):(\d\d)")


class DriverError(RuntimeError):
    """Something the driver will not do, with why (one line)."""


# ------------------------------------------------------------------------------------------------ units
@dataclass
class Unit:
    """What is made in one sitting: a variant's selection runs (``selects``), or a dense run with every pruned run
    that starts from its checkpoint."""

    main: RunSpec  # the dense run; for a selection unit, the variant's first selection run
    runs: list[RunSpec] = field(default_factory=list)  # in the sweep's order
    selects: str | None = None  # a selection unit: the variant whose settings its runs choose

    @property
    def label(self) -> str:
        if self.selects is not None:
            return f"{self.selects}'s {len(self.runs)} selection runs"
        children = sum(1 for run in self.runs if run.after is not None)
        return self.main.label + (f" (+ {children} pruned runs)" if children else "")

    def sweep_args(self) -> list[str]:
        """``--arch`` / ``--seed`` / ``--selection-only``: the sweep then plans exactly this unit's runs."""
        if self.selects is not None:
            return ["--arch", self.selects, "--selection-only"]
        names = [self.main.variant] + sorted({run.variant for run in self.runs if run.after is not None})
        return ["--arch", *names, "--seed", str(self.main.seed)]


def plan_units(study: Study) -> list[Unit]:
    """The study's runs as units, in the sweep's order: a variant's selection unit just before its dense units."""
    units: list[Unit] = []
    dense: dict[Path, Unit] = {}
    for run in plan_runs(study):
        if run.selects is not None:
            if not units or units[-1].selects != run.selects:
                units.append(Unit(run, selects=run.selects))
            units[-1].runs.append(run)
        elif run.after is None:
            dense[run.run_dir] = Unit(run, [run])
            units.append(dense[run.run_dir])
        elif run.after in dense:
            dense[run.after].runs.append(run)
        else:
            raise DriverError(f"{run.label} starts from {run.after}, which is no dense run planned before it")
    return units


def selection_of(units: list[Unit], unit: Unit) -> Unit | None:
    """The selection unit that chooses ``unit``'s settings, if the study selects."""
    return next((other for other in units if other.selects == unit.main.variant), None)


def run_steps(study: Study, run: RunSpec, steps_per_epoch: float) -> float:
    """The optimizer steps a run takes: its ``trainer.max_steps`` (0 for a pruned net scored as it is), else its
    ``trainer.max_epochs`` x ``steps_per_epoch`` (the study's settings, then the run's own, the last one wins)."""
    settings = dict([*study.args.items(), *run.overrides])
    max_steps = settings.get("trainer.max_steps")
    if isinstance(max_steps, int) and max_steps >= 0:
        return float(max_steps)
    epochs = settings.get("trainer.max_epochs")
    if not isinstance(epochs, int):
        raise DriverError(f"{run.label}: neither trainer.max_steps nor trainer.max_epochs is set in the study")
    return epochs * steps_per_epoch


def eta_of(log: Path, offset: int = 0) -> tuple[int, int, int] | None:
    """``(step, total steps, eta seconds)`` of the newest progress line of a run's log after byte ``offset``."""
    if not log.is_file():
        return None
    found = None
    with open(log, errors="replace") as handle:
        handle.seek(offset)
        for line in handle:
            match = ETA_LINE.search(line)
            if match:
                step, total, days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
                found = (step, total, ((days * 24 + hours) * 60 + minutes) * 60 + seconds)
    return found


def unit_seconds(study: Study, unit: Unit, first: RunSpec, progress: tuple[int, int, int]) -> float:
    """What is left of ``unit`` once ``first`` (running now) is at ``progress``: its ETA, and the rest of the unit's
    steps at the same rate (every run of a unit is one architecture: masked weights still cost a dense kernel), plus
    ``OVERHEAD_S`` a run."""
    step, total, eta = progress
    rate = eta / max(total - step, 1)
    epochs = dict([*study.args.items(), *first.overrides]).get("trainer.max_epochs")
    steps_per_epoch = total / epochs if isinstance(epochs, int) and epochs > 0 else 0.0
    later = unit.runs[unit.runs.index(first) + 1 :]
    return eta + OVERHEAD_S + sum(rate * run_steps(study, run, steps_per_epoch) + OVERHEAD_S for run in later)


# ------------------------------------------------------------------------------------------------ the two checkouts
def git(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """git in ``cwd`` (default: the main checkout)."""
    return subprocess.run(["git", *args], cwd=cwd or MAIN, check=check, capture_output=True, text=True)


def committed(study: Study, run: RunSpec) -> bool:
    """Whether the run's result is in the main checkout's HEAD (not merely copied by a commit that then failed)."""
    target = study.results_dir(run)
    return target is not None and git("cat-file", "-e", f"HEAD:{target}/efficiency.json", check=False).returncode == 0


def committed_status(study: Study, run: RunSpec) -> str | None:
    """The ``status`` of the run's committed result (``None``: not committed)."""
    target = study.results_dir(run)
    shown = git("show", f"HEAD:{target}/efficiency.json", check=False) if target is not None else None
    if shown is None or shown.returncode != 0:
        return None
    try:
        return str(json.loads(shown.stdout).get("status"))
    except ValueError:
        return "unreadable"


def unit_done(study: Study, unit: Unit) -> bool:
    """Every run of the unit committed -- or its dense run committed as diverged: its pruned runs are never made
    (they would start from weights that are not there)."""
    if all(committed(study, run) for run in unit.runs):
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
        last = (found.stderr.strip().splitlines() or ["no output"])[-1]
        raise DriverError(f"{worktree}/.venv cannot tell its packages ({last}): remove it to rebuild it pinned")
    wrong = found.stdout.strip()
    if wrong:
        raise DriverError(f"{worktree}/.venv has {wrong}: remove it to rebuild it pinned")
    return python


def has_bf16(python: Path) -> bool:
    """Whether PyTorch has bf16 kernels for this CPU (AVX-512); without them bf16 is emulated ~11x slower."""
    probe = f"import sys, torch; sys.exit(0 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else {NO_BF16})"
    found = subprocess.run([str(python), "-c", probe], env=cpu_env(), capture_output=True, text=True)
    if found.returncode not in (0, NO_BF16):
        last = (found.stderr.strip().splitlines() or ["no output"])[-1]
        raise DriverError(f"{python} cannot import torch ({last}): remove the worktree's .venv to rebuild it pinned")
    return found.returncode == 0


# What the pinned commit's code plans: the units are read with this checkout's code, the runs made with the pin's.
PLAN_PROBE = """
import json, sys
from src.sweeping.plan import plan_runs
from src.sweeping.study import load_study
study = load_study(sys.argv[1])
runs = plan_runs(study)
print(json.dumps([[r.label, str(r.run_dir), str(study.results_dir(r)), str(r.after), r.selects] for r in runs]))
"""


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
        last = (there.stderr.strip().splitlines() or ["no output"])[-1]
        raise DriverError(f"the arm's commit cannot plan {study_file} ({last})")
    pinned, here = json.loads(there.stdout), planned_here(study)
    if pinned != here:
        first = next((f"{a} there, {b} here" for a, b in zip(pinned, here) if a != b), f"{len(pinned)} runs there")
        raise DriverError(
            f"the arm's commit plans other runs of {study_file} than this checkout's code ({len(pinned)} vs "
            f"{len(here)} runs; first difference: {first}): run the driver from a checkout that plans as the pin does"
        )


def cpu_env() -> dict[str, str]:
    """The arms are CPU runs: a GPU here would take them over (accelerator: auto) and mix devices within an arm."""
    return {**os.environ, "CUDA_VISIBLE_DEVICES": ""}


def sync_results(study: Study, worktree: Path) -> None:
    """Copy the study's committed results (main checkout's HEAD) into the worktree, where the sweep reads them."""
    results = str(study.results)
    if git("cat-file", "-e", f"HEAD:{results}", check=False).returncode != 0:
        return
    archive = subprocess.run(["git", "archive", "HEAD", "--", results], cwd=MAIN, capture_output=True, check=True)
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


def run_state(run_dir: Path) -> tuple[str, bool]:
    """``(status, resumed)`` of a run folder from its ``efficiency.json`` (``("none", False)`` without one)."""
    try:
        record = json.loads((run_dir / "efficiency.json").read_text())
    except (OSError, ValueError):
        return "none", False
    return str(record.get("status")), bool(record.get("resumed_at_steps"))


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
    if target is not None and (worktree / target).exists() and not committed(study, run):
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
        if committed(study, run):
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
    if not committed(study, unit.main) or committed_status(study, unit.main) == "diverged":
        return None
    left = [run for run in unit.runs if run.after is not None and not committed(study, run)]
    checkpoints = worktree / unit.main.run_dir / "checkpoints"
    if left and not (checkpoints.is_dir() and any(checkpoints.glob("*.ckpt"))):
        return (
            f"{len(left)} pruned run(s) of {unit.main.label} are not committed and start from its checkpoint, which "
            "is not on this machine (the parent was trained elsewhere): they cannot be made here"
        )
    return None


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


# ------------------------------------------------------------------------------------------------ running a unit
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


def log_name(run: RunSpec) -> str:
    return f"{run.variant.replace('/', '_')}_seed{run.seed}.log"


def iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------------------ committing
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


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
                if other.after == run.run_dir and other.run_dir not in chosen and not committed(study, other)
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
        elif sha256(path) != start.get("sha256"):
            problems.append(
                f"{label}: started from another {path.name} than its parent's now (sha256 differs: the parent was made "
                "again after it)"
            )
    return problems


def commit_paths(study: Study, plan: str) -> list[str]:
    """What committing an arm's runs writes: its results, the plan's report, README.md, docs/results.md."""
    return [str(study.results), str(_plan_results(plan)), "README.md", "docs/results.md"]


def uncommitted(paths: Sequence[str]) -> str:
    """``git status`` of ``paths`` in this checkout: changes that would go into a run's commit."""
    return git("status", "--porcelain", "--", *paths).stdout


@contextlib.contextmanager
def commit_lock() -> Iterator[None]:
    """One commit into this checkout at a time (two drivers, a driver and a commit by hand): one's put-back could
    otherwise remove what the other copied between its ``--check`` and its ``git add``."""
    common = Path(git("rev-parse", "--git-common-dir").stdout.strip())
    path = (common if common.is_absolute() else MAIN / common) / "study-commit.lock"
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
    arm_kinds = {device_kind(json.loads(p.read_text())) for p in (MAIN / results).glob("**/seed*/efficiency.json")}
    problems = commit_problems(records, commit, arm_kinds) + family_problems(study, records, worktree)
    if problems:
        raise DriverError("not committed: " + "; ".join(problems))
    done = False
    try:
        for label in labels:
            shutil.copytree(worktree / results / label, MAIN / results / label, dirs_exist_ok=True)
        # The results marker (an arm's first run) and the selection's choice (``--check`` verifies that it is what
        # the committed selection runs give).
        for marker in ("results.json", SELECTION_FILE):
            if (worktree / results / marker).exists():
                shutil.copy2(worktree / results / marker, MAIN / results / marker)
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
        if subprocess.run([*report, *args], cwd=MAIN).returncode != 0:
            raise DriverError(f"not committed: python -m src.report {' '.join(args)} failed (its output above)")


def _plan_results(plan: str) -> Path:
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


# ------------------------------------------------------------------------------------------------ the command
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
    if pinned.stdout != (MAIN / study_file).read_text():
        raise DriverError(f"{study_file} differs from the one at the arm's commit {commit}: one study per arm")


def resolve_commit(name: str) -> str:
    """``--commit`` (a sha, a tag, HEAD) as the full sha the runs' provenance records."""
    found = git("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}", check=False)
    if found.returncode != 0:
        raise DriverError(f"--commit {name!r} is no commit of {MAIN}")
    return found.stdout.strip()


def drive(args: argparse.Namespace) -> int:
    until = parse_until(args.until)  # what the command line got wrong first, before git is asked anything
    _plan_results(args.plan)
    study = load_study(args.study)
    args.commit = resolve_commit(args.commit)
    same_study_file(args.study, args.commit)
    units = plan_units(study)
    worktree = Path(args.worktree or MAIN.parent / f"study-{study.name}").resolve()
    if args.dry_run:
        for unit in units:
            done = sum(committed(study, run) for run in unit.runs)
            print(f"{unit.label}: {done}/{len(unit.runs)} committed")
        return 0
    python = prepare_worktree(worktree, args.commit)
    if not has_bf16(python):
        print(f"{now()} this CPU has no bf16 kernels in PyTorch (no AVX-512): the arm's bf16 runs would take ~11x "
              "their time here; not starting any", flush=True)  # fmt: skip
        return 2
    sync_results(study, worktree)
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
        sync_results(study, worktree)
        fresh_start(study, unit, worktree)
        print(f"{now()} start {unit.label}", flush=True)
        status = make_unit(study, args.study, unit, worktree, python, until)
        if status is None:
            did_not_fit[unit.main.arch] = left or 0.0
            fresh_start(study, unit, worktree)
        elif status != 0:
            print(f"{now()} {unit.label}: the sweep exited with status {status} (its output above)", flush=True)
        ended = [
            run.label
            for run in unit.runs
            if not committed(study, run)
            and (target := study.results_dir(run)) is not None
            and run_state(worktree / target) in (("finished", False), ("diverged", False))
        ]
        # A diverged dense run has no pruned runs: they would start from weights that are not there.
        parent_diverged = run_state(worktree / unit.main.run_dir)[0] == "diverged"
        finished_whole = all(
            committed(study, run) or run.label in ended or (run.after is not None and parent_diverged)
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
    parser = argparse.ArgumentParser(prog="python -m scripts.study_driver", description=__doc__.split("\n\n")[0])
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
        worktree = Path(args.worktree or MAIN.parent / f"study-{study.name}").resolve()
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


if __name__ == "__main__":
    sys.exit(main())
