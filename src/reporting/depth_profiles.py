"""Depth profiles of the training diagnostics: a per-block number against *relative* depth, over seeds.

``diagnostics.jsonl`` (``src.callbacks.diagnostics``) holds one record per measured step with a
value per block. A profile of one variant is drawn from every finished seed:

1. per seed, each block's value is averaged over a **late window** of training: the measured
   steps at or after ``(1 - window)`` of that seed's last measured step (default ``window=0.25``:
   the last quarter of training), so one noisy step does not decide the picture and the
   early transient (step 0 is measured too) does not enter it;
2. across seeds, the mean per block, with a band: the seeds' min--max (default), or a 95%
   t-interval of the mean (``band="ci95"``, ``scipy.stats.t``; a band only with >= 2 seeds).

The x axis is relative depth by **position within the stage**: block ``p`` (0-based) of the
``n`` blocks of stage ``s`` (0-based) of ``S`` stages sits at ``(s + (p + 0.5) / n) / S``, so stage
boundaries fall at ``1/S, 2/S, ...`` for every depth, and a ResNet-20 and a ResNet-56 (3 and 9
blocks per stage) line up stage by stage. Residual variants are solid lines with circles, plain
ones dashed with squares.

Records written before the scale-free fields existed (``grad_norm``, ``branch_ratio`` and no
``stage``) are skipped for these profiles with a note: their numbers measure tensor size.
The one-step figure the callback draws, and the labels both share, are ``src.callbacks.diagnostics_figure``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.figure import Figure  # no pyplot: no global figure registry, no display, nothing to close

from src.callbacks.diagnostics_figure import LABELS, LOG_SCALE, draw_boundaries

LAYOUT_KEYS = ("stage",)  # what a record needs to be placed on the relative-depth axis
BANDS = ("minmax", "ci95")


def read_diagnostics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``diagnostics.jsonl`` (one per measured step); old ``grad_norm`` reads as ``raw_grad_norm``."""
    with open(path) as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    for record in records:
        if "grad_norm" in record and "raw_grad_norm" not in record:
            record["raw_grad_norm"] = record["grad_norm"]
    return records


def relative_depth(stages: Sequence[int]) -> tuple[list[float], list[float]]:
    """Each block's relative depth by position within its stage, and the stage boundaries (see the module doc)."""
    order: list[int] = []  # the stages in depth order, each once
    for stage in stages:
        if not order or order[-1] != stage:
            order.append(stage)
    sizes = {stage: list(stages).count(stage) for stage in order}
    count = len(order)
    positions: dict[int, int] = {}
    depths = []
    for stage in stages:
        p = positions.get(stage, 0)
        positions[stage] = p + 1
        depths.append((order.index(stage) + (p + 0.5) / sizes[stage]) / count)
    return depths, [s / count for s in range(1, count)]


@dataclass
class DepthProfile:
    """One variant's profile: what the figure plots (``nan`` where no seed has a value for a block)."""

    label: str
    residual: bool | None  # None: a network mixing residual and plain blocks
    x: list[float]  # relative depth of each block
    mean: list[float]  # over seeds, of each seed's late-window mean
    low: list[float]  # band: min over seeds, or the 95% interval's lower end
    high: list[float]
    seeds: int
    first_step: int  # the window's earliest measured step over the seeds
    last_step: int
    stage_boundaries: list[float]


def _window_mean(records: list[dict[str, Any]], key: str, window: float) -> tuple[list[float], int, int]:
    last = records[-1]["step"]
    late = [r for r in records if r["step"] >= (1 - window) * last]
    means = []
    for index in range(len(late[0][key])):
        seen = [r[key][index] for r in late if r[key][index] is not None]
        means.append(sum(seen) / len(seen) if seen else math.nan)
    return means, late[0]["step"], last


def _band(values: list[float], band: str) -> tuple[float, float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan, math.nan
    mean = sum(values) / len(values)
    if band == "minmax" or len(values) < 2:
        return mean, min(values), max(values)
    from scipy import stats

    low, high = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
    return mean, float(low), float(high)


def depth_profiles(
    runs: Mapping[str, str | os.PathLike | Sequence[str | os.PathLike]],
    key: str,
    window: float = 0.25,
    band: str = "minmax",
) -> tuple[list[DepthProfile], list[str]]:
    """The profiles of ``key`` for several variants (label -> one ``diagnostics.jsonl`` or one per seed).

    Returns the profiles and notes on what was skipped (a file without ``key`` or without the block
    layout, e.g. written before the scale-free fields existed; seeds whose block counts disagree).
    """
    if not 0 < window <= 1:
        raise ValueError(f"window must be a fraction of training in (0, 1], got {window!r}")
    if band not in BANDS:
        raise ValueError(f"band must be one of {BANDS}, got {band!r}")
    profiles, notes = [], []
    for label, files in runs.items():
        files = [files] if isinstance(files, (str, os.PathLike)) else list(files)
        seeds: list[list[float]] = []
        layout: dict[str, Any] | None = None
        first, last = [], []
        for file in files:
            records = [r for r in read_diagnostics(file) if r.get(key) is not None]
            if not records or any(k not in records[-1] for k in LAYOUT_KEYS):
                if any("grad_norm" in r or "branch_ratio" in r for r in read_diagnostics(file)):
                    note = f"{label}: skipped {file}: an old diagnostics.jsonl (size-dependent fields only)"
                else:
                    note = f"{label}: skipped {file} for {key}: no {key!r} records with the block layout"
                notes.append(note)
                continue
            if layout is not None and records[-1]["stage"] != layout["stage"]:
                notes.append(f"{label}: skipped {file} for {key}: its blocks differ from the variant's other seeds")
                continue
            layout = layout or records[-1]
            means, start, end = _window_mean(records, key, window)
            seeds.append(means)
            first.append(start)
            last.append(end)
        if layout is None:
            continue
        x, boundaries = relative_depth(layout["stage"])
        columns = [_band([seed[i] for seed in seeds], band) for i in range(len(x))]
        residual = layout.get("residual") or []
        kind = True if residual and all(residual) else False if residual and not any(residual) else None
        profiles.append(
            DepthProfile(
                label=label,
                residual=kind,
                x=x,
                mean=[c[0] for c in columns],
                low=[c[1] for c in columns],
                high=[c[2] for c in columns],
                seeds=len(seeds),
                first_step=min(first),
                last_step=max(last),
                stage_boundaries=boundaries,
            )
        )
    return profiles, notes


def _steps(profile: DepthProfile) -> str:
    if profile.first_step == profile.last_step:
        return f"step {profile.last_step}"
    return f"steps {profile.first_step}–{profile.last_step}"


def plot_depth_profiles(
    runs: Mapping[str, str | os.PathLike | Sequence[str | os.PathLike]],
    path: str | os.PathLike,
    key: str = "grad_rms",
    window: float = 0.25,
    band: str = "minmax",
) -> Figure:
    """``key`` against relative depth for several variants on one axis; saves the figure to ``path``, returns it.

    ``runs`` maps a label to a ``diagnostics.jsonl`` or to one per seed (see ``depth_profiles``).
    Raises ``ValueError`` when no file has ``key`` with the block layout.
    """
    profiles, notes = depth_profiles(runs, key, window, band)
    if not profiles:
        raise ValueError(f"no diagnostics.jsonl has {key!r} with its block layout: " + "; ".join(notes))
    return draw_depth_profiles(profiles, path, key, window, band)


def draw_depth_profiles(
    profiles: Sequence[DepthProfile], path: str | os.PathLike, key: str, window: float = 0.25, band: str = "minmax"
) -> Figure:
    """Draw what ``depth_profiles`` returned (``window`` and ``band`` only label the figure)."""
    figure = Figure(figsize=(7, 4.2))
    axis = figure.subplots()
    band_name = "min–max" if band == "minmax" else "95% CI"
    for profile in profiles:
        style: dict[str, Any] = (
            {"linestyle": "--", "marker": "s"} if profile.residual is False else {"linestyle": "-", "marker": "o"}
        )
        kind = {True: "residual", False: "plain"}.get(profile.residual, "mixed")  # type: ignore[arg-type]
        (line,) = axis.plot(
            profile.x,
            profile.mean,
            markersize=3,
            label=f"{profile.label} ({kind}, n={profile.seeds}, {_steps(profile)})",
            **style,
        )
        if profile.seeds > 1:
            axis.fill_between(profile.x, profile.low, profile.high, color=line.get_color(), alpha=0.2, linewidth=0)
    draw_boundaries(axis, [b for profile in profiles for b in profile.stage_boundaries])
    axis.set_xlim(0, 1)
    axis.set_xlabel("relative depth (position within stage; dotted: stage boundaries)")
    axis.set_ylabel(LABELS.get(key, key))
    if key in LOG_SCALE and all(v > 0 for p in profiles for v in p.low + p.mean if not math.isnan(v)):
        axis.set_yscale("log")
    axis.set_title(
        f"per seed: mean over measured steps ≥ {1 - window:.0%} of its last; curve: mean over seeds; "
        f"band: {band_name} over seeds",
        fontsize=8,
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    return figure
