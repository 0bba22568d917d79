"""Reading what a run saved: its config, ``efficiency.json``, logged scalars, status; finding run directories.

One reader per file, used by the CLI, the sweep, the report and the tests alike. They are *tolerant*: a
run that is missing, crashed or half-written reads as ``None`` / absent instead of an error, so a partial
study is reported as far as it goes. A study's committed results run (``src.sweeping.results``) holds the
small files only, with the curves as ``metrics.csv``; the same readers read it (``read_scalars`` falls
back to it).
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml

from src.runs.layout import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    DATA_RECORD,
    EFFICIENCY_FILE,
    METRICS_FILE,
    SCALARS_FILE,
    config_files,
    numbered_files,
)
from src.runs.scalars import record_rows

RunStatus = Literal["finished", "diverged", "unfinished", "missing"]
Curves = dict[str, tuple[list[int], list[float]]]


def read_json(path: str | os.PathLike) -> dict[str, Any] | None:
    """A JSON object file; None when absent, unreadable, half-written or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):  # a half-written or unreadable file reads as absent
        return None
    return data if isinstance(data, dict) else None


def read_config(run_dir: str | os.PathLike, latest: bool = False) -> dict[str, Any] | None:
    """The run's resolved config as first saved (``config.yaml``), or as its latest start saved it
    (``config-N.yaml``, ``latest=True``); None if absent or unreadable."""
    files = config_files(os.fspath(run_dir))
    if not files:
        return None
    try:
        data = yaml.safe_load(Path(files[-1 if latest else 0]).read_text())
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def network_params(report: dict[str, Any]) -> int | None:
    """A network's size from its efficiency report: ``params_total``, or for a pruned one (``model.pruning``) the
    parameters it kept (``pruning.params_remaining``: the count a parameter-efficiency comparison uses)."""
    pruning = report.get("pruning")
    if isinstance(pruning, dict) and isinstance(pruning.get("params_remaining"), int):
        return int(pruning["params_remaining"])
    return report.get("params_total")


def read_efficiency(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The run's efficiency report: the newest fit record that has a test accuracy, else the newest one; None if none.

    ``status`` (and ``diverged_step`` / ``diverged_reason``) come from the newest file that has one.

    ``best_val_acc`` is the best over all of the run's efficiency files, so a resumed run that
    started a fresh file still reports its best validation accuracy from before the resume.
    """
    reports = [report for path in numbered_files(run_dir, EFFICIENCY_FILE) if (report := read_json(path))]
    # Only the fit's own records: a `test`/`validate` of the run made before evaluations/ existed wrote an
    # efficiency-N.json beside them (stage "test"), whose accuracy is no result of the run (as the sweep reads it).
    reports = [report for report in reports if report.get("stage", "fit") == "fit"]
    if not reports:
        return None
    tested = [report for report in reports if report.get("test_acc") is not None]
    chosen = dict((tested or reports)[-1])
    vals = [report["best_val_acc"] for report in reports if isinstance(report.get("best_val_acc"), (int, float))]
    vals = [value for value in vals if math.isfinite(value)]  # a diverged run may have written NaN
    if vals:
        chosen["best_val_acc"] = max(vals)
    with_status = [report for report in reports if report.get("status")]
    if with_status:  # the newest status wins: a diverged run stays diverged even if an older file was tested
        for key in ("status", "diverged_step", "diverged_reason"):
            chosen[key] = with_status[-1].get(key)
    return chosen


UNFINISHED_STATUSES = ("trained", "test_failed")  # efficiency.json's status before / instead of a finished test


def run_status(run_dir: str | Path) -> RunStatus:
    """``diverged``: efficiency.json says ``status: diverged`` (its numbers are not a result, whatever they are);
    ``finished``: tested (efficiency.json has test_acc, and its status is ``finished`` or, in records older than
    the field, absent); ``unfinished``: the directory exists but the run was never tested, or its last test did not
    end (status ``trained`` / ``test_failed``: a ``test_acc`` there is an earlier test's, carried over by a resume,
    not this run's result); resumable if it has ``last.ckpt``; ``missing``: no directory.
    """
    path = Path(run_dir)
    if not path.is_dir():
        return "missing"
    report = read_efficiency(path)
    if report is not None and report.get("status") == "diverged":
        return "diverged"
    if report is None or report.get("status") in UNFINISHED_STATUSES:
        return "unfinished"
    return "finished" if report.get("test_acc") is not None else "unfinished"


def read_data_record(run_dir: str | Path) -> dict[str, Any] | None:
    """``data.json`` (root, split sizes, test source) as the run's first data module wrote it; None if absent."""
    files = numbered_files(run_dir, DATA_RECORD)
    return read_json(files[0]) if files else None


def is_run_dir(path: str | Path) -> bool:
    """A directory some run wrote into: it has a config, an efficiency report or a checkpoints folder."""
    path = Path(path)
    return (
        (path / CONFIG_FILE).is_file()
        or bool(numbered_files(path, EFFICIENCY_FILE))
        or (path / CHECKPOINT_DIR).is_dir()
    )


def find_run_dirs(root: str | Path) -> list[Path]:
    """Every run directory under ``root`` (``root`` itself included), sorted; never looks inside a run directory."""
    root = Path(root)
    if not root.is_dir():
        return []
    if is_run_dir(root):
        return [root]
    found: list[Path] = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found.extend(find_run_dirs(child))
    return found


def run_seed(run_dir: str | Path, config: dict[str, Any] | None = None) -> int | None:
    """The run's seed: ``seed_everything`` from its config, else the ``seed<k>`` directory name."""
    config = read_config(run_dir) if config is None else config
    seed = (config or {}).get("seed_everything")
    if isinstance(seed, int) and not isinstance(seed, bool):
        return seed
    match = re.fullmatch(r"seed(\d+)", Path(run_dir).name)
    return int(match[1]) if match else None


def read_scalars(run_dir: str | Path, tags: list[str] | tuple[str, ...]) -> Curves:
    """The run's logged scalars, ``{tag: (steps, values)}``, in step order, across resumes; tags never logged left out.

    From the first of: the run's ``scalars.csv`` (every run since it was added, whatever its logger);
    TensorBoard events (older runs, read with ``read_metrics``); ``metrics.csv``, either a
    results run's ``step,tag,value`` (``src.sweeping.results``) or an older CSVLogger run's table.
    """
    run_dir = Path(run_dir)
    if (run_dir / SCALARS_FILE).is_file():
        return read_metrics_csv(run_dir / SCALARS_FILE, tags)
    if not list(run_dir.glob("events.out.tfevents.*")) and (run_dir / METRICS_FILE).is_file():
        return read_metrics_csv(run_dir / METRICS_FILE, tags)
    metrics = read_metrics(str(run_dir))
    return {tag: ([s for s, _ in metrics[tag]], [v for _, v in metrics[tag]]) for tag in tags if tag in metrics}


def read_metrics(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    """Every TensorBoard scalar of the run: ``{tag: [(step, value), ...]}`` in step order, across resumes.

    The TensorBoard source of ``read_scalars`` (which reads whatever the run has; use that one).
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, dict[int, float]] = {}
    for events_file in sorted(glob.glob(os.path.join(glob.escape(run_dir), "events.out.tfevents.*"))):
        accumulator = EventAccumulator(events_file, size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            for event in accumulator.Scalars(tag):
                scalars.setdefault(tag, {})[event.step] = event.value  # a later file wins a repeated step
    return {tag: sorted(values.items()) for tag, values in scalars.items()}


def read_metrics_csv(path: str | Path, tags: list[str] | tuple[str, ...]) -> Curves:
    """``{tag: (steps, values)}`` from a ``step,tag,value`` file (or a CSVLogger table); tags it lacks left out.

    A step written twice (a resumed run, or a value logged again at its step) reads as its last value, as
    TensorBoard events do; a torn last line (a killed run) is skipped.
    """
    with open(path, newline="") as handle:
        header = next(csv.reader(handle), [])
    if header and header != ["step", "tag", "value"] and "step" in header:
        return _read_logger_table(path, tags)
    points: dict[str, dict[int, float]] = {}
    for step, tag, value in record_rows(str(path)):
        if tag in tags:
            points.setdefault(tag, {})[step] = value
    return {tag: ([s for s, _ in sorted(p.items())], [v for _, v in sorted(p.items())]) for tag, p in points.items()}


def _read_logger_table(path: str | Path, tags: list[str] | tuple[str, ...]) -> Curves:
    """Lightning's CSVLogger ``metrics.csv``: a ``step`` column and one column per tag, empty where not logged."""
    points: dict[str, dict[int, float]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                step = int(float(row.get("step") or ""))
            except ValueError:
                continue
            for tag in tags:
                if row.get(tag) not in (None, ""):
                    points.setdefault(tag, {})[step] = float(row[tag])
    return {tag: ([s for s, _ in sorted(p.items())], [v for _, v in sorted(p.items())]) for tag, p in points.items()}


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"trainer.max_steps": 100, "model.optimizer.init_args.lr": 0.1, ...}`` from a nested config; lists are
    leaves. The one flattening of configs: the sweep, the report and the CLI compare settings by these keys."""
    if not isinstance(config, dict):
        return {prefix: config}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat
