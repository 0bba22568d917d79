"""Shapes compared: where the parameters went (width or depth), for the report of a study over shape.

* **Width x depth** (``test_error_width_depth.png``): per *family* -- the variants that differ only in
  width and depth (``resnet8``, ``resnet20_4``, ... with every other setting equal) -- a grid of mean test
  error, one cell per (depth, width) with its n; drawn only for a family whose finished variants span at
  least two widths and two depths (a depth ladder at one width has nothing to add to the line figures).
* **Iso-parameter pairs** (``report_iso_params.csv`` and a report.md section): two finished variants of
  *different shape* (depth, width or family; a residual net and its plain twin of the same shape are the
  report's residual/plain comparison, not this one), with every other setting equal, whose parameter counts
  differ by at most ``tolerance`` of the larger one. Which has the lower mean test error, the difference
  with its 95% interval and Welch test (``statistics.compare``; never paired by seed: two networks of
  different shape share no random draws), n per side; in words by the project's rule (a direction only with
  n >= 3 per side and p < 0.05).

Why the larger count as the base: "within 10%" then means the smaller net has at least 90% of the
larger's parameters, the same reading whichever of the two is named first.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from src.models import arch_spec
from src.models.names import ArchSpec
from src.reporting.statistics import Comparison, compare
from src.reporting.study_rows import Row

HEATMAP = "test_error_width_depth.png"
ISO_CSV = "report_iso_params.csv"
DEFAULT_ISO_TOLERANCE = 0.10
ISO_COLUMNS = [
    "smaller", "larger", "params_smaller", "params_larger", "params_rel_difference", "n_smaller", "n_larger",
    "test_error_smaller", "test_error_larger", "difference_error_pp", "difference_ci_low_pp",
    "difference_ci_high_pp", "test", "statistic", "p_value", "effect_size", "effect_size_name", "lower_mean_error",
    "note",
]  # fmt: skip


def arch_spec_of(row: Row) -> ArchSpec | None:
    try:
        return arch_spec(row.arch)
    except ValueError:  # a plugged-in net (model.net_class): no depth or width to read
        return None


def family_label(row: Row) -> str | None:
    """The row's line without its width (``resnet_2 lr=0.1`` -> ``resnet lr=0.1``): its variants differ in shape."""
    spec = arch_spec_of(row)
    if spec is None:
        return None
    stem = spec.line
    return row.line.replace(stem, re.sub(r"_\d+(?=$|-)", "", stem), 1)


# ------------------------------------------------------------------------------------------------ width x depth


def width_depth_grids(rows: list[Row]) -> list[dict]:
    """Per family spanning >= 2 widths and >= 2 depths: ``{"family", "depths", "widths", "cells"}``.

    Each cell: ``depth``, ``width``, ``variant``, ``params``, ``error_mean`` (%) and ``n`` (finished seeds).
    """
    families: dict[str, dict[tuple[int, int], Row]] = {}
    for row in rows:
        spec, label = arch_spec_of(row), family_label(row)
        if spec is None or label is None or row.test_error_mean is None:
            continue
        families.setdefault(label, {}).setdefault((spec.depth, spec.width), row)
    grids = []
    for label in sorted(families):
        cells = families[label]
        depths, widths = sorted({d for d, _ in cells}), sorted({w for _, w in cells})
        if len(depths) < 2 or len(widths) < 2:
            continue
        grids.append(
            {
                "family": label,
                "depths": depths,
                "widths": widths,
                "cells": [
                    {
                        "depth": d,
                        "width": w,
                        "variant": row.variant,
                        "params": row.params,
                        "error_mean": row.test_error_mean,
                        "n": row.n,
                    }
                    for (d, w), row in sorted(cells.items())
                ],  # fmt: skip
            }
        )
    return grids


def plot_width_depth(grids: list[dict], path: str | Path) -> Path:
    """One panel per family: mean test error (%) by depth (rows) and width (columns), each cell with its n."""
    from matplotlib.figure import Figure  # no pyplot: the reporting convention (no global figure state)

    fig = Figure(figsize=(max(5.5, 4.5 * len(grids)), 3.8), dpi=120)
    axes = fig.subplots(1, len(grids), squeeze=False)[0]
    for ax, grid in zip(axes, grids):
        depths, widths = grid["depths"], grid["widths"]
        errors = np.full((len(depths), len(widths)), np.nan)
        for cell in grid["cells"]:
            errors[depths.index(cell["depth"]), widths.index(cell["width"])] = cell["error_mean"]
        image = ax.imshow(errors, cmap="viridis_r", origin="lower", aspect="auto")
        fig.colorbar(image, ax=ax, label="mean test error (%)")
        middle = np.nanmean(errors)
        for cell in grid["cells"]:
            i, j = depths.index(cell["depth"]), widths.index(cell["width"])
            color = "white" if cell["error_mean"] > middle else "black"
            ax.text(j, i, f"{cell['error_mean']:.2f}%\nn={cell['n']}", ha="center", va="center", fontsize=8,
                    color=color)  # fmt: skip
        ax.set_xticks(range(len(widths)), [f"k={w}" for w in widths])
        ax.set_yticks(range(len(depths)), [str(d) for d in depths])
        ax.set_xlabel("width multiplier")
        ax.set_ylabel("depth")
        ax.set_title(grid["family"], fontsize=9)
    fig.suptitle("Mean test error by width and depth (n: seeds; blank: not run)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def heatmap_markdown(grids: list[dict]) -> list[str]:
    """The width x depth section: the figure and, per family, its numbers as a table (empty: no grid)."""
    if not grids:
        return []
    lines = ["## Width against depth", "", f"![test error by width and depth]({HEATMAP})", ""]
    for grid in grids:
        by_cell = {(cell["depth"], cell["width"]): cell for cell in grid["cells"]}
        lines += [
            f"{grid['family']}: mean test error (%), n finished seeds.",
            "",
            "| Depth | " + " | ".join(f"k = {w}" for w in grid["widths"]) + " |",
            "|---:|" + "---:|" * len(grid["widths"]),
        ]
        for depth in grid["depths"]:
            cells = [by_cell.get((depth, w)) for w in grid["widths"]]
            text = ["—" if c is None else f"{c['error_mean']:.2f} (n = {c['n']})" for c in cells]
            lines.append(f"| {depth} | " + " | ".join(text) + " |")
        lines.append("")
    return lines


# ------------------------------------------------------------------------------------------------ iso-parameter


@dataclass
class IsoPair:
    """Two variants of different shape and (nearly) equal size: ``smaller`` has no more parameters than ``larger``."""

    smaller: Row
    larger: Row
    comparison: Comparison  # smaller minus larger, in points of test error, with its 95% interval

    @property
    def ci(self) -> tuple[float, float] | None:
        return self.comparison.ci

    @property
    def rel_difference(self) -> float:
        small, large = cast(int, self.smaller.params), cast(int, self.larger.params)  # iso_pairs keeps sized rows
        return (large - small) / large

    @property
    def lower(self) -> Row | None:
        """The variant with the lower mean test error (None on a tie)."""
        difference = self.comparison.difference
        if difference is None or difference == 0:
            return None
        return self.smaller if difference < 0 else self.larger


def shape_of(spec: ArchSpec) -> tuple:
    return spec.family, spec.block, spec.depth, spec.width


def rest(row: Row, shortcut: bool) -> tuple:
    """The settings besides the net; the shortcut option only where both nets have the choice (``shortcut``)."""
    skip = ("model.arch",) if shortcut else ("model.arch", "model.shortcut")
    return tuple(item for item in row.runs[0].identity if item[0] not in skip)


def iso_pairs(rows: list[Row], tolerance: float = DEFAULT_ISO_TOLERANCE) -> list[IsoPair]:
    """Every pair of finished variants of different shape, other settings equal, params within ``tolerance``."""
    shaped: list[tuple[Row, ArchSpec]] = []
    for row in rows:
        # A pruned net is not a shape (its architecture's count is not its own): the frontier compares it.
        spec = arch_spec_of(row) if row.params and row.test_error_mean is not None and not row.pruned else None
        if spec is not None:
            shaped.append((row, spec))
    pairs = []
    for i, (one, spec_one) in enumerate(shaped):
        for two, spec_two in shaped[i + 1 :]:
            if shape_of(spec_one) == shape_of(spec_two):  # the same shape: twins (residual/plain) or the same net
                continue
            # Another setting differs too: not a comparison of shapes. The shortcut counts only between two residual
            # nets of one family (a plain net has none; a Wide ResNet has B where a CIFAR ResNet defaults to A).
            same_choice = spec_one.residual and spec_two.residual and spec_one.family == spec_two.family
            if rest(one, same_choice) != rest(two, same_choice):
                continue
            smaller, larger = sorted((one, two), key=lambda row: (row.params, row.variant))
            small_params, large_params = cast(int, smaller.params), cast(int, larger.params)  # filtered above
            if large_params - small_params > tolerance * large_params:
                continue
            # Welch: two networks, no shared draws.
            pairs.append(IsoPair(smaller, larger, compare(smaller.test_errors, larger.test_errors)))
    return sorted(pairs, key=lambda pair: (pair.smaller.params, pair.smaller.variant, pair.larger.variant))


def iso_rows(pairs: list[IsoPair]) -> list[dict]:
    """``report_iso_params.csv``'s rows (columns ``ISO_COLUMNS``)."""
    rows = []
    for pair in pairs:
        c = pair.comparison
        rows.append(
            {
                "smaller": pair.smaller.variant,
                "larger": pair.larger.variant,
                "params_smaller": pair.smaller.params,
                "params_larger": pair.larger.params,
                "params_rel_difference": pair.rel_difference,
                "n_smaller": c.n_a,
                "n_larger": c.n_b,
                "test_error_smaller": pair.smaller.test_error_mean,
                "test_error_larger": pair.larger.test_error_mean,
                "difference_error_pp": c.difference,
                "difference_ci_low_pp": pair.ci[0] if pair.ci else None,
                "difference_ci_high_pp": pair.ci[1] if pair.ci else None,
                "test": c.test,
                "statistic": c.statistic,
                "p_value": c.p_value,
                "effect_size": c.effect,
                "effect_size_name": c.effect_name,
                "lower_mean_error": pair.lower.variant if pair.lower else "",
                "note": c.reason,
            }
        )
    return rows


def write_iso_csv(pairs: list[IsoPair], path: str | Path) -> None:
    """The iso-parameter pairs as CSV: the header alone when there are none (the file is always written)."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=ISO_COLUMNS)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in iso_rows(pairs))


def iso_sentence(pair: IsoPair) -> str:
    """One pair in words, by the project's rule: a direction only with n >= 3 on each side and p < 0.05."""
    c = pair.comparison
    names = (
        f"`{pair.smaller.variant}` ({pair.smaller.params:,} params) against `{pair.larger.variant}` "
        f"({pair.larger.params:,})"
    )
    diff = c.difference or 0.0
    n = min(c.n_a, c.n_b)
    ci = f", 95% CI [{pair.ci[0]:+.2f}, {pair.ci[1]:+.2f}]" if pair.ci else ""
    if c.p_value is None:
        return f"{names}: {diff:+.2f} points of test error, not distinguishable with n = {c.n_a}/{c.n_b} ({c.reason})."
    test = f"{c.test} p = {c.p_value:.2g}"
    if n < 3:
        return f"{names}: {diff:+.2f} points of test error{ci} ({test}), not distinguishable with n = {c.n_a}/{c.n_b}."
    if c.p_value < 0.05 and pair.lower is not None:
        return (
            f"{names}: `{pair.lower.variant}` has the lower test error, by {abs(diff):.2f} points{ci} "
            f"({test}, {c.effect_name} = {c.effect:+.2f}, n = {c.n_a}/{c.n_b})."
        )
    return f"{names}: no difference detected in test error ({diff:+.2f} points{ci}, {test}, n = {c.n_a}/{c.n_b})."


def iso_markdown(pairs: list[IsoPair], tolerance: float) -> list[str]:
    """The report.md section (empty when there is no pair): a table, then each pair in words."""
    if not pairs:
        return []
    lines = [
        "## Shapes at matched parameter counts",
        "",
        f"Variants of different shape (depth, width or family) with every other setting equal, whose parameter "
        f"counts differ by at most {100 * tolerance:g}% of the larger (`--iso-tolerance`). Difference: the "
        "smaller net's mean test error minus the larger's, with its 95% t-interval; Welch's t-test, never paired "
        "by seed: two networks share no random draws (`report_iso_params.csv`).",
        "",
        "| Smaller | Larger | Params | n | Test error (%) | Difference (pp) [95% CI] | Test, p | Lower mean error |",
        "|---|---|---:|---|---:|---:|---|---|",
    ]
    for pair in pairs:
        c = pair.comparison
        diff = "—" if c.difference is None else f"{c.difference:+.2f}"
        ci = f" [{pair.ci[0]:+.2f}, {pair.ci[1]:+.2f}]" if pair.ci else ""
        test = c.test if not c.reason else f"{c.test}: {c.reason}"
        p = "—" if c.p_value is None else f"{c.p_value:.3g}"
        lines.append(
            f"| `{pair.smaller.variant}` | `{pair.larger.variant}` "
            f"| {pair.smaller.params:,} / {pair.larger.params:,} ({100 * pair.rel_difference:.1f}%) "
            f"| {c.n_a}/{c.n_b} | {pair.smaller.test_error_mean:.2f} / {pair.larger.test_error_mean:.2f} "
            f"| {diff}{ci} | {test}, p = {p} | {f'`{pair.lower.variant}`' if pair.lower else 'tie'} |"
        )
    lines += ["", *[f"- {iso_sentence(pair)}" for pair in pairs], ""]
    return lines
