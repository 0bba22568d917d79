"""What the report's figures draw, as numbers: the figures' names, the curves and depth profiles read from the
runs, each line's size to reach the target accuracy, and ``figures.json`` (what ``--check`` compares instead
of PNG bytes).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import cast

import numpy as np

from src.reporting.depth_profiles import depth_profiles, draw_depth_profiles
from src.reporting.figures import COSTS
from src.reporting.records import RunRecord
from src.reporting.statistics import MIN_SEEDS_FOR_FIT, draw_means, size_to_reach
from src.reporting.study_rows import Row, default_target, lines_of, row_size, size_text
from src.runs import read_scalars

FIGURES = {
    "params": "test_error_vs_params.png",
    "macs": "test_error_vs_macs.png",
    "compute": "test_error_vs_compute.png",
    "time": "test_error_vs_time.png",
    "target": "size_to_target.png",
    "curves": "training_curves.png",
}
FIGURE_DATA = "figures.json"
CURVE_TAGS = {"train": "train/acc", "val": "val/acc"}
# Written when finished runs trained with the diagnostics callback (diagnostics.enabled: true).
DIAGNOSTICS_FILE = "diagnostics.jsonl"
DIAGNOSTICS_FIGURES = {
    "grad_rms": "diagnostics_grad_rms.png",
    "grad_to_weight": "diagnostics_grad_to_weight.png",
    "branch_to_shortcut": "diagnostics_branch_to_shortcut.png",
}


def diagnostics_figures(
    records: list[RunRecord], out: Path, notes: list[str] | None = None, data: dict | None = None
) -> list[str]:
    """Scale-free per-block profiles against relative depth: one curve per variant over ALL its finished seeds.

    RMS gradient per weight, ||g|| / ||w|| and ||F(x)|| / ||s(x)|| (``src.reporting.depth_profiles``: each
    seed averaged over measured steps >= 75% of its last, then the mean over seeds with a min-max band).
    Returns the names of the figures written: none when no run recorded the scale-free diagnostics.
    What was skipped (old ``diagnostics.jsonl`` files, seeds whose blocks differ) is appended to
    ``notes``, or printed to stderr when ``notes`` is None. ``data`` (when given) receives each figure's
    profiles as numbers, by figure name (for ``figures.json``).
    """
    files: dict[str, list[Path]] = {}
    for run in records:
        path = Path(run.run_dir) / DIAGNOSTICS_FILE
        if run.status == "finished" and path.is_file():
            files.setdefault(run.variant, []).append(path)
    written, skipped = [], []
    for key, name in DIAGNOSTICS_FIGURES.items():
        profiles, why = depth_profiles(files, key)
        skipped += [note for note in why if note not in skipped]
        if profiles:
            draw_depth_profiles(profiles, out / name, key=key)
            written.append(name)
            if data is not None:
                data[name] = [dataclasses.asdict(profile) for profile in profiles]
    if notes is None:
        for note in skipped:
            print(f"diagnostics: {note}", file=sys.stderr)
    else:
        notes.extend(skipped)
    return written


def read_curves(records: list[RunRecord]) -> dict[str, dict[str, list]]:
    """``{variant: {"train": [(steps, acc) per seed], "val": [...]}}`` from the finished runs' TensorBoard files."""
    curves: dict[str, dict[str, list]] = {}
    for run in records:
        if run.status != "finished":
            continue
        scalars = read_scalars(run.run_dir, list(CURVE_TAGS.values()))
        for split, tag in CURVE_TAGS.items():
            if tag in scalars:
                curves.setdefault(run.variant, {}).setdefault(split, []).append(scalars[tag])
    return curves


def choose_target(rows: list[Row], target_acc: float | None) -> tuple[float | None, str]:
    """The target accuracy and how it was chosen (given, or the best accuracy every line reaches)."""
    if target_acc is not None:
        return target_acc, "given with --target-acc"
    target = default_target(rows)
    return target, "default: the best mean test accuracy every line reaches; set it with --target-acc"


def sizes_to_target(rows: list[Row], target: float | None) -> dict[str, dict[str, tuple[float | None, str]]]:
    """``{line: {"params"|"macs"|"compute": (size, how)}}`` to reach ``target`` mean test accuracy."""
    needed: dict[str, dict[str, tuple[float | None, str]]] = {}
    for line, members in lines_of(rows).items():
        needed[line] = {}
        for size in ("params", "macs", "compute"):
            # Only rows with a size recorded: row_size is a number for each of them.
            ordered = sorted(
                (row for row in members if row_size(row, size)), key=lambda row: cast(float, row_size(row, size))
            )
            if target is None or not ordered:
                needed[line][size] = (None, "no target" if target is None else "no size recorded")
                continue
            if any(row.n < MIN_SEEDS_FOR_FIT for row in ordered):  # with an interval or not at all
                needed[line][size] = (None, f"not given: a size has fewer than {MIN_SEEDS_FOR_FIT} seeds")
                continue
            # Rows hold tested runs only (tables.aggregate): each has a mean test accuracy.
            sizes = [cast(float, row_size(row, size)) for row in ordered]
            accuracies = [cast(float, row.test_acc_mean) for row in ordered]
            value, how = size_to_reach(sizes, accuracies, target)
            seeds = [[cast(float, run.test_acc) for run in row.runs] for row in ordered]
            needed[line][size] = (value, how + reach_interval(sizes, seeds, target) if how == "interpolated" else how)
    return needed


def reach_interval(sizes: list[float], seeds: list[list[float]], target: float, draws: int = 1000) -> str:
    """`` [95% CI a-b]`` of the interpolated size to ``target``: each size's mean drawn by ``draw_means``
    (parametric bootstrap: resampling 3 seeds gives intervals far narrower than 95%); an end is open
    (``> largest``) when over 2.5% of the draws do not reach the target."""
    rng = np.random.default_rng(0)
    reached: list[float] = []
    for _ in range(draws):
        means = draw_means(rng, seeds).tolist()
        found, how = size_to_reach(sizes, means, target)
        reached.append(found if found is not None else math.inf)  # "at the smallest size": an upper bound
    low, high = np.percentile(reached, [2.5, 97.5])
    if low == high:  # seeds that do not vary: no zero-width interval
        return " (no interval: the seeds do not vary)"
    high_text = f"> {size_text(sizes[-1])}" if not math.isfinite(high) else size_text(float(high))
    return f" [95% CI {size_text(float(low))} to {high_text}]"


def _rounded(value: object) -> object:
    """Floats to 10 significant digits (the last bits of a float sum are no part of a result), recursively."""
    if isinstance(value, float):
        return float(f"{value:.10g}") if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(key): _rounded(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(item) for item in value]
    return value


def figure_data(rows: list[Row], records: list[RunRecord], target: tuple[float | None, str], diagnostics: dict) -> dict:
    """What every figure draws, as numbers: ``figures.json`` (compared by ``--check`` instead of PNG bytes)."""
    data: dict = {}
    for cost in ("params", "macs", "compute", "time"):
        _, row_cost, run_cost = COSTS[cost]
        data[FIGURES[cost]] = [
            {
                "variant": row.variant,
                "line": row.line,
                "x": row_cost(row),
                "error_mean": row.test_error_mean,
                "error_ci_half_width": row.test_error_half_width,
                "seeds": [[run.seed, run_cost(run), 100.0 * (1.0 - cast(float, run.test_acc))] for run in row.runs],
            }
            for row in rows
            if row.test_error_mean is not None and row_cost(row)
        ]
    needed = sizes_to_target(rows, target[0])
    data[FIGURES["target"]] = {"target_acc": target[0], "lines": {line: needed[line] for line in sorted(needed)}}
    curves = read_curves(records)
    data[FIGURES["curves"]] = {
        variant: {split: [list(map(list, curve)) for curve in by_split[split]] for split in sorted(by_split)}
        for variant, by_split in sorted(curves.items())
    }
    data.update(diagnostics)  # the depth profiles, by figure name
    return cast(dict, _rounded(data))  # a dict stays a dict
