"""The study's figures (matplotlib, PNG): what each parameter and each MAC buys, and how each net trained.

* ``test_error_vs_{params,macs,compute,time}.png``: test error (%) against parameters, MACs per
  sample, training compute and wall-clock (log x), one series per line, every seed a small point,
  the mean with its 95% t-interval, depth beside each mean, the Pareto frontier (no other variant
  is both cheaper and more accurate) drawn through its points, optionally He et al.'s Table 6;
* ``size_to_target.png``: what each line needs to reach a target accuracy;
* ``training_curves.png``: training (dashed) and validation (solid) error against iterations,
  one panel per depth, plain against residual -- the form of He et al. Fig. 6.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from src.reporting.paper import CIFAR10_TABLE6, CITATION  # noqa: E402
from src.reporting.study_rows import Row, size_text  # noqa: E402

Curve = tuple[Sequence[float], Sequence[float]]  # (steps, values)


def kind_colors(kinds: dict[str, str]) -> dict[str, str]:
    """A fixed color per name (a line, or a variant) from its kind: residual blue/green, plain red/orange."""
    palettes = {
        "residual": ["tab:blue", "tab:green", "tab:cyan", "tab:purple", "tab:olive"],
        "plain": ["tab:red", "tab:orange", "tab:brown", "tab:pink", "tab:gray"],
        "pruned": ["tab:purple", "tab:olive", "tab:pink", "tab:brown", "tab:gray"],
    }
    colors, counts = {}, {"residual": 0, "plain": 0, "pruned": 0}
    for name in sorted(kinds):
        kind = kinds[name] if kinds[name] in palettes else "residual"
        colors[name] = palettes[kind][counts[kind] % len(palettes[kind])]
        counts[kind] += 1
    return colors


def line_colors(rows: Sequence[Row]) -> dict[str, str]:
    """A fixed color per line -- residual lines blue/green, plain lines red/orange -- the same in every figure."""
    return kind_colors({row.line: "pruned" if row.pruned else row.kind for row in rows})


def variant_colors(rows: Sequence[Row], drawn: Iterable[str]) -> dict[str, str]:
    """The same scheme per variant, over the variants a figure draws (the lesion figure: one curve per variant).
    Colored among those drawn only, so one residual and one plain variant are blue and red, as their lines are."""
    wanted = set(drawn)
    return kind_colors({row.variant: row.kind for row in rows if row.variant in wanted})


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both cost (x) and error (y), by increasing x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], float("inf")
    for index in order:
        if points[index][1] < best:
            front.append(index)
            best = points[index][1]
    return front


COSTS = {
    "params": ("parameters", lambda row: row.params, lambda run: run.params),
    "macs": ("MACs per sample", lambda row: row.macs, lambda run: run.macs),
    "compute": ("training compute (3 x MACs x images seen)", lambda row: row.train_compute_macs,
                lambda run: run.train_compute),
    "time": ("training wall-clock (s)", lambda row: row.train_time_sec_mean, lambda run: run.train_time_sec),
}  # fmt: skip


def plot_error_vs_cost(
    rows: list[Row], cost: str, path: str | Path, paper: str | None = None, anchors: Sequence = ()
) -> Path:
    """Test error (%) against ``cost`` (a key of ``COSTS``), one series per line; returns the file.

    Every finished seed is a small point; the line joins the means, whose error bars are the 95%
    t-interval (none with one seed). Series are shifted a little in log x so residual and plain
    twins of one size stay visible; the Pareto circles sit on the shifted means they mark.
    ``paper``: None, or the label of He et al.'s Table 6 overlay ("" when the protocol matches).
    ``anchors``: ``(PublishedResult, label)`` of the other families' published errors to draw as stars
    (``src.reporting.anchors``).
    """
    label_x, row_cost, run_cost = COSTS[cost]
    tested = [row for row in rows if row.test_error_mean is not None and row_cost(row)]
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    true_points, drawn, values = draw_lines(ax, tested, line_colors(rows), row_cost, run_cost)
    if true_points:
        draw_frontier(ax, true_points, drawn)
    if paper is not None and cost in ("params", "macs"):
        values += _draw_paper(ax, tested, cost, paper)
    if anchors and cost in ("params", "macs"):
        values += _draw_anchors(ax, anchors, cost)
    style_error_axes(
        ax, values, label_x, f"Test error vs {label_x}\nmean with 95% t-interval; small points: single seeds"
    )
    if not tested:
        ax.text(0.5, 0.5, "no tested runs yet", transform=ax.transAxes, ha="center", va="center")
    else:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def style_error_axes(ax: Any, values: list[float], label_x: str, title: str) -> None:
    """Test error (%) against a cost on log x; the y range from what is drawn (``values``), kept within 0-100%:
    intervals from two seeds can be wider than what error can be."""
    if values:
        low, high = max(0.0, min(values)), min(100.0, max(values))
        margin = max(1.0, 0.08 * (high - low))
        ax.set_ylim(max(0.0, low - margin), min(100.0, high + margin) + 0.5)
    ax.set_xscale("log")
    ax.set_xlabel(f"{label_x} (log scale)")
    ax.set_ylabel("test error (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)


def line_nudges(lines: Sequence[str]) -> dict[str, float]:
    """Each series' small shift in log x (a factor near 1), so residual and plain twins of one size stay visible."""
    return {line: 1.0 + 0.03 * (position - (len(lines) - 1) / 2) for position, line in enumerate(lines)}


def draw_lines(
    ax: Any, tested: list[Row], colors: dict[str, Any], row_cost: Callable, run_cost: Callable
) -> tuple[list[tuple[float, float]], list[tuple[float, float]], list[float]]:
    """Each line's means with their intervals and its seeds as points.

    Returns the means at their true cost (what the frontier is computed on), the same means where they
    are drawn (shifted a little per line), and every drawn error value (for the axis limits).
    """
    nudges = line_nudges(sorted({row.line for row in tested}))
    true_points: list[tuple[float, float]] = []
    drawn: list[tuple[float, float]] = []
    values: list[float] = []
    for line, nudge in nudges.items():
        series = sorted((row for row in tested if row.line == line), key=lambda row: row_cost(row))
        xs = [row_cost(row) * nudge for row in series]
        ys = [cast(float, row.test_error_mean) for row in series]  # every tested row has one
        half = [row.test_error_half_width or 0.0 for row in series]
        errs = [[y - max(0.0, y - h) for y, h in zip(ys, half)], [min(100.0, y + h) - y for y, h in zip(ys, half)]]
        seeds = "/".join(sorted({str(row.n) for row in series}))
        marker = _marker(series[0])
        ax.errorbar(xs, ys, yerr=errs, marker=marker, capsize=3, color=colors[line], label=f"{line} (n={seeds})")
        for row in series:
            # row.runs are the tested seeds (study_rows.aggregate keeps no other).
            points = [(run_cost(run) or row_cost(row), 100.0 * (1.0 - cast(float, run.test_acc))) for run in row.runs]
            ax.scatter([px * nudge for px, _ in points], [py for _, py in points], s=18, alpha=0.6,
                       color=colors[line], marker=marker, linewidths=0, zorder=3)  # fmt: skip
            values += [py for _, py in points]
        for row, x, y in zip(series, xs, ys):
            label = _point_label(row)
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        true_points += [(row_cost(row), y) for row, y in zip(series, ys)]
        drawn += list(zip(xs, ys))
        values += [y - h for y, h in zip(ys, half)] + [y + h for y, h in zip(ys, half)]
    return true_points, drawn, values


def _marker(row: Row) -> str:
    """Plain nets squares, residual nets circles; pruned nets triangles (up: BN re-estimated only, down: fine-tuned)."""
    if row.pruned:
        return "v" if row.runs[0].finetuned else "^"
    return "s" if row.kind == "plain" else "o"


def _point_label(row: Row) -> str:
    """A mean's label: its depth (x width, when widened); a pruned net's the parameters it kept; a class-path net
    (no depth) its name."""
    if row.pruned and row.params:
        return f"{row.params / 1e3:.0f}k"
    if not row.depth:
        return row.arch
    width = row.runs[0].width if row.runs else 1
    return f"{row.depth}x{width}" if width > 1 else str(row.depth)


def draw_frontier(ax: Any, true_points: list[tuple[float, float]], drawn: list[tuple[float, float]]) -> None:
    """Circles on the Pareto-optimal means (ties, twins of one size, all marked), joined by a dotted line."""
    best = {true_points[i] for i in pareto_front(true_points)}
    front = sorted(drawn[i] for i, point in enumerate(true_points) if point in best)
    front_x, front_y = zip(*front)
    ax.plot(front_x, front_y, color="black", linestyle=":", linewidth=1, zorder=0)
    ax.scatter(front_x, front_y, s=170, facecolors="none", edgecolors="black", linewidths=1, label="Pareto frontier")


def _draw_paper(ax: Any, tested: list[Row], cost: str, paper: str) -> list[float]:
    """He et al.'s Table 6 (``paper``: a note on the protocol, "" when it matches); returns its error values."""
    depths = max((row.depth for row in tested if row.family == "cifar"), default=0)
    reference = [result for result in CIFAR10_TABLE6 if result.depth <= max(depths, 56)]
    suffix = f" — {paper}" if paper else ""
    # The paper gives mean_error and std_error together.
    values = [r.test_error for r in reference] + [
        r.mean_error + cast(float, r.std_error) for r in reference if r.mean_error
    ]
    single = [r for r in reference if r.mean_error is None]
    xs = [getattr(result, cost) for result in single]
    ax.scatter(xs, [r.test_error for r in single], marker="x", color="black",
               label=f"{CITATION} (ResNet, A; one run){suffix}")  # fmt: skip
    for result in (r for r in reference if r.mean_error is not None):
        x = getattr(result, cost)
        ax.errorbar([x], [cast(float, result.mean_error)], yerr=[cast(float, result.std_error)], marker="D",
                    color="black", capsize=3, markersize=4, linestyle="none",
                    label=f"{CITATION}: ResNet-{result.depth} mean ± std of 5")  # fmt: skip
        ax.scatter([x], [result.test_error], marker="x", color="gray", label="its best of 5 (not a mean)")
    for result in reference:
        ax.annotate(f"{result.depth}", (getattr(result, cost), result.mean_error or result.test_error),
                    xytext=(5, -10), textcoords="offset points", fontsize=7, color="dimgray")  # fmt: skip
    return values


def _draw_anchors(ax: Any, anchors: Sequence, cost: str) -> list[float]:
    """The other families' published errors as stars (``src.reporting.anchors``); returns their values."""
    values = []
    for result, note in anchors:
        x = getattr(result, cost)
        ax.scatter([x], [result.test_error], marker="*", s=60, color="black", zorder=4,
                   label=f"{result.label}: {result.citation}" + (f" — {note}" if note else ""))  # fmt: skip
        ax.annotate(result.label, (x, result.test_error), xytext=(5, -10), textcoords="offset points",
                    fontsize=7, color="dimgray")  # fmt: skip
        values.append(result.test_error)
    return values


def plot_size_to_target(
    needed: dict[str, dict[str, tuple[float | None, str]]], target: float | None, path: str | Path
) -> Path:
    """Parameters / MACs / training compute each line needs to reach ``target`` accuracy (one panel per size)."""
    kinds = [("params", "parameters"), ("macs", "MACs per sample"), ("compute", "training compute (MACs)")]
    fig, axes = plt.subplots(1, 3, figsize=(13, max(4.0, 0.5 * len(needed) + 2.0)), dpi=120, squeeze=False)
    names = sorted(needed)
    for ax, (kind, label) in zip(axes.flat, kinds):
        found = []
        for index, line in enumerate(names):
            value, how = needed[line].get(kind, (None, "no size recorded"))
            if value is None:
                ax.text(0.02, index, how, transform=ax.get_yaxis_transform(), va="center", fontsize=8, color="gray")
                continue
            found.append(value)
            exact = how.startswith("interpolated")
            ax.plot([value], [index], "o" if exact else "<", color="tab:blue" if exact else "tab:gray", markersize=8)
            text = size_text(value) + how.removeprefix("interpolated") if exact else f"≤ {size_text(value)} ({how})"
            ax.annotate(text, (value, index), xytext=(0, 8), textcoords="offset points", fontsize=7, ha="center")
        if found:
            ax.set_xlim(min(found) / 4, max(found) * 4)
        ax.set_ylim(-0.7, len(names) - 0.3)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap on a short log range
        ax.set_xlabel(f"{label} (log)")
        ax.grid(True, axis="x", which="both", alpha=0.3)
    target_text = "no target" if target is None else f"{100 * target:.2f}% test accuracy"
    fig.suptitle(f"Size each line needs to reach {target_text} (interpolated in log size between tested sizes)")
    if not names:
        axes.flat[0].text(0.5, 0.5, "no lines", ha="center", va="center", transform=axes.flat[0].transAxes)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def mean_curve(curves: list[Curve]) -> Curve:
    """The mean over seeds on the longest seed's steps (each seed interpolated within its own range)."""
    longest = max(curves, key=lambda curve: len(curve[0]))
    steps = np.asarray(longest[0], dtype=float)
    stack = np.full((len(curves), len(steps)), np.nan)
    for index, (curve_steps, curve_values) in enumerate(curves):
        xs, ys = np.asarray(curve_steps, dtype=float), np.asarray(curve_values, dtype=float)
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
                if split == "val" and len(seeds) > 1:  # each seed thin behind the mean: the spread is visible
                    for seed_steps, seed_acc in seeds:
                        ax.plot(seed_steps, [100.0 * (1.0 - value) for value in seed_acc], "-", alpha=0.35,
                                color=colors[row.line], linewidth=0.7)  # fmt: skip
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
    title = (
        "Training (dashed) and validation (solid) error, mean over seeds; "
        "thin: each seed's validation error (the form of He et al. Fig. 6)"
    )
    fig.suptitle(textwrap.fill(title, width=int(12 * fig.get_figwidth())))  # one narrow panel: wrapped, not clipped
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
