"""The format of ``scalars.csv`` (``step,tag,value`` rows): written by ``src.callbacks.metrics_record``, read here.

One home for the format, below both its writer (a training callback) and its readers (``src.runs.readers``,
the report): a torn last line (a killed run) and foreign rows are skipped, never an error.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

HEADER = ("step", "tag", "value")


def record_rows(path: str) -> Iterator[tuple[int, str, float]]:
    """``(step, tag, value)`` of every whole, well-formed row of a record; a torn or foreign line is skipped."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return
    if not text.endswith("\n"):  # a write cut short by a kill: its last line is incomplete
        text = text[: text.rfind("\n") + 1]
    for row in csv.reader(io.StringIO(text)):
        if len(row) != 3 or tuple(row) == HEADER:
            continue
        try:
            yield int(row[0]), row[1], float(row[2])
        except ValueError:
            continue


def format_row(step: int, tag: str, value: float) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([step, tag, repr(float(value))])
    return buffer.getvalue()
