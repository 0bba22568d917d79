"""Where each run of a study stands, as the sweep must know it before it skips, resumes or starts a run.

* ``missing``: nothing there yet (no directory, or one holding only the lock a sweep claimed it with);
* ``stale``: the run was made with another config than the study now plans (another budget, base
  config, override): never skipped as finished nor continued, the sweep refuses until it is moved
  aside (``--rerun-stale``) or the study gets a new name;
* ``diverged``: its ``efficiency.json`` says ``status: diverged``: not retried unless asked;
* ``finished``: the fit's own test is recorded (``test_acc``; evaluations made later with
  ``test --run_dir`` live in ``evaluations/`` and never count);
* ``resume``: it has an intact checkpoint to continue from (a run whose training was complete but
  whose test was killed is completed by testing: ``fit --ckpt_path last`` trains no step);
* ``restart``: it started but saved nothing to continue from.

"The same config" compares the config the run saved (``config.yaml`` and each resume's
``config-N.yaml``) with the one the run's command resolves to now, leaf by leaf, leaving out what
names places rather than the experiment (run directory, logger, checkpoint folder, ``ckpt_path``)
and keys only one side has (an option added or removed by a newer version of the code).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from src import runs
from src.runs import flatten, numbered_files

IGNORED_KEYS = ("run_dir", "ckpt_path", "config", "trainer.default_root_dir", "trainer.logger", "checkpoint.dirpath")
MOVED_ASIDE_DIR = ".replaced"  # inside the study folder; the report never looks into dot folders


@dataclass
class RunState:
    status: str  # missing | stale | diverged | finished | resume | restart
    detail: str = ""
    report: dict[str, Any] | None = None
    in_results: bool = False  # read from the study's committed results folder, not its log directory


def _ignored(key: str) -> bool:
    return any(key == ignored or key.startswith(f"{ignored}.") for ignored in IGNORED_KEYS)


def config_differences(saved: dict[str, Any], planned: dict[str, Any], limit: int = 3) -> list[str]:
    """``["trainer.max_steps 100 -> 30", ...]``: the settings where a saved config and the plan disagree."""
    old, new = flatten(saved), flatten(planned)
    differ = [key for key in new if key in old and not _ignored(key) and old[key] != new[key]]
    return [f"{key} {old[key]!r} -> {new[key]!r}" for key in differ[:limit]] + (
        [f"... {len(differ) - limit} more"] if len(differ) > limit else []
    )


def saved_configs(run_dir: str | Path) -> list[dict[str, Any]]:
    configs = []
    for path in runs.config_files(str(run_dir)):
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(loaded, dict):
            configs.append(loaded)
    return configs


def fit_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's own fit record: its newest ``efficiency*.json`` written by ``fit`` (one with a test, if any).

    ``test``/``validate`` on a run now write into ``evaluations/``; runs made before that have their
    evaluations as ``efficiency-N.json`` beside the fit's, told apart by ``stage``.
    """
    records = []
    for path in numbered_files(run_dir, runs.EFFICIENCY_FILE):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):  # half-written or unreadable: as if absent
            continue
        if isinstance(record, dict) and record.get("stage", "fit") == "fit":
            records.append(record)
    tested = [record for record in records if record.get("test_acc") is not None]
    kept = tested or records
    return kept[-1] if kept else None


def assess(run_dir: str | Path, planned: dict[str, Any] | None) -> RunState:
    """The run's state (see the module docstring); ``planned`` is the config its command resolves to now."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or os.listdir(run_dir) == [runs.LOCK_FILE]:
        return RunState("missing")  # nothing there, or only the lock a sweep claimed it with
    if planned is not None:
        for saved in saved_configs(run_dir):
            differences = config_differences(saved, planned)
            if differences:
                return RunState("stale", ", ".join(differences))
    report = fit_record(run_dir)
    if report is not None and report.get("status") == "diverged":
        detail = f"at step {report.get('diverged_step')}: {report.get('diverged_reason')}"
        return RunState("diverged", detail, report)
    if report is not None and report.get("test_acc") is not None:
        return RunState("finished", report=report)
    if runs.has_checkpoints(str(run_dir)):
        return RunState("resume", report=report)
    return RunState("restart", report=report)


def move_attempt_aside(run_dir: str | Path, study_dir: str | Path) -> Path | None:
    """Before a ``restart``: move what a dead attempt left (everything but the lock the sweep holds) into
    ``<study>/.replaced/<variant>/<seed>-<n>``, so the new attempt starts in an empty directory and never
    mixes its files with the old ones (nor are the old ones exported as its result). ``None``: nothing there."""
    run_dir, study_dir = Path(run_dir), Path(study_dir)
    leftovers = (
        [entry for entry in sorted(run_dir.iterdir()) if entry.name != runs.LOCK_FILE] if run_dir.is_dir() else []
    )
    if not leftovers:
        return None
    relative = run_dir.relative_to(study_dir)
    index = 1
    while (target := study_dir / MOVED_ASIDE_DIR / relative.parent / f"{relative.name}-{index}").exists():
        index += 1
    target.mkdir(parents=True)
    for entry in leftovers:
        os.rename(entry, target / entry.name)
    return target


def move_aside(run_dir: str | Path, study_dir: str | Path) -> Path:
    """Move a run out of the study (into ``<study>/.replaced/<variant>/<seed>-<n>``), never deleting it."""
    run_dir, study_dir = Path(run_dir), Path(study_dir)
    relative = run_dir.relative_to(study_dir)
    index = 1
    while (target := study_dir / MOVED_ASIDE_DIR / relative.parent / f"{relative.name}-{index}").exists():
        index += 1
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(run_dir, target)
    return target
