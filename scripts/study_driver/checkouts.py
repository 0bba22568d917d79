"""The main checkout (where results are committed) and what the driver asks git of it; the clock it writes."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from pathlib import Path

from src.sweeping.study import RunSpec, Study

MAIN = Path(__file__).resolve().parents[2]  # the main checkout: scripts/study_driver/ is two below it


class DriverError(RuntimeError):
    """Something the driver will not do, with why (one line)."""


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


def last_line(stderr: str) -> str:
    """What a failed child said last (its error), for a one-line message."""
    return (stderr.strip().splitlines() or ["no output"])[-1]


def cpu_env() -> dict[str, str]:
    """The arms are CPU runs: a GPU here would take them over (accelerator: auto) and mix devices within an arm."""
    return {**os.environ, "CUDA_VISIBLE_DEVICES": ""}


def now() -> str:
    return iso(time.time())


def stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
