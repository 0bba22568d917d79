"""Block lesions across seeds: what ``python -m src.lesion`` measured on each finished run, summarized per variant.

Veit et al. (2016) found that removing one block of a trained ResNet costs little (the downsampling
blocks apart) and that accuracy falls smoothly as more blocks are removed, while a plain net breaks.
One seed's lesion is one measurement of that, so the summary is over seeds: each seed's number first
(its mean single-block drop, its mean accuracy over the random draws of ``k`` blocks), then the mean
over seeds with a 95% t-interval -- never the draws pooled as if they were independent nets.

Reads ``<run>/lesion/lesion.csv``, ``lesion_random_summary.csv`` and ``lesion.json`` (how it was
measured; older lesions lack it) of the finished runs; a second lesion of the same run
(``lesion-1.*``) is not read. Drops and accuracies are in percentage points.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global figure registry, no display, nothing to close

from src.reporting.records import RunRecord
from src.reporting.statistics import Summary, summarize

LESION_FOLDER = "lesion"
FIGURE = "lesions_across_seeds.png"
CSV_FILE = "report_lesions.csv"
NO_SEEDS = Summary(0, None, None, None, None)  # a measure no seed of the variant has


@dataclass
class SeedLesions:
    """One seed's lesion of one variant (accuracies as fractions, as ``python -m src.lesion`` writes them)."""

    seed: int
    baseline: float
    single: list[dict[str, Any]]  # one row per block: block_index, removed, downsampling, acc_drop (None: kept)
    random: dict[int, float]  # k -> mean accuracy over the draws
    settings: dict[str, Any] = field(default_factory=dict)  # lesion.json; empty for older lesions


def _float(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def read_seed_lesions(run: RunRecord) -> SeedLesions | None:
    """The run's lesion, or None when it has none (or is not finished)."""
    folder = Path(run.run_dir) / LESION_FOLDER
    if run.status != "finished" or run.seed is None or not (folder / "lesion.csv").is_file():
        return None
    with open(folder / "lesion.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    intact = next((row for row in rows if row["removed"] == "none"), None)
    if intact is None or _float(intact["acc"]) is None:
        return None
    single = [
        {
            "block_index": int(row["block_index"]),
            "removed": row["removed"],
            "downsampling": row["downsampling"] == "True",
            "acc_drop": _float(row["acc_drop"]),
        }
        for row in rows
        if row["removed"] != "none"
    ]
    random: dict[int, float] = {}
    summary = folder / "lesion_random_summary.csv"
    if summary.is_file():
        with open(summary, newline="") as handle:
            random = {int(row["k"]): float(row["acc_mean"]) for row in csv.DictReader(handle)}
    settings_file = folder / "lesion.json"
    settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    return SeedLesions(run.seed, float(intact["acc"]), single, random, settings)


SPLIT_NAMES = {"val": "validation", "test": "test"}


def measured_as(settings: dict[str, Any]) -> str:
    """What makes two seeds' lesions comparable, in words: the split, whether BN was re-estimated after each
    removal and whether random draws could pick a downsampling block (each changes every number of a seed)."""
    if not settings:
        return "settings not recorded"
    split = str(settings.get("split"))
    words = [f"{SPLIT_NAMES.get(split, split)} split"]
    if settings.get("bn_reestimate"):
        words.append("BN re-estimated")
    if settings.get("include_downsampling"):
        words.append("downsampling blocks drawn")
    return ", ".join(words)


def lesions_by_variant(records: list[RunRecord]) -> dict[str, list[SeedLesions]]:
    """``{variant: [SeedLesions by seed]}`` for the variants with at least one lesioned seed.

    Seeds are summarized together only when they were measured the same way (``measured_as``): a variant whose
    seeds were lesioned in different ways is split into one entry per way, ``"<variant> (<way>)"``, so that no mean
    pools validation with test accuracies, or draws with downsampling blocks with draws without."""
    found: dict[str, dict[str, list[SeedLesions]]] = {}
    for run in records:
        seed = read_seed_lesions(run)
        if seed is not None:
            found.setdefault(run.variant, {}).setdefault(measured_as(seed.settings), []).append(seed)
    grouped: dict[str, list[SeedLesions]] = {}
    for variant, ways in sorted(found.items()):
        for way, seeds in ways.items():
            label = variant if len(ways) == 1 else f"{variant} ({way})"
            grouped[label] = sorted(seeds, key=lambda s: s.seed)
    return grouped


def base_variant(label: str) -> str:
    """The variant a ``lesions_by_variant`` label summarizes (its figure color is the variant's)."""
    return label.split(" (", 1)[0]


def _mean(values: list[float]) -> float:
    """The mean of a non-empty list, summed in order (the committed numbers' last digits depend on it)."""
    return sum(values) / len(values)


def seed_measures(seed: SeedLesions) -> dict[str, float | None]:
    """One seed's numbers (pp): intact accuracy; the mean, worst and median single-block drop (blocks that keep the
    shape) and their mean without the network's first block (one block can carry the mean: ``layer1.0`` of a
    short-trained ResNet-56 cost 14-45 points where the median block costs 2.5); the mean drop of the downsampling
    blocks (None where none could be removed); the accuracy after k random removals."""
    rows = [row for row in seed.single if not row["downsampling"] and row["acc_drop"] is not None]
    kept = [row["acc_drop"] for row in rows]
    first = min((row["block_index"] for row in seed.single), default=None)
    later = [row["acc_drop"] for row in rows if row["block_index"] != first]
    down = [row["acc_drop"] for row in seed.single if row["downsampling"] and row["acc_drop"] is not None]
    measures: dict[str, float | None] = {
        "intact_acc": 100.0 * seed.baseline,
        "single_drop_mean": None if not kept else 100.0 * _mean(kept),
        "single_drop_max": None if not kept else 100.0 * max(kept),
        "single_drop_median": None if not kept else 100.0 * float(np.median(kept)),
        "single_drop_mean_without_first": None if not later else 100.0 * _mean(later),
        "downsampling_drop_mean": None if not down else 100.0 * _mean(down),
    }
    for k, acc in sorted(seed.random.items()):
        measures[f"acc_k{k}"] = 100.0 * acc
    return measures


def measure_summaries(seeds: list[SeedLesions]) -> dict[str, Summary]:
    """Each of ``seed_measures``' numbers over the seeds (mean, sample std, t-interval), in its order."""
    per_seed = [seed_measures(seed) for seed in seeds]
    names = dict.fromkeys(name for measures in per_seed for name in measures)
    return {name: summarize([measures.get(name) for measures in per_seed]) for name in names}


def summary_rows(by_variant: dict[str, list[SeedLesions]]) -> list[dict[str, Any]]:
    """The CSV rows: per variant and measure, n seeds, mean, sample std and the 95% t-interval (pp)."""
    rows = []
    for variant, seeds in by_variant.items():
        for name, summary in measure_summaries(seeds).items():
            if summary.n == 0:
                continue
            k = name[len("acc_k") :] if name.startswith("acc_k") else ""
            rows.append(
                {
                    "variant": variant,
                    "measure": "acc_random_k" if k else name,
                    "k": k,
                    "n_seeds": summary.n,
                    "mean": summary.mean,
                    "std": summary.std,
                    "ci_low": summary.ci_low,
                    "ci_high": summary.ci_high,
                    "seeds": " ".join(str(seed.seed) for seed in seeds),
                }
            )
    return rows


def _cell(summary: Summary) -> str:
    if summary.n == 0 or summary.mean is None:
        return "—"
    if summary.ci_low is None:
        return f"{summary.mean:.2f}"
    return f"{summary.mean:.2f} [{summary.ci_low:.2f}, {summary.ci_high:.2f}]"


def _how_measured(by_variant: dict[str, list[SeedLesions]]) -> list[str]:
    """One line per distinct way the lesions were measured (split, images, draws), from lesion.json."""
    ways: dict[str, list[str]] = {}
    for variant, seeds in by_variant.items():
        for seed in seeds:
            s = seed.settings
            if not s:
                text = "settings not recorded (a lesion written before lesion.json)"
            else:
                images = f"{s['samples']:,} {s['split']} images" if s.get("samples") else f"the {s['split']} split"
                bn = ", BN re-estimated" if s.get("bn_reestimate") else ""
                down = ", downsampling blocks drawn too" if s.get("include_downsampling") else ""
                text = f"on {images}, k = {s['k']} × {s['trials']} seeded draws (draw seed {s['seed']}){bn}{down}"
            ways.setdefault(text, []).append(f"{base_variant(variant)}/seed{seed.seed}")
    return [f"- {text}: {', '.join(names)}" for text, names in ways.items()]


def lesion_markdown(by_variant: dict[str, list[SeedLesions]]) -> list[str]:
    """The report's table of lesions across seeds, the words that define it, and how each was measured."""
    if not by_variant:
        return []
    ks = sorted({k for seeds in by_variant.values() for seed in seeds for k in seed.random})
    header = ["Variant", "Seeds", "Intact acc (%)", "One block: mean drop (pp)", "One block: worst drop (pp)",
              "One block: median drop (pp)", "One block: mean drop without the first (pp)",
              "Downsampling block: drop (pp)", *[f"acc, {k} removed (%)" for k in ks]]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant, seeds in by_variant.items():
        summaries = measure_summaries(seeds)
        names = ["intact_acc", "single_drop_mean", "single_drop_max", "single_drop_median",
                 "single_drop_mean_without_first", "downsampling_drop_mean"]  # fmt: skip
        names += [f"acc_k{k}" for k in ks]
        cells = [f"`{variant}`", ", ".join(str(seed.seed) for seed in seeds)]
        cells += [_cell(summaries.get(name, NO_SEEDS)) for name in names]
        lines.append("| " + " | ".join(cells) + " |")
    commands = [seed.settings["command"] for seeds in by_variant.values() for seed in seeds if seed.settings]
    return [
        "### Block lesions across seeds",
        "",
        *lines,
        "",
        "Each seed's lesion (`python -m src.lesion`) is one measurement: per seed, the mean, worst and median "
        "accuracy drop over the blocks that keep their input's shape (residual: the branch removed, the shortcut "
        "kept; plain: the block replaced by the identity) and their mean without the network's first block (one "
        "block can carry the mean), the drop when a downsampling block is removed (residual "
        "only: a plain downsampling block cannot be removed), and the mean accuracy over the random draws of k "
        "blocks (downsampling blocks never drawn unless said below). Seeds are pooled only when measured the "
        "same way (split, BN re-estimation, draws). Cells: mean over seeds and its 95% t-interval (a single "
        "number with one seed: no interval, no claim). Drops are against the same images' intact accuracy.",
        "",
        *_how_measured(by_variant),
        "",
        "Regenerate each seed's lesion with its command (from its `lesion.json`):",
        "",
        *[f"- `{command}`" for command in commands],
        "",
        f"![block lesions across seeds]({FIGURE})",
        "",
    ]


def lesion_figure_data(by_variant: dict[str, list[SeedLesions]]) -> dict[str, Any]:
    """What the figure draws: per variant and seed, the intact accuracy, accuracy against k, drop per block."""
    return {
        variant: [
            {
                "seed": seed.seed,
                "intact_acc": seed.baseline,
                "random": [[k, acc] for k, acc in sorted(seed.random.items())],
                "single": [[row["block_index"], row["acc_drop"]] for row in seed.single],
            }
            for seed in seeds
        ]
        for variant, seeds in by_variant.items()
    }


def plot_lesions(
    by_variant: dict[str, list[SeedLesions]], path: str | Path, colors: dict[str, str] | None = None
) -> Path:
    """Draw ``lesion_figure`` into ``path``."""
    figure = lesion_figure(by_variant, colors)
    figure.savefig(path, dpi=120)
    return Path(path)


def accuracy_label(by_variant: dict[str, list[SeedLesions]]) -> str:
    """The accuracy axis, naming the split the lesions were measured on (the depth study lesions on validation)."""
    splits = {str(seed.settings.get("split")) for seeds in by_variant.values() for seed in seeds}
    if len(splits) == 1 and "None" not in splits:
        split = splits.pop()
        return f"{SPLIT_NAMES.get(split, split)} accuracy (%)"
    return "accuracy (%): split per curve in the report"


def lesion_figure(by_variant: dict[str, list[SeedLesions]], colors: dict[str, str] | None = None) -> Figure:
    """Left: accuracy against the number of blocks removed (k = 0: intact), each seed thin, the seeds' mean bold.
    Right: the accuracy drop when each single block is removed, mean over seeds with the seeds' min-max; a block
    that cannot be removed (it changes the shape, and has no shortcut to stand in) leaves a gap in its line.
    ``colors``: per variant, as the report's other figures draw it (``figures.variant_colors``)."""
    figure = Figure(figsize=(12, 4.5))
    left, right = figure.subplots(1, 2)
    for index, (variant, seeds) in enumerate(by_variant.items()):
        color = (colors or {}).get(variant) or (colors or {}).get(base_variant(variant), f"C{index}")
        curves = [[(0, seed.baseline)] + sorted(seed.random.items()) for seed in seeds]
        for curve in curves:
            left.plot([k for k, _ in curve], [100 * a for _, a in curve], color=color, alpha=0.35, lw=1)
        ks = sorted({k for curve in curves for k, _ in curve})
        means = [_mean([100 * a for curve in curves for kk, a in curve if kk == k]) for k in ks]
        left.plot(
            ks,
            means,
            color=color,
            lw=2.5,
            marker="o",
            label=f"{variant} (n = {len(seeds)} seed{'s' if len(seeds) != 1 else ''})",
        )
        blocks = sorted({row["block_index"] for seed in seeds for row in seed.single})
        drops = {
            b: [
                100 * row["acc_drop"]
                for seed in seeds
                for row in seed.single
                if row["block_index"] == b and row["acc_drop"] is not None
            ]  # fmt: skip
            for b in blocks
        }
        gap = float("nan")  # matplotlib breaks a line at NaN: no segment across a block that was not removed
        right.plot(blocks, [_mean(drops[b]) if drops[b] else gap for b in blocks], color=color, marker=".",
                   label=variant)  # fmt: skip
        if len(seeds) > 1:
            right.fill_between(blocks, [min(drops[b]) if drops[b] else gap for b in blocks],
                               [max(drops[b]) if drops[b] else gap for b in blocks],
                               where=[bool(drops[b]) for b in blocks], color=color, alpha=0.2)  # fmt: skip
    left.set(xlabel="blocks removed at random (k)", ylabel=accuracy_label(by_variant), title="Random lesions")
    right.set(xlabel="block removed (index, input to output; a gap: not removable)", ylabel="accuracy drop (pp)",
              title="Single-block lesions (band: seeds' min-max)")  # fmt: skip
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    return figure
