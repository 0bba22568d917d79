"""Tables as files and text: the one CSV writer (``write_rows``), a CSV that never overwrites one (``write_csv``),
the same rows as aligned text or Markdown. Used by the report, the lesion and the prune commands."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from typing import Any

from src.files import free_path  # the project's one "never overwrite" rule


def write_rows(
    rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, columns: Sequence[str] | None = None
) -> None:
    """``rows`` (dicts) as a CSV at ``path``: ``columns`` or the first row's keys; ``None`` as an empty cell; a
    header-only file when there are no rows. The project's one CSV table writer."""
    columns = list(columns or (rows[0] if rows else ["none"]))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows({key: "" if row.get(key) is None else row.get(key) for key in columns} for row in rows)


def write_csv(rows: Sequence[Mapping[str, Any]], directory: str | os.PathLike, filename: str) -> str:
    """Write ``rows`` (one dict each, same keys) to a new CSV in ``directory``, never over a file; return its path."""
    os.makedirs(directory, exist_ok=True)
    path = free_path(directory, filename)
    write_rows(rows, path)
    return path


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """The rows as a fixed-width text table, for the terminal."""
    columns = list(columns or rows[0])
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """The rows as a GitHub Markdown table (floats to 4 places, ``None`` empty)."""
    columns = list(columns or rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def free_stem(directory: str | os.PathLike, filenames: Sequence[str]) -> str:
    """The first suffix (``""``, ``"-1"``, ``"-2"``...) under which none of ``filenames`` exists in ``directory``.

    A tool that writes several files at once (``prune.csv``, ``prune.md``, ``prune.png``) keeps them
    together: a second run writes ``prune-1.*`` for all of them, never overwriting any. A symbolic link, even a
    dangling one, occupies its name (writing through it would create its target, wherever it points).
    """
    index = 0
    while True:
        suffix = f"-{index}" if index else ""
        if not any(os.path.lexists(os.path.join(directory, with_suffix(name, suffix))) for name in filenames):
            return suffix
        index += 1


def with_suffix(filename: str, suffix: str) -> str:
    """``prune.csv`` + ``-1`` -> ``prune-1.csv``."""
    stem, ext = os.path.splitext(filename)
    return f"{stem}{suffix}{ext}"
