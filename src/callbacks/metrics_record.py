"""``scalars.csv``: every scalar the run logs, as ``step,tag,value`` rows, whatever logger the run uses.

Why: TensorBoard, CSV, W&B and MLflow each store curves in their own format (and W&B / MLflow may
keep them on a server); the report and the study's results need one record they can always read in
the run directory. ``MetricsRecord`` attaches a small ``Logger`` beside the user's loggers, so it sees
exactly the scalars every logger is given (``self.log``, the LR monitor, the efficiency callback) at
the same steps, without any logger's files.

* Rank zero only (Lightning calls loggers on every rank; ``rank_zero_only`` keeps the others out).
* Each ``log_metrics`` call is one appended, flushed write of whole lines: a killed run leaves every row
  written before it, and at worst a partial last line, which readers skip and the next start drops.
* Resume: every checkpoint records how many rows the file held when it was saved. When training restarts
  from it, a row is kept if the checkpoint saw it, or if its step is at most the restored logging step
  (Lightning logs the epoch's train metrics just *after* the epoch-end checkpoint, and a resume does not
  log them again); the rest were logged by batches the resumed run trains again, and are dropped.
  Neither alone is right: at an epoch's end the efficiency callback logs at step ``n`` before the
  checkpoint, and the next batch logs at ``n`` after it. (A checkpoint older than the record: by step.)
  Readers take a step logged twice as its last value, as for TensorBoard events (``src.runs.read_metrics``).
  Tested against an uninterrupted run with a ``kill -9`` mid-epoch: the same rows, in the same order.
"""

from __future__ import annotations

import io
import math
import os
from argparse import Namespace
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

from src.files import atomic_write
from src.runs import SCALARS_FILE
from src.runs.scalars import HEADER, format_row, record_rows


class _RecordLogger(Logger):
    """The logger ``MetricsRecord`` adds: appends ``log_metrics`` calls to ``<run dir>/scalars.csv``."""

    def __init__(self, directory: str, version: Any = None, filename: str = SCALARS_FILE) -> None:
        super().__init__()
        self._directory = directory
        self._filename = filename
        self._version = version
        self._handle: io.TextIOWrapper | None = None
        self.rows = 0  # whole rows in the file (counted when it is opened)
        # Recent values already in the file: Lightning repeats e.g. ``epoch`` in every call at a step.
        self._written: dict[tuple[int, str], float] = {}

    @property
    def path(self) -> str:
        return os.path.join(self._directory, self._filename)

    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> Any:
        """The version of the logger before it, so the progress bar's ``v_num`` is what it was without this one."""
        return self._version

    @property
    def save_dir(self) -> str:
        return self._directory

    @property
    def log_dir(self) -> str:
        return self._directory

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Hyperparameters are in the run's ``config.yaml``; the record holds curves only."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        step = int(step or 0)
        handle, rows = self._open(), []
        for tag, value in metrics.items():
            try:
                number = float(value)
            except (TypeError, ValueError):  # not a scalar: no curve to draw
                continue
            known = self._written.get((step, tag))
            if known is not None and (known == number or (math.isnan(known) and math.isnan(number))):
                continue  # the same value at the same step: nothing new
            self._remember(step, tag, number)
            rows.append(format_row(step, tag, number))  # NaN too: it shows where a run diverged
        if rows:
            handle.write("".join(rows))
            handle.flush()
            self.rows += len(rows)

    def row_count(self) -> int:
        """Whole rows in the file now (what a checkpoint saved now records)."""
        if self._handle is not None:
            return self.rows
        return sum(1 for _ in record_rows(self.path)) if os.path.exists(self.path) else 0

    def _remember(self, step: int, tag: str, value: float) -> None:
        self._written[(step, tag)] = value
        if len(self._written) > 4096:  # only recent steps repeat: keep the newest half
            for key in sorted(self._written, key=lambda key: key[0])[:2048]:
                del self._written[key]

    def _open(self) -> io.TextIOWrapper:
        if self._handle is None:
            os.makedirs(self._directory, exist_ok=True)
            fresh = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
            self.rows = 0 if fresh else sum(1 for _ in record_rows(self.path))
            self._handle = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115  (kept open)
            if fresh:
                self._handle.write(",".join(HEADER) + "\n")
            elif not _ends_with_newline(self.path):  # a torn last line: start ours on a line of its own
                self._handle.write("\n")
        return self._handle

    @rank_zero_only
    def keep(self, rows: int, step: int) -> int:
        """Rewrite the record keeping its first ``rows`` rows and any up to ``step``; the number of rows dropped."""
        self.close()
        if not os.path.exists(self.path):
            return 0
        found = list(record_rows(self.path))
        kept = [row for index, row in enumerate(found) if index < rows or row[0] <= step]
        text = ",".join(HEADER) + "\n" + "".join(format_row(*row) for row in kept)
        with open(self.path, encoding="utf-8", newline="") as handle:
            unchanged = handle.read() == text
        if not unchanged:
            atomic_write(self.path, lambda handle: handle.write(text), binary=False)
        self.rows, self._written = len(kept), {}
        for row_step, tag, value in kept[-256:]:
            self._remember(row_step, tag, value)
        return len(found) - len(kept)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.close()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


class MetricsRecord(Callback):
    """Writes ``scalars.csv`` into the run directory (``trainer.log_dir``); see the module docstring."""

    def __init__(self) -> None:
        self.logger: _RecordLogger | None = None
        self._restored_rows: int | None = None
        self.filename = SCALARS_FILE  # relative to the run directory; an evaluation of a run writes its own

    _is_writer = True

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._is_writer = trainer.is_global_zero
        directory = trainer.log_dir or trainer.default_root_dir  # a collective call under DDP: every rank makes it
        if self.logger is not None and self.logger in trainer.loggers:  # fit, then test: one record
            return
        version = trainer.loggers[0].version if trainer.loggers else None
        self.logger = _RecordLogger(directory, version, self.filename)
        trainer.loggers = [*trainer.loggers, self.logger]

    def state_dict(self) -> dict[str, Any]:
        """The rows the record held when this checkpoint was saved (rank zero's count: the one that writes)."""
        return {"rows": self.logger.row_count() if self.logger is not None and self._is_writer else None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored_rows = state_dict.get("rows")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Training (re)starts after the checkpoint was restored: forget the rows logged after it was saved."""
        if self.logger is None:
            return
        if self._restored_rows is not None or trainer.ckpt_path is not None:
            loop = trainer.fit_loop.epoch_loop
            step = getattr(loop, "_batches_that_stepped", trainer.global_step)  # Lightning's last logging step
            self.logger.keep(rows=self._restored_rows or 0, step=step)
        self._restored_rows = None

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.logger is not None:
            self.logger.close()
