"""``frontier.png``: how a study's nets spend parameters and training compute, drawn (``src.reporting.frontier``
says when a study has a frontier and what its pairs are).

Two panels, test error against parameters and against training compute (a pruned net's includes its parent's
training): one series per way of spending -- each line of depths at one width (deeper; labels: depth), dashed grey
segments joining one depth's widths (wider), triangles for each parent's pruned nets (up: BN re-estimated only,
down: fine-tuned; labels: parameters kept) -- every seed a point, the mean with its 95% t-interval, circles on the
Pareto frontier.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from src.reporting import shapes  # noqa: E402
from src.reporting.figures import (  # noqa: E402
    COSTS,
    draw_frontier,
    draw_lines,
    line_colors,
    line_nudges,
    style_error_axes,
)
from src.reporting.study_rows import Row  # noqa: E402

FIGURE = "frontier.png"


def _wider_segments(tested: list[Row]) -> list[list[Row]]:
    """One family's variants at one depth (and other settings equal), two or more widths, by width."""
    groups: dict[tuple, list[Row]] = {}
    for row in tested:
        spec = shapes.arch_spec_of(row)
        if spec is None or row.pruned:
            continue
        key = (spec.family, spec.block, spec.depth, spec.residual, shapes.rest(row, shortcut=False))
        groups.setdefault(key, []).append(row)
    return [sorted(group, key=lambda row: row.runs[0].width) for group in groups.values() if len(group) > 1]


def plot_frontier(rows: list[Row], path: str | Path) -> Path:
    """``frontier.png``: the two panels of the module docstring; returns the file."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), dpi=120)
    colors = line_colors(rows)
    for ax, cost in zip(axes, ("params", "compute")):
        label_x, row_cost, run_cost = COSTS[cost]
        tested = [row for row in rows if row.test_error_mean is not None and row_cost(row)]
        true_points, drawn, values = draw_lines(ax, tested, colors, row_cost, run_cost)
        _draw_wider(ax, _wider_segments(tested), row_cost, line_nudges(sorted({row.line for row in tested})))
        if true_points:
            draw_frontier(ax, true_points, drawn)
        style_error_axes(ax, values, label_x, f"Test error vs {label_x}")
        if not tested:
            ax.text(0.5, 0.5, "no tested runs yet", transform=ax.transAxes, ha="center", va="center")
    if any(ax.get_legend_handles_labels()[0] for ax in axes):
        axes[0].legend(fontsize=7)
    pruned = ", triangles = pruned (labels: parameters kept)" if any(row.pruned for row in rows) else ""
    fig.suptitle(
        "How to spend parameters and training compute: lines = deeper at one width (labels: depth), dashed = wider "
        f"at one depth{pruned};\nmean with 95% t-interval, small points: single seeds",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def _draw_wider(ax: Any, segments: list[list[Row]], row_cost: Callable, nudges: dict[str, float]) -> None:
    for i, segment in enumerate(segments):
        xs = [row_cost(row) * nudges.get(row.line, 1.0) for row in segment]
        ys = [row.test_error_mean for row in segment]
        ax.plot(xs, ys, color="gray", linestyle="--", linewidth=1, zorder=1,
                label="wider at one depth" if i == 0 else None)  # fmt: skip
