"""The one-step depth figure ``TrainingDiagnostics`` logs to TensorBoard, and the quantity labels it shares with
the report's depth profiles (``src.reporting.depth_profiles``, which draws the same quantities over seeds).

Here, beside the callback, because a training callback must not import report code; matplotlib only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure  # no pyplot: no global figure registry, no display, nothing to close
from matplotlib.ticker import MaxNLocator

LABELS = {
    "grad_rms": "RMS gradient per weight, ||g|| / sqrt(n)",
    "grad_to_weight": "||g|| / ||w|| (branch conv weights)",
    "branch_to_shortcut": "||F(x)|| / ||s(x)|| (plain: ||F(x)|| / ||x||)",
    "raw_grad_norm": "raw gradient norm ||g|| (grows with size)",
}
LOG_SCALE = ("grad_rms", "grad_to_weight", "raw_grad_norm")


def draw_boundaries(axis: Any, boundaries: Sequence[float]) -> None:
    for boundary in sorted(set(boundaries)):
        axis.axvline(boundary, color="grey", linestyle=":", linewidth=1)


def depth_profile_figure(
    values: Mapping[str, Sequence[float | None]], title: str = "", stage_starts: Sequence[int] = ()
) -> Figure:
    """One step of one run: a panel per quantity, value against block index, stage starts marked."""
    keys = [key for key in values if values[key]]
    figure = Figure(figsize=(4.5 * max(len(keys), 1), 3.2))
    axes = figure.subplots(1, max(len(keys), 1), squeeze=False)
    for axis, key in zip(axes[0], keys):
        points = [(i, v) for i, v in enumerate(values[key]) if v is not None]
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3)
        draw_boundaries(axis, [start - 0.5 for start in stage_starts if start > 0])
        axis.set_xlabel("block index (input → output)")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(LABELS.get(key, key), fontsize=8)
        if key in LOG_SCALE and points and all(p[1] > 0 for p in points):
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure
