"""The report's section on a study's per-variant selection (``selection.json``, ``src.sweeping.selection``).

Why a section of its own: when every variant trained at its own learning rate, a reader must see which
rate each got, how close the runners-up came on the validation split, and on how many seeds that was
decided -- a choice made on one seed between candidates a fraction of a point apart is a coin toss, and
the comparison of shapes inherits it. ``report_selection.csv`` has one row per variant x candidate.
"""

from __future__ import annotations

import json
from typing import Any

CSV_FILE = "report_selection.csv"


def _values(values: dict[str, Any] | None) -> str:
    if not values:
        return "-"
    return ", ".join(f"{key.rsplit('.', 1)[-1]} = {value}" for key, value in values.items())


def _percent(value: Any) -> str:
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) else "-"


def selection_rows(data: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per variant x candidate: its values, per-seed scores, mean, and whether it was chosen."""
    if not data:
        return []
    rows = []
    for entry in data.get("variants", []):
        for candidate in entry.get("candidates", []):
            rows.append(
                {
                    "variant": entry["variant"],
                    "candidate": json.dumps(candidate["values"], sort_keys=True),
                    "metric": data.get("metric"),
                    "scores": json.dumps(candidate["scores"], sort_keys=True),
                    "mean": candidate["mean"],
                    "ended": candidate["ended"],
                    "chosen": candidate["values"] == entry.get("chosen"),
                    "status": entry["status"],
                }
            )
    return rows


def selection_markdown(data: dict[str, Any] | None) -> list[str]:
    """The report.md section (empty without a selection)."""
    if not data:
        return []
    seeds = data.get("seeds") or []
    grid = ", ".join(f"`{key}` in {values}" for key, values in data.get("grid", {}).items())
    budget = ", ".join(f"`{key}: {value}`" for key, value in (data.get("args") or {}).items())
    lines = [
        "## Per-variant selection (validation split)",
        "",
        f"Each variant trained its seeds at the values chosen for it from {grid}: the highest mean "
        f"`{data.get('metric')}` over {len(seeds)} selection seed(s) {seeds}"
        + (f", each selection run with {budget}" if budget else ", each selection run with the study's budget")
        + "; a candidate with a diverged seed is out; the held-out test split is not read. Numbers are validation "
        "accuracy in %.",
        "",
    ]
    if len(seeds) < 3:
        lines += [
            f"With {len(seeds)} selection seed(s) a difference between candidates of about a point or less is not "
            "distinguishable from seed noise: the choice then is a reasonable value, not a proven best one.",
            "",
        ]
    candidates = [c["values"] for c in (data.get("variants") or [{}])[0].get("candidates", [])]
    header = ["Variant", "Chosen", *(_values(values) for values in candidates)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in data.get("variants", []):
        chosen = entry.get("chosen")
        cells = []
        for candidate in entry.get("candidates", []):
            if candidate["mean"] is not None:
                text = _percent(candidate["mean"])
            else:
                text = "out (diverged, or no metric)" if candidate["ended"] else "pending"
            cells.append(f"**{text}**" if candidate["values"] == chosen else text)
        shown = _values(chosen) if chosen else entry["status"]
        lines.append("| " + " | ".join([entry["variant"], shown, *cells]) + " |")
    return [*lines, ""]
