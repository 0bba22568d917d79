"""``report.md``: the table, the summary that states only what the numbers support, the line / comparison /
depth tables (also written as CSV rows), budget, provenance, and the runs not in the numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from src.reporting.fig6 import FIG6_FILE
from src.reporting.figure_data import FIGURES, sizes_to_target
from src.reporting.markdown_tables import comparison_table, depth_table, line_table
from src.reporting.paper import CITATION
from src.reporting.protocol import protocol_line
from src.reporting.records import RunRecord
from src.reporting.statistics import Comparison, PowerLaw, trend_text
from src.reporting.study_rows import (
    Pair,
    Row,
    depth_pairs,
    lines_of,
    majority_commit,
    power_laws,
    study_markdown_table,
    twin_pairs,
)


def paper_overlay(records: list[RunRecord], mode: str) -> tuple[str | None, list[str]]:
    """Whether (and labelled how) He et al.'s Table 6 goes on the figures, and the lines saying why.

    ``auto``: only when some finished residual CIFAR run of width 1 (Table 6's nets; a ``resnet20_2`` is not
    its ResNet-20) followed the paper's protocol (CIFAR-10,
    all 50k training images, the official test split, the final model, 64k steps at batch 128);
    ``force``: always, labelled "different protocol" unless every finished run matches; ``off``: never.
    Returns ``(None, why)`` for no overlay, ``("", why)`` for a matching one, ``("different protocol", why)``.
    """
    finished = [run for run in records if run.status == "finished"]
    residual = [run for run in finished if run.residual and run.family == "cifar" and run.width == 1]
    matching = [run for run in residual if not run.paper_differences]
    differing = sorted({reason for run in finished for reason in run.paper_differences})
    if mode == "off":
        return None, []
    if mode == "auto" and not matching:
        if not finished:
            return None, []
        return None, [
            f"{CITATION} is not overlaid: no finished CIFAR ResNet run follows its protocol "
            f"({'; '.join(differing) or 'no width-1 residual CIFAR run'}). `--paper force` draws it anyway."
        ]
    label = "" if matching and not differing else "different protocol"
    why = [
        f"Black marks: {CITATION}, CIFAR-10 test error of the ResNets with option A shortcuts, trained on all 50k "
        "training images for 64k iterations at batch 128, the final model tested on the 10k test images. "
        "ResNet-110 is drawn at its mean over 5 runs, 6.61 ± 0.16 (std); its best run, 6.43, is a grey cross "
        "and is not a mean. The other depths are single runs."
    ]
    if label:
        why.append(
            f"**Different protocol**: the overlay was forced; these runs differ from the paper's "
            f"({'; '.join(differing) or 'plain, widened or non-CIFAR nets only'}), so the distance to the marks is not "
            "a reproduction gap."
        )
    elif matching:
        why.append(f"The runs compared follow the paper's protocol ({len(matching)} finished ResNet runs).")
    return label, why


def budget_lines(records: list[RunRecord]) -> list[str]:
    """One line per distinct protocol (data, splits, test, optimizer, schedule, precision, length) with its count."""
    counts: dict[str, list[str]] = {}
    for run in records:
        if run.status in ("finished", "diverged") and run.context:
            counts.setdefault(protocol_line(run.context), []).append(run.variant)
    return [f"- {text} ({len(names)} runs: {', '.join(sorted(set(names)))})" for text, names in counts.items()]


def provenance_lines(records: list[RunRecord]) -> list[str]:
    """Per run: commit, dirty flag, device, config hash; runs on another commit than the study's majority flagged."""
    present = [run for run in records if run.status != "missing"]
    if not any(run.provenance for run in present):
        return ["No run recorded provenance (efficiency.json without a `provenance` field: an older run)."]
    majority = majority_commit(present)
    commits = {run.provenance["git_commit"] for run in present if run.provenance.get("git_commit")}
    if majority is not None:
        head = f"Majority commit: `{majority[:12]}` (runs trained at another commit are flagged)."
    else:
        head = (
            f"The runs were trained at {len(commits)} commits, none shared by more than half of them (a study "
            "that commits each finished run); `python -m src.report --check` compares each run's resolved "
            "config with what the study file at HEAD plans for it."
        )
    lines = [
        head,
        "",
        "| Run | Status | Commit | Dirty | Device | Config sha256 | Flag |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in present:
        prov = run.provenance
        commit = prov.get("git_commit")
        flag = []
        if not prov:
            flag.append("no provenance recorded")
        elif majority is not None and commit != majority:
            flag.append("**commit differs from the majority**")
        if prov.get("git_dirty"):
            flag.append("**uncommitted changes**")
        lines.append(
            f"| `{run.variant}/seed{run.seed}` | {run.status} | `{(commit or '—')[:12]}` "
            f"| {prov.get('git_dirty', '—')} | {prov.get('device', '—')} "
            f"| `{(prov.get('config_sha256') or '—')[:12]}` | {', '.join(flag)} |"
        )
    return lines


def shown(path: str | Path, root: str | Path | None) -> str:
    """A run's path as the report prints it: relative to the report's root when inside it (no machine paths)."""
    if root is not None:
        try:
            return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            pass
    return str(path)


def status_lines(records: list[RunRecord], root: str | Path | None = None) -> list[str]:
    lines = []
    diverged = [run for run in records if run.status == "diverged"]
    if diverged:
        lines.append(f"**Diverged** ({len(diverged)}; never averaged, never on a frontier):\n")
        for run in diverged:
            reason = f": {run.diverged_reason}" if run.diverged_reason else ""
            where = shown(run.run_dir, root)
            lines.append(f"- `{run.variant}/seed{run.seed}` at step {run.diverged_step}{reason} — {where}")
        lines.append("")
    for status, meaning in (
        ("unfinished", "never tested: still running, stopped or crashed (the sweep resumes or restarts them)"),
        ("missing", "no run directory"),
        ("outside", "run directories under the study's folder that its study file does not plan: left out"),
    ):
        runs = [run for run in records if run.status == status]
        if runs:
            lines.append(f"**{status.capitalize()}** ({len(runs)}; {meaning}):\n")
            lines += [f"- `{run.variant}/seed{run.seed}` — {shown(run.run_dir, root)}" for run in runs]
            lines.append("")
    return lines


TOOL_FIGURES = {"lesion": "lesion.png", "prune": "prune.png"}  # written by python -m src.lesion / src.prune


def tool_figures(records: list[RunRecord], out: Path) -> list[tuple[str, str]]:
    """``(caption, path relative to out)`` of the lesion / pruning figures the finished runs hold."""
    found = []
    for run in records:
        for tool, name in TOOL_FIGURES.items():
            figure = Path(run.run_dir) / tool / name
            if run.status == "finished" and figure.is_file():
                caption = f"{run.variant}/seed{run.seed}: {'block lesions' if tool == 'lesion' else 'pruning sweep'}"
                found.append((caption, os.path.relpath(figure.resolve(), out.resolve())))
    return found


def comparison_sentence(names: str, c: Comparison, what: str, subject: str) -> str:
    """One comparison in words, by the project's rule: a direction only with n >= 3 on each side and p < 0.05."""
    n = min(c.n_a, c.n_b)
    diff = 100 * (c.difference or 0.0)
    if c.p_value is None:
        return f"{names}: {diff:+.2f} points of {what}, not distinguishable with n = {c.n_a}/{c.n_b} ({c.reason})."
    if n < 3:
        test = f"{c.test} p = {c.p_value:.2g}"
        return f"{names}: {diff:+.2f} points of {what} ({test}), not distinguishable with n = {n}."
    if c.p_value < 0.05:
        direction = "higher" if diff > 0 else "lower"
        return (
            f"{names}: {subject} {what} is {direction} by {abs(diff):.2f} points "
            f"({c.test} p = {c.p_value:.2g}, {c.effect_name} = {c.effect:+.2f}, n = {n})."
        )
    return f"{names}: no difference detected in {what} ({diff:+.2f} points, {c.test} p = {c.p_value:.2g}, n = {n})."


def summary_paragraph(
    records: list[RunRecord], rows: list[Row], pairs: list[Pair], fits: dict, needed: dict, target: float | None,
    target_how: str,
) -> str:  # fmt: skip
    """Sentences that state only what the numbers support: tests with n >= 3 decide, smaller n only describes."""
    if not rows:
        return "No finished run with a finite test accuracy: nothing to compare yet."
    sentences = []
    for pair in pairs:
        names = f"`{pair.residual.variant}` against `{pair.plain.variant}`"
        sentences.append(comparison_sentence(names, pair.comparison, "test accuracy", "the residual net's"))
    for deeper in depth_pairs(rows):
        names = f"`{deeper.deep.variant}` against `{deeper.shallow.variant}`"
        sentences.append(comparison_sentence(names, deeper.test, "test accuracy", "the deeper net's"))
        sentences.append(comparison_sentence(names, deeper.train, "final training accuracy", "the deeper net's"))
    single = [row.variant for row in rows if row.n == 1]
    if single:
        sentences.append(f"One seed only, so no interval and no test: {', '.join(f'`{v}`' for v in single)}.")
    for line, members in lines_of(rows).items():
        fit = fits.get(line)
        if len(members) == 1:
            sentences.append(f"Line {line} has one size: no fit, no marginal slope, no interpolation.")
        elif isinstance(fit, PowerLaw):
            sentences.append(f"Along {line}, test error {trend_text(fit)}.")
        elif isinstance(fit, str):
            sentences.append(f"Along {line}, no size-scaling fit: {fit}.")
    if target is not None:
        reached = {line: reach["params"] for line, reach in needed.items()}
        missed = [line for line, (value, how) in reached.items() if value is None and how == "not reached"]
        withheld = [line for line, (value, how) in reached.items() if value is None and how != "not reached"]
        text = f"Target accuracy {100 * target:.2f}% ({target_how})"
        if missed:
            text += f": not reached by {', '.join(missed)} at any tested size"
        if withheld:
            text += f"{'; ' if missed else ': '}no size-to-target for {', '.join(withheld)} (no interval possible)"
        text += "."
        sentences.append(text)
    with_se = [row for row in rows if row.test_binomial_se is not None]
    if with_se:
        se = max(cast(float, row.test_binomial_se) for row in with_se)
        sentences.append(
            f"With {with_se[0].test_samples:,} test images one run's accuracy carries a binomial standard error "
            f"of up to {100 * se:.2f} points."
        )
    diverged = [run for run in records if run.status == "diverged"]
    if diverged:
        sentences.append(f"{len(diverged)} run(s) diverged and are excluded from every number (listed below).")
    return " ".join(sentences)


@dataclass
class Sections:
    """The parts of report.md beyond the study's own tables, each optional (empty: the section is left out).

    ``paper``: the published numbers' overlay (``paper_overlay``: its figure, its lines); ``diagnostics``:
    figure files, with ``diagnostic_notes``; ``tools``: (caption, path) of lesion / prune figures; ``target``:
    the accuracy the size-to-target columns aim at and why; ``lesions``: ``src.reporting.lesions.lesion_markdown``;
    ``extra``: the width x depth, iso-parameter and selection sections; ``root``: the runs' folder (paths in the
    status lines are relative to it).
    """

    paper: tuple[str | None, list[str]] = (None, [])
    diagnostics: list[str] = field(default_factory=list)
    diagnostic_notes: list[str] = field(default_factory=list)
    tools: list[tuple[str, str]] = field(default_factory=list)
    target: tuple[float | None, str] = (None, "")
    lesions: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    root: str | Path | None = None


@dataclass
class RenderedReport:
    """report.md's text and the rows of its three CSV files (lines, residual/plain comparisons, depth pairs)."""

    text: str
    lines_csv: list[dict]
    pairs_csv: list[dict]
    depth_csv: list[dict]


PROTOCOL_NOTE = (
    "A variant is a resolved config minus its seed (settings that differ within the study are in its name); "
    "a line is the variants that differ only in depth. Test accuracy: mean ± sample std (ddof = 1) over the n "
    "seeds, and the 95% t-interval of the mean (none with one seed). *Binomial SE*: the test set's own "
    "sampling error of one run's accuracy, sqrt(p(1 − p)/m). *Training compute*: 3 × MACs per sample × "
    "training images seen. *Marginal*: points of test accuracy per extra million parameters over the previous "
    "size of the same line, ± its standard error (from the two means' standard errors). The raw accuracy "
    "per Mparam / GMAC ratios are in report.csv only (`raw_acc_per_mparam`): they rank size, not efficiency."
)
DEPTH_NOTE = (
    "He et al.'s two findings as tests: a deeper plain net has *lower* test and training accuracy than a "
    "shallower one (degradation: not overfitting, since training accuracy falls too); a deeper ResNet has "
    "higher accuracy. *Final train acc*: the last epoch's running accuracy on the augmented training "
    "batches, as the paper's training error. Same tests as above."
)
DIAGNOSTICS_NOTE = (
    "Per block against relative depth (position within stage; stage boundaries dotted): the RMS gradient "
    "per weight of the block's branch convolutions, ||g|| / ||w|| (batch norm makes a conv's scale "
    "irrelevant, so the relative step is what matters), and ||F(x)|| / ||s(x)||, the branch against the "
    "shortcut it is added to (plain nets: ||F(x)|| / ||x|| where the shapes match). Each seed is "
    "averaged over its measured steps >= 75% of its last; the curve is the mean over all finished seeds, "
    "the band their min-max (`diagnostics.jsonl`, written with `diagnostics.enabled: true`)."
)


def _runs_line(records: list[RunRecord]) -> str:
    """How many runs are in the numbers, and how many are not, by status."""
    counts = {s: sum(run.status == s for run in records) for s in ("finished", "diverged", "unfinished", "missing")}
    outside = sum(run.status == "outside" for run in records)
    return (
        f"Runs: {counts['finished']} finished (tested), {counts['diverged']} diverged, {counts['unfinished']} "
        f"unfinished, {counts['missing']} missing"
        + (f", {outside} outside the study's plan (left out)" if outside else "")
        + ". Only finished runs with a finite test accuracy enter the numbers."
    )


def _figure_lines(paper_lines: list[str]) -> list[str]:
    """The figures every report has, then the published numbers' notes."""
    return [
        "## Figures",
        "",
        *[f"![test error vs {key}]({FIGURES[key]})\n" for key in ("params", "macs", "compute", "time")],
        f"![size to reach the target]({FIGURES['target']})",
        "",
        f"![training curves]({FIGURES['curves']})",
        "",
        f"![He et al. Fig. 6 per family]({FIG6_FILE})",
        "",
        *[f"{text}\n" for text in paper_lines],
    ]


def _optional_lines(sections: Sections) -> list[str]:
    """Diagnostics, then lesions and pruning: each only when the study has it."""
    lines: list[str] = []
    if sections.diagnostics:
        lines += [
            "## Inside the networks: training diagnostics",
            "",
            DIAGNOSTICS_NOTE,
            "",
            *[f"![{name}]({name})\n" for name in sections.diagnostics],
            *[f"- {note}" for note in sections.diagnostic_notes],
            "",
        ]
    if sections.tools or sections.lesions:
        lines += ["## Block lesions and pruning", "", *sections.lesions]
    if sections.tools:
        lines += [
            "Per run, from `python -m src.lesion` / `python -m src.prune` run on the study's checkpoints:",
            "",
            *[f"![{caption}]({path})\n" for caption, path in sections.tools],
        ]
    return lines


def render_markdown(title: str, records: list[RunRecord], rows: list[Row], sections: Sections) -> RenderedReport:
    """report.md's text, and the lines / comparisons / depth tables for their CSV files."""
    target = sections.target
    fits = power_laws(rows, "params")
    needed = sizes_to_target(rows, target[0])
    pairs = twin_pairs(rows)
    lines_md, lines_csv = line_table(rows, fits, needed)
    pairs_md, pairs_csv = comparison_table(pairs)
    deeper = depth_pairs(rows)
    depth_md, depth_csv = depth_table(deeper)
    lines = [
        f"# Study report: {title}",
        "",
        _runs_line(records),
        "",
        "## Summary",
        "",
        summary_paragraph(records, rows, pairs, fits, needed, target[0], target[1]),
        "",
        "## Error against size and cost",
        "",
        study_markdown_table(rows) if rows else "_No finished runs yet._",
        "",
        PROTOCOL_NOTE,
        "",
    ]
    sources = sorted({row.train_compute_source for row in rows if row.train_compute_source})
    fallback = [s for s in sources if s != "train_images_seen"]
    if fallback:
        lines += [f"Training compute of some runs is estimated: {'; '.join(fallback)}.", ""]
    lines += ["## Lines: scaling and size to reach the target", ""]
    if target[0] is None:
        lines += ["_No target accuracy: no line has a tested run._", ""]
    else:
        lines += [f"Target: {100 * target[0]:.2f}% test accuracy ({target[1]}).", ""]
    lines += [*lines_md, "", "## Residual against plain", ""]
    lines += pairs_md if pairs else ["_No residual/plain pair of equal size with the same other settings._"]
    lines += [
        "",
        "Welch's t-test (Hedges' g), never paired by seed: the same seed does not give two networks the same draws.",
        "",
        "## Depth within a line",
        "",
        *(depth_md if deeper else ["_No line has two depths with finished runs._"]),
        "",
        DEPTH_NOTE,
        "",
        *sections.extra,
        *_figure_lines(sections.paper[1]),
        *_optional_lines(sections),
    ]
    lines += ["## Budget and protocol", "", *(budget_lines(records) or ["- none"]), ""]
    lines += ["## Provenance", "", *provenance_lines(records), ""]
    status = status_lines(records, sections.root)
    if status:
        lines += ["## Not in the numbers", "", *status]
    return RenderedReport("\n".join(lines), lines_csv, pairs_csv, depth_csv)
