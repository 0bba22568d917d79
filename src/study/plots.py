"""Figures of the studies (matplotlib only; no other project imports, so callbacks can draw too).

* ``depth_profiles`` / ``plot_depth_profiles`` / ``depth_profile_figure`` and helpers: re-exported from
  ``src.study.depth_profiles`` (per-block diagnostics against relative depth, over seeds);
* ``plot_lesion``: accuracy after removing each block, and after removing k random blocks;
* ``plot_pruning``: accuracy against remaining parameters, several networks on one plot.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure  # no pyplot: no global figure registry, no display, nothing to close
from matplotlib.ticker import MaxNLocator

from src.study.depth_profiles import (
    depth_profile_figure,
    depth_profiles,
    draw_depth_profiles,
    plot_depth_profiles,
    read_diagnostics,
)

__all__ = [
    "depth_profile_figure",
    "depth_profiles",
    "draw_depth_profiles",
    "plot_depth_profiles",
    "plot_lesion",
    "plot_pruning",
    "read_diagnostics",
]


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
