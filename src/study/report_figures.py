"""The study's figures (matplotlib, PNG): what each parameter and each MAC buys, and how each net trained.

* ``test_error_vs_params.png`` / ``test_error_vs_macs.png``: test error (%) against parameters /
  MACs per sample (log x), one series per line (residual, plain, ...), error bars = std over
  seeds, depth written beside each point, the Pareto frontier (no other variant is both smaller
  and more accurate) drawn through its points, optionally He et al.'s Table 6 as reference;
* ``training_curves.png``: training (dashed) and validation (solid) error against iterations,
  one panel per depth, plain against residual -- the form of He et al. Fig. 6.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from src.study.paper import CIFAR10_TABLE6, CITATION  # noqa: E402
from src.study.report_tables import Row  # noqa: E402

Curve = tuple[Sequence[float], Sequence[float]]  # (steps, values)


def line_colors(rows: Sequence[Row]) -> dict[str, str]:
    """A fixed color per line -- residual lines blue/green, plain lines red/orange -- the same in every figure."""
    palettes = {
        "residual": ["tab:blue", "tab:green", "tab:cyan", "tab:purple", "tab:olive"],
        "plain": ["tab:red", "tab:orange", "tab:brown", "tab:pink", "tab:gray"],
    }
    kinds = {row.line: row.kind for row in rows}
    colors, counts = {}, {"residual": 0, "plain": 0}
    for line in sorted(kinds):
        kind = kinds[line] if kinds[line] in palettes else "residual"
        colors[line] = palettes[kind][counts[kind] % len(palettes[kind])]
        counts[kind] += 1
    return colors


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both cost (x) and error (y), by increasing x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], float("inf")
    for index in order:
        if points[index][1] < best:
            front.append(index)
            best = points[index][1]
    return front


def plot_error_vs_cost(rows: list[Row], cost: str, path: str | Path, paper: bool = False) -> Path:
    """Test error (%) against ``cost`` (``params`` or ``macs``), one series per line; returns the file."""
    label_x = {"params": "parameters", "macs": "MACs per sample"}[cost]
    tested = [row for row in rows if row.test_error_mean is not None and getattr(row, cost)]
    colors = line_colors(rows)
    fig, ax = plt.subplots(figsize=(7, 4.8), dpi=120)
    lines = sorted({row.line for row in tested})
    for position, line in enumerate(lines):
        series = sorted((row for row in tested if row.line == line), key=lambda row: row.depth)
        # Plain and residual twins have the same size: shift each series a little (in log x) to keep both visible.
        nudge = 1.0 + 0.015 * (position - (len(lines) - 1) / 2)
        xs = [getattr(row, cost) * nudge for row in series]
        ys = [row.test_error_mean for row in series]
        errs = [row.test_error_std for row in series]
        seeds = "/".join(sorted({str(row.n) for row in series}))
        marker = "s" if series[0].kind == "plain" else "o"
        ax.errorbar(xs, ys, yerr=errs, marker=marker, capsize=3, color=colors[line], label=f"{line} (n={seeds})")
        for row, x, y in zip(series, xs, ys):
            ax.annotate(str(row.depth), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if tested:
        points = [(getattr(row, cost), row.test_error_mean) for row in tested]
        front = [points[i] for i in pareto_front(points)]
        ax.plot(*zip(*front), color="black", linestyle=":", linewidth=1, zorder=0)
        ax.scatter(*zip(*front), s=160, facecolors="none", edgecolors="black", linewidths=1, label="Pareto frontier")
    if paper:
        depths = max((row.depth for row in tested if row.family == "cifar"), default=0)
        reference = [result for result in CIFAR10_TABLE6 if result.depth <= max(depths, 56)]
        xs = [getattr(result, cost) for result in reference]
        ax.scatter(xs, [r.test_error for r in reference], marker="x", color="black", label=f"{CITATION} (ResNet, A)")
        for result, x in zip(reference, xs):
            ax.annotate(f"{result.depth}", (x, result.test_error), xytext=(5, -10), textcoords="offset points",
                        fontsize=7, color="dimgray")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel(f"{label_x} (log scale)")
    ax.set_ylabel("test error (%)")
    ax.set_title(f"Test error vs {label_x}: mean ± std over seeds")
    ax.grid(True, which="both", alpha=0.3)
    if not tested:
        ax.text(0.5, 0.5, "no tested runs yet", transform=ax.transAxes, ha="center", va="center")
    else:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def mean_curve(curves: list[Curve]) -> Curve:
    """The mean over seeds on the longest seed's steps (each seed interpolated within its own range)."""
    longest = max(curves, key=lambda curve: len(curve[0]))
    steps = np.asarray(longest[0], dtype=float)
    stack = np.full((len(curves), len(steps)), np.nan)
    for index, (xs, ys) in enumerate(curves):
        xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        inside = (steps >= xs.min()) & (steps <= xs.max())
        stack[index, inside] = np.interp(steps[inside], xs, ys)
    with np.errstate(all="ignore"):
        return steps.tolist(), np.nanmean(stack, axis=0).tolist()


def plot_training_curves(rows: list[Row], curves: dict[str, dict[str, list[Curve]]], path: str | Path) -> Path:
    """He et al. Fig. 6: train (dashed) and val (solid) error vs iterations, one panel per depth.

    ``curves[variant]["train"|"val"]`` holds each seed's ``(steps, accuracy)``.
    """
    depths = sorted({row.depth for row in rows if curves.get(row.variant)})
    colors = line_colors(rows)
    columns = min(len(depths), 3) or 1
    panels = (len(depths) + columns - 1) // columns or 1
    fig, axes = plt.subplots(panels, columns, figsize=(5 * columns, 3.8 * panels), dpi=120, squeeze=False)
    for ax, depth in zip(axes.flat, depths):
        finals = []
        for row in sorted((row for row in rows if row.depth == depth), key=lambda row: row.line):
            for split, style in (("train", "--"), ("val", "-")):
                seeds = [c for c in curves.get(row.variant, {}).get(split, []) if len(c[0])]
                if not seeds:
                    continue
                steps, acc = mean_curve(seeds)
                error = [100.0 * (1.0 - value) for value in acc]
                finals.append(error[-1])
                width = 1.0 if split == "train" else 1.8
                ax.plot(steps, error, style, color=colors[row.line], linewidth=width,
                        label=f"{row.variant} {split} (n={len(seeds)})")  # fmt: skip
        if finals:  # like the paper's 0-20% axis: the end of training, not the first iterations, is the story
            ax.set_ylim(0, min(100.0, max(20.0, 3.0 * max(finals))))
        ax.set_title(f"depth {depth}")
        ax.set_xlabel("iterations")
        ax.set_ylabel("error (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(depths) :]:
        ax.axis("off")
    if not depths:
        axes.flat[0].text(0.5, 0.5, "no training curves logged", ha="center", va="center")
    fig.suptitle("Training (dashed) and validation (solid) error,\nmean over seeds (the form of He et al. Fig. 6)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
