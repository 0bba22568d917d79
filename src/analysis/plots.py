"""Figures of ``python -m src.lesion`` and ``python -m src.prune`` (matplotlib only; no other project imports).

(Per-block diagnostics against depth, drawn by the report and the diagnostics callback, live in
``src.reporting.depth_profiles``.)

* ``plot_lesion``: accuracy after removing each block, and after removing k random blocks;
* ``plot_pruning``: accuracy against remaining parameters, several networks with their controls;
* ``plot_pruning_layers``: the fraction of each layer pruned, at each overall sparsity.
"""

from __future__ import annotations

import itertools
import os
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure  # no pyplot: no global figure registry, no display, nothing to close
from matplotlib.ticker import MaxNLocator

__all__ = ["plot_lesion", "plot_pruning", "plot_pruning_layers"]


def plot_lesion(
    single: Sequence[Mapping[str, Any]],
    random: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    title: str = "",
) -> Figure:
    """Left: accuracy with each block removed; right: k random blocks removed, mean ± sample std.

    Left bars: blue a block removed, red a downsampling block, a grey cross a plain block that
    cannot be removed (no shortcut, changes shape). Right: mean over the trials with error bars of
    the sample standard deviation (ddof = 1), ``n`` trials per point in the label; no bar for n = 1.
    """
    baseline = next(float(row["acc"]) for row in single if row["removed"] == "none")
    lesions = [row for row in single if row["removed"] != "none"]
    done = [row for row in lesions if row["acc"] not in (None, "")]
    refused = [row for row in lesions if row["acc"] in (None, "")]
    figure = Figure(figsize=(10, 3.8))
    left, right = figure.subplots(1, 2)
    colours = ["tab:red" if _true(row["downsampling"]) else "tab:blue" for row in done]
    left.bar([int(row["block_index"]) for row in done], [float(row["acc"]) for row in done], color=colours)
    if refused:
        left.plot([int(row["block_index"]) for row in refused], [0.0] * len(refused), "x", color="grey",
                  markersize=8, label="cannot be removed (plain, changes shape)")  # fmt: skip
    left.axhline(baseline, color="black", linestyle="--", linewidth=1, label=f"no lesion ({baseline:.3f})")
    for axis in (left, right):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_xlabel("block removed (index; red = downsampling)")
    left.set_ylabel("accuracy")
    left.legend(loc="best", fontsize="small")
    left.grid(axis="y", alpha=0.3)
    by_k: dict[int, list[float]] = {}
    for row in random:
        by_k.setdefault(int(row["k"]), []).append(float(row["acc"]))
    ks = sorted(by_k)
    means = [statistics.fmean(by_k[k]) for k in ks]
    errors = [statistics.stdev(by_k[k]) if len(by_k[k]) > 1 else 0.0 for k in ks]
    counts = sorted({len(by_k[k]) for k in ks})
    n = ", ".join(str(c) for c in counts) or "0"
    spread = "mean ± sample std, ddof = 1" if counts and max(counts) > 1 else "single draw, no spread"
    right.errorbar([0, *ks], [baseline, *means], yerr=[0.0, *errors], marker="o", capsize=3, label=f"n = {n} per k")
    right.set_xlabel("random blocks removed (k)")
    right.set_ylabel(f"accuracy ({spread})")
    right.legend(loc="best", fontsize="small")
    right.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    return figure


def _true(value: Any) -> bool:
    """A flag from a row, also as read back from a CSV (``"True"``)."""
    return value is True or str(value) == "True"


PRUNE_STYLES = {  # (scope, method) -> line style, marker, filled: magnitude solid, random control dotted
    ("global", "magnitude"): ("-", "o", True),
    ("layer", "magnitude"): ("--", "s", True),
    ("global", "random"): (":", "o", False),
    ("layer", "random"): ("-.", "s", False),
}


def plot_pruning(curves: Mapping[str, Sequence[Mapping[str, Any]]], path: str | os.PathLike) -> Figure:
    """Accuracy against remaining parameters: each network (one colour) with its controls (line styles).

    ``curves``: label -> rows of ``prune_study`` (``scope`` / ``method`` default to global magnitude for
    older rows). Solid: global magnitude; dashed: layer-wise magnitude; dotted / dash-dotted: the random
    control at the same per-layer sparsities. A red cross marks a point whose predictions collapsed to
    one class. With fine-tuned rows, a second panel shows the accuracy after fine-tuning.
    """
    tuned = any(row.get("acc_finetuned") not in (None, "") for rows in curves.values() for row in rows)
    figure = Figure(figsize=(13 if tuned else 9, 4.5))
    panels = figure.subplots(1, 2 if tuned else 1, squeeze=False)[0]
    colours = [f"C{i}" for i in range(10)]
    for panel, key in zip(panels, ("acc", "acc_finetuned")):
        for colour, (label, rows) in zip(itertools.cycle(colours), curves.items()):
            groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
            for row in rows:
                groups.setdefault((row.get("scope", "global"), row.get("method", "magnitude")), []).append(row)
            for (scope, method), group in groups.items():
                group = sorted(group, key=lambda row: float(row["sparsity"]))
                points = [(float(r["remaining_params"]), float(r[key])) for r in group if r.get(key) not in (None, "")]
                if not points:
                    continue
                style, marker, filled = PRUNE_STYLES.get((scope, method), ("-", "o", True))
                face = colour if filled else "none"
                panel.plot(*zip(*points), linestyle=style, marker=marker, markersize=4, color=colour,
                           markerfacecolor=face, label=f"{label}: {scope} {method}")  # fmt: skip
                flag = "predictions_collapsed" + ("_finetuned" if key == "acc_finetuned" else "")
                collapsed = [p for p, r in zip(points, group) if _true(r.get(flag))]
                if collapsed:
                    panel.plot(*zip(*collapsed), "x", color="red", markersize=9, zorder=5)
        panel.set_xscale("log")
        panel.invert_xaxis()  # left to right: more pruning
        panel.set_xlabel("remaining non-zero parameters")
        steps = sorted({str(row.get("finetune_steps")) for rows in curves.values() for row in rows})
        tuning = f" after fine-tuning ({'/'.join(steps)} steps)"
        panel.set_ylabel("accuracy" + (tuning if key == "acc_finetuned" else " after pruning"))
        panel.grid(alpha=0.3, which="both")
    panels[-1].plot([], [], "x", color="red", label="predictions collapsed to one class")
    panels[-1].legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside, not over, the curves
    bn = {int(row.get("bn_batches") or 0) for rows in curves.values() for row in rows}
    figure.suptitle("BN statistics re-estimated after pruning" if bn - {0} else "BN statistics of the intact network",
                    fontsize="medium")  # fmt: skip
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    return figure


def plot_pruning_layers(
    layers: Mapping[str, Sequence[Mapping[str, Any]]], path: str | os.PathLike, method: str = "magnitude"
) -> Figure:
    """Per-layer sparsity at each overall sparsity: one panel per network and scope.

    ``layers``: label -> per-layer rows of ``prune_study``. x: prunable layer in depth order, y: the
    fraction of its weights pruned, one line per overall sparsity; red crosses mark collapsed layers
    (>= 99% pruned). Only ``method`` rows are drawn (the random control has the same counts).
    """
    panels = []
    for label, rows in layers.items():
        for scope in dict.fromkeys(row["scope"] for row in rows):
            panels.append((label, scope, [r for r in rows if r["scope"] == scope and r["method"] == method]))
    figure = Figure(figsize=(6.5, 3.2 * max(len(panels), 1)))
    axes = figure.subplots(max(len(panels), 1), 1, squeeze=False)[:, 0]
    for axis, (label, scope, rows) in zip(axes, panels):
        by_sparsity: dict[float, list[Mapping[str, Any]]] = {}
        for row in rows:
            by_sparsity.setdefault(float(row["sparsity"]), []).append(row)
        for sparsity in sorted(by_sparsity):
            ordered = sorted(by_sparsity[sparsity], key=lambda row: int(row["index"]))
            xs = [int(row["index"]) for row in ordered]
            axis.plot(xs, [float(row["layer_sparsity"]) for row in ordered], marker=".", label=f"{sparsity:g}")
            collapsed = [(int(r["index"]), float(r["layer_sparsity"])) for r in ordered if _true(r["collapsed"])]
            if collapsed:
                axis.plot(*zip(*collapsed), "x", color="red", markersize=8)
        axis.set_title(f"{label}: {scope} {method} pruning", fontsize="medium")
        axis.set_xlabel("prunable layer (depth order: stem, blocks with their shortcuts, head)")
        axis.set_ylabel("fraction of layer pruned")
        axis.set_ylim(-0.02, 1.02)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend(title="overall", fontsize="x-small", title_fontsize="x-small", ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    return figure
