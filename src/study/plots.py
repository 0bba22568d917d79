"""Figures of the studies (matplotlib only; no other project imports, so callbacks can draw too).

* ``depth_profile_figure`` / ``plot_depth_profiles``: a per-block value (gradient norm,
  residual-branch ratio) against block index -- one training step, or the runs' saved
  ``diagnostics.jsonl`` side by side (plain vs residual);
* ``plot_lesion``: accuracy after removing each block, and after removing k random blocks;
* ``plot_pruning``: accuracy against remaining parameters, several networks on one plot.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure  # no pyplot: no global figure registry, no display, nothing to close
from matplotlib.ticker import MaxNLocator

LABELS = {"grad_norm": "gradient norm of branch weights", "branch_ratio": "||F(x)|| / ||x||"}


def depth_profile_figure(values: Mapping[str, Sequence[float | None]], title: str = "") -> Figure:
    """One panel per quantity (``grad_norm``, ``branch_ratio``): value against block index."""
    keys = [key for key in values if values[key]]
    figure = Figure(figsize=(4.5 * max(len(keys), 1), 3.2))
    axes = figure.subplots(1, max(len(keys), 1), squeeze=False)
    for axis, key in zip(axes[0], keys):
        points = [(i, v) for i, v in enumerate(values[key]) if v is not None]
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3)
        axis.set_xlabel("block index (input → output)")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(LABELS.get(key, key))
        if key == "grad_norm" and all(p[1] > 0 for p in points):
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def read_diagnostics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``diagnostics.jsonl`` (one per measured step)."""
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def plot_depth_profiles(
    runs: Mapping[str, str | os.PathLike], path: str | os.PathLike, key: str = "grad_norm", last: int = 5
) -> Figure:
    """``key`` against block index for several runs (label -> ``diagnostics.jsonl``) on one axis.

    Each run's curve is the mean over its last ``last`` measured steps, so one noisy step
    does not decide the picture. Saves the figure to ``path`` and returns it.
    """
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    for label, file in runs.items():
        records = [r for r in read_diagnostics(file) if key in r][-last:]
        if not records:
            raise ValueError(f"{file} has no {key!r} records")
        width = len(records[0][key])
        means = []
        for index in range(width):
            seen = [r[key][index] for r in records if r[key][index] is not None]
            means.append(sum(seen) / len(seen) if seen else float("nan"))
        axis.plot(range(width), means, marker="o", markersize=3, label=f"{label} (steps ≤ {records[-1]['step']})")
    axis.set_xlabel("block index (input → output)")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylabel(LABELS.get(key, key))
    if key == "grad_norm":
        axis.set_yscale("log")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    return figure


def plot_lesion(
    single: Sequence[Mapping[str, Any]],
    random: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    title: str = "",
) -> Figure:
    """Left: accuracy with each block removed (downsampling blocks marked); right: k random blocks removed."""
    baseline = next(row["acc"] for row in single if row["removed"] == "none")
    lesions = [row for row in single if row["removed"] != "none"]
    figure = Figure(figsize=(10, 3.8))
    left, right = figure.subplots(1, 2)
    colours = ["tab:red" if row["downsampling"] else "tab:blue" for row in lesions]
    left.bar([row["block_index"] for row in lesions], [row["acc"] for row in lesions], color=colours)
    left.axhline(baseline, color="black", linestyle="--", linewidth=1, label=f"no lesion ({baseline:.3f})")
    for axis in (left, right):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_xlabel("block removed (index; red = downsampling)")
    left.set_ylabel("accuracy")
    left.legend(loc="lower left")
    left.grid(axis="y", alpha=0.3)
    by_k: dict[int, list[float]] = {}
    for row in random:
        by_k.setdefault(int(row["k"]), []).append(float(row["acc"]))
    ks = sorted(by_k)
    means = [sum(by_k[k]) / len(by_k[k]) for k in ks]
    errors = [(sum((a - m) ** 2 for a in by_k[k]) / len(by_k[k])) ** 0.5 for k, m in zip(ks, means)]
    right.errorbar([0, *ks], [baseline, *means], yerr=[0.0, *errors], marker="o", capsize=3)
    right.set_xlabel("random blocks removed (k)")
    right.set_ylabel("accuracy (mean ± std over trials)")
    right.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    return figure


def plot_pruning(curves: Mapping[str, Sequence[Mapping[str, Any]]], path: str | os.PathLike) -> Figure:
    """Accuracy against remaining parameters for several networks (label -> rows of ``prune_sweep``)."""
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    for label, rows in curves.items():
        rows = sorted(rows, key=lambda row: row["sparsity"])
        remaining = [row["remaining_params"] for row in rows]
        axis.plot(remaining, [row["acc"] for row in rows], marker="o", markersize=4, label=label)
        tuned = [(r, row["acc_finetuned"]) for r, row in zip(remaining, rows) if row.get("acc_finetuned") is not None]
        if tuned:
            axis.plot(*zip(*tuned), marker="s", markersize=4, linestyle="--", label=f"{label}, fine-tuned")
    axis.set_xscale("log")
    axis.invert_xaxis()  # left to right: more pruning
    axis.set_xlabel("remaining non-zero parameters")
    axis.set_ylabel("accuracy")
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    return figure
