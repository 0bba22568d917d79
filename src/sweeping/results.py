"""A study's committed results: each finished run's small files under ``<results>/<variant>/seed<k>/``.

Why: checkpoints and logger files are too big for git and tied to one machine, but the
report needs only a handful of small files. A study file may name ``results: docs/results/<study>``;
the sweep then copies every run that ends (finished, or diverged: that is a result too) into it,
``python -m src.sweep STUDY --collect`` copies runs that finished before, and the sweep treats a
results run whose config matches the plan as finished even where ``lightning_logs`` is empty (a
fresh machine). A results run folder holds::

    config.yaml, config-N.yaml   the resolved config of each start of the run (as the run saved it)
    efficiency.json, -N.json     the fit's own records (``stage: fit``; later evaluations are left out)
    data.json, data-N.json       what a folder data module trained on (when the run wrote one)
    diagnostics.jsonl            the training diagnostics (when enabled)
    metrics.csv                  ``step,tag,value``: the curves (``METRIC_TAGS``) from the run's ``scalars.csv``
                                 (TensorBoard events for runs older than it), by tag then step

and ``<results>/results.json`` names the study file that plans the runs (``python -m src.report
--check`` re-plans them from it). A results run is never overwritten with different content:
copying refuses (``ResultsConflict``); copying identical files again is a no-op.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, cast

from src import runs
from src.runs import DATA_RECORD, METRICS_FILE, SCALARS_FILE, numbered_files, read_json, read_scalars
from src.sweeping.study import RunSpec, Study

INDEX_FILE = "results.json"  # in the results folder: {"study": name, "study_file": path}
DIAGNOSTICS_FILE = "diagnostics.jsonl"
# The curves the report draws (train/val accuracy) and the losses beside them; tags a run never logged are skipped.
METRIC_TAGS = ("train/acc", "val/acc", "train/loss", "train/loss_epoch", "train/loss_step", "val/loss")


class ResultsConflict(RuntimeError):
    """A results run already holds different files than the run being copied; nothing was written."""


def metrics_csv(run_dir: str | Path, tags: tuple[str, ...] = METRIC_TAGS) -> str | None:
    """The run's curves as ``step,tag,value`` text, by tag then step; None when it logged none.

    Read by ``read_scalars``: the run's own ``scalars.csv`` whatever its logger (older runs: TensorBoard).
    """
    scalars = read_scalars(run_dir, tags)
    present = [tag for tag in tags if scalars.get(tag) and scalars[tag][0]]
    if not present:
        return None
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["step", "tag", "value"])
    for tag in present:
        for step, value in zip(*scalars[tag]):
            writer.writerow([step, tag, repr(float(value))])
    return buffer.getvalue()


def _is_results_run(run_dir: Path) -> bool:
    """A results run (copied here before): a ``step,tag,value`` metrics.csv, no record, no TensorBoard events."""
    if (run_dir / SCALARS_FILE).is_file() or list(run_dir.glob("events.out.tfevents.*")):
        return False
    try:
        with open(run_dir / METRICS_FILE, newline="") as handle:
            return handle.readline().strip() == "step,tag,value"
    except OSError:
        return False


def _fit_records(run_dir: Path) -> list[Path]:
    """The fit's own ``efficiency*.json`` (a ``test``/``validate`` of an old run wrote ``stage: test`` ones)."""
    keep = []
    for path in numbered_files(run_dir, runs.EFFICIENCY_FILE):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("stage", "fit") == "fit":
            keep.append(path)
    return keep


def result_files(run_dir: str | Path) -> dict[str, bytes]:
    """``{file name: content}`` of what a results run keeps of ``run_dir`` (see the module docstring)."""
    run_dir = Path(run_dir)
    paths = [Path(p) for p in runs.config_files(str(run_dir))]
    paths += _fit_records(run_dir) + numbered_files(run_dir, DATA_RECORD)
    if (run_dir / DIAGNOSTICS_FILE).is_file():
        paths.append(run_dir / DIAGNOSTICS_FILE)
    files = {path.name: path.read_bytes() for path in paths}
    if _is_results_run(run_dir):  # its curves as they are
        files[METRICS_FILE] = (run_dir / METRICS_FILE).read_bytes()
    elif (curves := metrics_csv(run_dir)) is not None:
        files[METRICS_FILE] = curves.encode()
    return files


def export_run(run_dir: str | Path, target: str | Path) -> str:
    """Copy ``run_dir``'s result files into ``target``: ``"copied"`` or ``"unchanged"`` (identical already there).

    Raises ``ResultsConflict`` (writing nothing) when ``target`` holds other content: a committed
    result is never replaced; move it aside or remove it with git first.
    """
    files = result_files(run_dir)
    target = Path(target)
    if target.exists():
        return _already_there(files, target, run_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))  # dot folder: never read
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700 would hide the result from the user's group
        for name, content in files.items():
            (staging / name).write_bytes(content)
        try:
            os.rename(staging, target)  # all files at once, or none
        except OSError as error:  # another sweep exported it between the check and here
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not target.is_dir():
                raise
            shutil.rmtree(staging, ignore_errors=True)
            return _already_there(files, target, run_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return "copied"


def _already_there(files: dict[str, bytes], target: Path, run_dir: str | Path) -> str:
    """``"unchanged"`` when ``target`` holds exactly ``files``; ``ResultsConflict`` otherwise."""
    existing = {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()}
    if existing == files:
        return "unchanged"
    differ = sorted(name for name in set(files) | set(existing) if files.get(name) != existing.get(name))
    raise ResultsConflict(
        f"results run {str(target)!r} already holds other files than {str(run_dir)!r} (differing: "
        f"{', '.join(differ)}); a committed result is never overwritten: move it aside or `git rm` it first"
    )


def write_index(results: str | Path, study_name: str, study_file: str | Path | None) -> None:
    """``<results>/results.json``: which study file plans these runs (relative to the repository root)."""
    index = {"study": study_name, "study_file": None if study_file is None else Path(study_file).as_posix()}
    path = Path(results) / INDEX_FILE
    text = json.dumps(index, indent=2, sort_keys=True) + "\n"
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def read_index(results: str | Path) -> dict[str, Any] | None:
    """``results.json`` of a results folder; None when the folder is not one."""
    return read_json(Path(results) / INDEX_FILE)


def export(study: Study, run: RunSpec) -> str | None:
    """Copy an ended run into the study's results folder; the line to print, or None without ``results``."""
    target = study.results_dir(run)
    if target is None:
        return None
    outcome = export_run(run.run_dir, target)  # ResultsConflict: the caller says so
    write_index(cast(str, study.results), study.name, study_file_path(study))  # set: results_dir gave a target
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
