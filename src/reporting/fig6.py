"""He et al.'s Fig. 6, per family: training and validation error against iterations, every depth overlaid.

Why beside ``training_curves.png`` (one panel per depth, residual against plain): the paper's figure asks
another question -- within one family, does the deeper net train (and validate) worse or better? -- so
here each family (``line``: resnet, plain, ...) gets a row of two panels, the running training error
(augmented, train-mode: the dashed curves of the paper) and the validation error, one colour per depth
from shallow (light) to deep (dark), the mean over seeds as a line and the seeds' range as a band.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
import numpy as np  # noqa: E402

from src.reporting.figures import mean_curve  # noqa: E402
from src.reporting.study_rows import Row, lines_of  # noqa: E402

FIG6_FILE = "fig6_by_family.png"
from src.reporting.figures import Curve  # noqa: E402


def _band(seeds: list[Curve], steps: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The lowest and highest error over the seeds at ``steps`` (each seed interpolated within its range)."""
    stack = np.full((len(seeds), len(steps)), np.nan)
    grid = np.asarray(steps, dtype=float)
    for index, (xs, ys) in enumerate(seeds):
        x, y = np.asarray(xs, dtype=float), 100.0 * (1.0 - np.asarray(ys, dtype=float))
        inside = (grid >= x.min()) & (grid <= x.max())
        stack[index, inside] = np.interp(grid[inside], x, y)
    with np.errstate(all="ignore"):
        return np.nanmin(stack, axis=0), np.nanmax(stack, axis=0)


def plot_fig6(rows: list[Row], curves: dict[str, dict[str, list[Curve]]], path: str | Path) -> Path:
    """One row per family (training error | validation error), depths overlaid, mean and seed band."""
    families = {
        line: members for line, members in lines_of(rows).items() if any(curves.get(r.variant) for r in members)
    }
    fig, axes = plt.subplots(max(len(families), 1), 2, figsize=(11, 3.8 * max(len(families), 1)), dpi=120,
                             squeeze=False)  # fmt: skip
    for (line, members), panels in zip(sorted(families.items()), axes):
        shades = plt.get_cmap("Reds" if members[0].kind == "plain" else "Blues")
        ordered = sorted(members, key=lambda row: row.depth)
        for index, row in enumerate(ordered):
            color = shades(0.4 + 0.6 * index / max(len(ordered) - 1, 1))
            for ax, split in zip(panels, ("train", "val")):
                seeds = [c for c in curves.get(row.variant, {}).get(split, []) if len(c[0])]
                if not seeds:
                    continue
                steps, acc = mean_curve(seeds)
                ax.plot(steps, [100.0 * (1.0 - a) for a in acc], color=color, linewidth=1.6,
                        label=f"{row.variant} (n={len(seeds)})")  # fmt: skip
                if len(seeds) > 1:
                    low, high = _band(seeds, steps)
                    ax.fill_between(steps, low, high, color=color, alpha=0.18, linewidth=0)
        for ax, what in zip(panels, ("training error (running, augmented)", "validation error")):
            ax.set_title(f"{line}: {what}")
            ax.set_xlabel("iterations")
            ax.set_ylabel("error (%)")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
    if not families:
        axes[0][0].text(0.5, 0.5, "no training curves logged", ha="center", va="center")
    fig.suptitle("Per family, the form of He et al. Fig. 6: mean over seeds, band = the seeds' range")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
