"""Report a study: ``python -m src.report <log root | results folder | study file> [--out DIR] [--check] ...``.

Reads only what the runs saved -- ``efficiency.json``, ``config.yaml``, ``data.json`` and the
TensorBoard scalars ``train/acc`` and ``val/acc`` -- and never trains. Writes into ``--out``
(default: ``<root>/report/``):

* ``report.csv``: one row per variant (its resolved config minus the seed: see
  ``src.reporting.tables``): size, MACs, training compute, wall-clock, test accuracy as mean,
  sample std, n and 95% t-interval, the test set's binomial SE, marginal slopes with SEs along
  the variant's line, and the raw accuracy-per-size ratios (``raw_acc_per_mparam``: they rank
  size, not efficiency, and lead nothing);
* ``report_lines.csv``: per line, the power-law fit of error against parameters and the
  parameters / MACs / training compute needed to reach the target accuracy;
* ``report_comparisons.csv``: each residual/plain pair of equal size, Welch or paired t-test;
* ``report_depth.csv``: each deeper variant of a line against the line's shallowest, on test accuracy
  and on the final training accuracy -- the paper's two findings (plain nets degrade with depth,
  ResNets improve) as tests;
* ``report.md``: the table, a summary that states only what the numbers support, the figures,
  budget and protocol, per-run provenance, and every run that diverged, is unfinished or missing;
* ``test_error_vs_{params,macs,compute,time}.png``, ``size_to_target.png``, ``training_curves.png``;
* ``diagnostics_grad_rms.png``, ``diagnostics_grad_to_weight.png``, ``diagnostics_branch_to_shortcut.png``
  when runs trained with the diagnostics callback: scale-free per-block profiles against relative
  depth, every finished seed, residual against plain;
* links to the ``lesion/lesion.png`` and ``prune/prune.png`` that ``python -m src.lesion`` /
  ``python -m src.prune`` wrote into the study's run directories;
* ``figures.json``: the data behind every figure (points, intervals, curves), so a check compares
  numbers, not PNG bytes.

Given a study file, the root is the study's folder and the runs it plans but cannot find are
listed as missing. A study's committed results folder (``results:`` in the study file, see
``src/sweeping/results.py``) is read alone -- from its copied files, curves from ``metrics.csv`` --
whether given as the folder or as the study file that names it; its report (default
``<results>/report/``) holds no absolute path, timestamp or machine-dependent order.

``--check RESULTS``: regenerate the report of a committed results folder into a temporary folder
and fail (exit 1, the differences listed) when the committed report.md / CSV files / figures.json
differ from it, or when a committed run's resolved config differs (beyond where-it-was-written
fields: ``src.sweeping.run_state.IGNORED_KEYS``) from what the study file at HEAD plans for it.

A partial study -- one seed, one size, untested, crashed or diverged runs, a target no line
reaches -- is reported as far as it goes, in words; the report never fails because a run is
incomplete.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
from pathlib import Path

from src.reporting.depth_profiles import depth_profiles, draw_depth_profiles
from src.reporting.figures import COSTS, plot_error_vs_cost, plot_size_to_target, plot_training_curves
from src.reporting.paper import CITATION
from src.reporting.protocol import protocol_line
from src.reporting.statistics import Comparison, PowerLaw, size_to_reach
from src.reporting.tables import (
    DepthPair,
    Pair,
    Row,
    RunRecord,
    aggregate,
    collect_runs,
    default_target,
    depth_pairs,
    lines_of,
    majority_commit,
    markdown_table,
    power_laws,
    row_size,
    size_text,
    twin_pairs,
    write_csv,
    write_rows,
)
from src.runs import find_run_dirs, read_scalars
from src.sweeping.plan import Study, StudyError, is_study_file, load_study, plan_runs, run_command
from src.sweeping.results import read_index
from src.sweeping.run_state import config_differences, saved_configs

FIGURES = {
    "params": "test_error_vs_params.png",
    "macs": "test_error_vs_macs.png",
    "compute": "test_error_vs_compute.png",
    "time": "test_error_vs_time.png",
    "target": "size_to_target.png",
    "curves": "training_curves.png",
}
FIGURE_DATA = "figures.json"
CHECKED_FILES = (
    "report.md",
    "report.csv",
    "report_lines.csv",
    "report_comparisons.csv",
    "report_depth.csv",
    FIGURE_DATA,
)
CURVE_TAGS = {"train": "train/acc", "val": "val/acc"}
# Written when finished runs trained with the diagnostics callback (diagnostics.enabled: true).
DIAGNOSTICS_FILE = "diagnostics.jsonl"
DIAGNOSTICS_FIGURES = {
    "grad_rms": "diagnostics_grad_rms.png",
    "grad_to_weight": "diagnostics_grad_to_weight.png",
    "branch_to_shortcut": "diagnostics_branch_to_shortcut.png",
}


def diagnostics_figures(
    records: list[RunRecord], out: Path, notes: list[str] | None = None, data: dict | None = None
) -> list[str]:
    """Scale-free per-block profiles against relative depth: one curve per variant over ALL its finished seeds.

    RMS gradient per weight, ||g|| / ||w|| and ||F(x)|| / ||s(x)|| (``src.reporting.depth_profiles``: each
    seed averaged over measured steps >= 75% of its last, then the mean over seeds with a min-max band).
    Returns the names of the figures written: none when no run recorded the scale-free diagnostics.
    What was skipped (old ``diagnostics.jsonl`` files, seeds whose blocks differ) is appended to
    ``notes``, or printed to stderr when ``notes`` is None. ``data`` (when given) receives each figure's
    profiles as numbers, by figure name (for ``figures.json``).
    """
    files: dict[str, list[Path]] = {}
    for run in records:
        path = Path(run.run_dir) / DIAGNOSTICS_FILE
        if run.status == "finished" and path.is_file():
            files.setdefault(run.variant, []).append(path)
    written, skipped = [], []
    for key, name in DIAGNOSTICS_FIGURES.items():
        profiles, why = depth_profiles(files, key)
        skipped += [note for note in why if note not in skipped]
        if profiles:
            draw_depth_profiles(profiles, out / name, key=key)
            written.append(name)
            if data is not None:
                data[name] = [dataclasses.asdict(profile) for profile in profiles]
    if notes is None:
        for note in skipped:
            print(f"diagnostics: {note}", file=sys.stderr)
    else:
        notes.extend(skipped)
    return written


def read_curves(records: list[RunRecord]) -> dict[str, dict[str, list]]:
    """``{variant: {"train": [(steps, acc) per seed], "val": [...]}}`` from the finished runs' TensorBoard files."""
    curves: dict[str, dict[str, list]] = {}
    for run in records:
        if run.status != "finished":
            continue
        scalars = read_scalars(run.run_dir, list(CURVE_TAGS.values()))
        for split, tag in CURVE_TAGS.items():
            if tag in scalars:
                curves.setdefault(run.variant, {}).setdefault(split, []).append(scalars[tag])
    return curves


def paper_overlay(records: list[RunRecord], mode: str) -> tuple[str | None, list[str]]:
    """Whether (and labelled how) He et al.'s Table 6 goes on the figures, and the lines saying why.

    ``auto``: only when some finished residual CIFAR run followed the paper's protocol (CIFAR-10,
    all 50k training images, the official test split, the final model, 64k steps at batch 128);
    ``force``: always, labelled "different protocol" unless every finished run matches; ``off``: never.
    Returns ``(None, why)`` for no overlay, ``("", why)`` for a matching one, ``("different protocol", why)``.
    """
    finished = [run for run in records if run.status == "finished"]
    residual = [run for run in finished if run.residual and run.family == "cifar"]
    matching = [run for run in residual if not run.paper_differences]
    differing = sorted({reason for run in finished for reason in run.paper_differences})
    if mode == "off":
        return None, []
    if mode == "auto" and not matching:
        if not finished:
            return None, []
        return None, [
            f"{CITATION} is not overlaid: no finished CIFAR ResNet run follows its protocol "
            f"({'; '.join(differing) or 'no residual CIFAR run'}). `--paper force` draws it anyway."
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
            f"({'; '.join(differing) or 'plain or non-CIFAR nets only'}), so the distance to the marks is not "
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
    lines = [
        f"Majority commit: `{(majority or 'none')[:12]}`.",
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
        elif commit != majority:
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


# ------------------------------------------------------------------------------------------------ lines


def sizes_to_target(rows: list[Row], target: float | None) -> dict[str, dict[str, tuple[float | None, str]]]:
    """``{line: {"params"|"macs"|"compute": (size, how)}}`` to reach ``target`` mean test accuracy."""
    needed: dict[str, dict[str, tuple[float | None, str]]] = {}
    for line, members in lines_of(rows).items():
        needed[line] = {}
        for size in ("params", "macs", "compute"):
            ordered = sorted((row for row in members if row_size(row, size)), key=lambda row: row_size(row, size))
            if target is None or not ordered:
                needed[line][size] = (None, "no target" if target is None else "no size recorded")
                continue
            needed[line][size] = size_to_reach(
                [row_size(row, size) for row in ordered], [row.test_acc_mean for row in ordered], target
            )
    return needed


def _fit_text(fit: PowerLaw | str) -> str:
    if isinstance(fit, str):
        return f"no fit: {fit}"
    text = f"b = {fit.b:.3f}"
    if fit.b_low is not None:
        text += f" [{fit.b_low:.3f}, {fit.b_high:.3f}]"
    text += f", a = {fit.a:.3g}"
    if fit.c is not None:
        text += f", irreducible c = {fit.c:.2f}%"
    return text + (f" ({fit.note})" if fit.note else "")


def _reach_text(value: float | None, how: str) -> str:
    if value is None:
        return how
    return size_text(value) if how == "interpolated" else f"≤ {size_text(value)} ({how})"


def line_table(rows: list[Row], fits: dict, needed: dict) -> tuple[list[str], list[dict]]:
    md = [
        "| Line | Sizes | Seeds per size | Fit: error % = a · params^-b (+ c), 95% bootstrap CI on b "
        "| Params to target | MACs to target | Training compute to target |",
        "|---|---:|---|---|---:|---:|---:|",
    ]
    csv_rows = []
    for line, members in lines_of(rows).items():
        fit = fits.get(line, "no fit")
        reach = needed.get(line, {})
        md.append(
            f"| {line} | {len(members)} | {'/'.join(str(row.n) for row in members)} | {_fit_text(fit)} "
            + "".join(f"| {_reach_text(*reach.get(size, (None, '—')))} " for size in ("params", "macs", "compute"))
            + "|"
        )
        csv_rows.append(
            {
                "line": line,
                "sizes": len(members),
                "variants": " ".join(row.variant for row in members),
                "fit_a": fit.a if isinstance(fit, PowerLaw) else None,
                "fit_b": fit.b if isinstance(fit, PowerLaw) else None,
                "fit_b_ci_low": fit.b_low if isinstance(fit, PowerLaw) else None,
                "fit_b_ci_high": fit.b_high if isinstance(fit, PowerLaw) else None,
                "fit_c": fit.c if isinstance(fit, PowerLaw) else None,
                "fit_note": fit.note if isinstance(fit, PowerLaw) else fit,
                **{f"{size}_to_target": reach.get(size, (None, ""))[0] for size in ("params", "macs", "compute")},
                **{f"{size}_to_target_how": reach.get(size, (None, ""))[1] for size in ("params", "macs", "compute")},
            }
        )
    return md, csv_rows


def comparison_table(pairs: list[Pair]) -> tuple[list[str], list[dict]]:
    md = [
        "| Residual | Plain | n | Difference (acc pp, residual − plain) | Test | p | Effect size |",
        "|---|---|---|---:|---|---:|---:|",
    ]
    csv_rows = []
    for pair in pairs:
        c = pair.comparison
        diff = "—" if c.difference is None else f"{100 * c.difference:+.2f}"
        p = "—" if c.p_value is None else f"{c.p_value:.3g}"
        effect = "—" if c.effect is None else f"{c.effect_name} {c.effect:+.2f}"
        test = c.test if not c.reason else f"{c.test}: {c.reason}"
        names = f"| `{pair.residual.variant}` | `{pair.plain.variant}` | {c.n_a}/{c.n_b}"
        md.append(f"{names} | {diff} | {test} | {p} | {effect} |")
        csv_rows.append(
            {
                "residual": pair.residual.variant,
                "plain": pair.plain.variant,
                "n_residual": c.n_a,
                "n_plain": c.n_b,
                "difference_acc": c.difference,
                "test": c.test,
                "statistic": c.statistic,
                "p_value": c.p_value,
                "effect_size": c.effect,
                "effect_size_name": c.effect_name,
                "note": c.reason,
            }
        )
    return md, csv_rows


def _p(c: Comparison) -> str:
    return "—" if c.p_value is None else f"{c.p_value:.3g}"


def depth_table(pairs: list[DepthPair]) -> tuple[list[str], list[dict]]:
    """Deeper against shallower within each line, on test and on final training accuracy."""
    md = [
        "| Line | Deeper | Shallower | n | Test acc difference (pp, deeper − shallower) | Test, p "
        "| Final train acc difference (pp) | Test, p |",
        "|---|---|---|---|---:|---|---:|---|",
    ]
    csv_rows = []
    for pair in pairs:
        cells = []
        for c in (pair.test, pair.train):
            diff = "—" if c.difference is None else f"{100 * c.difference:+.2f}"
            test = c.test if not c.reason else f"{c.test}: {c.reason}"
            cells.append(f"{diff} | {test}, p = {_p(c)}")
        md.append(
            f"| {pair.line} | `{pair.deep.variant}` | `{pair.shallow.variant}` | {pair.test.n_a}/{pair.test.n_b} "
            f"| {cells[0]} | {cells[1]} |"
        )
        row: dict = {"line": pair.line, "deeper": pair.deep.variant, "shallower": pair.shallow.variant}
        for name, c in (("test", pair.test), ("train", pair.train)):
            row.update(
                {
                    f"{name}_n_deeper": c.n_a,
                    f"{name}_n_shallower": c.n_b,
                    f"{name}_difference_acc": c.difference,
                    f"{name}_test": c.test,
                    f"{name}_statistic": c.statistic,
                    f"{name}_p_value": c.p_value,
                    f"{name}_effect_size": c.effect,
                    f"{name}_effect_size_name": c.effect_name,
                    f"{name}_note": c.reason,
                }
            )
        csv_rows.append(row)
    return md, csv_rows


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
            ci = f" (95% bootstrap CI {fit.b_low:.2f} to {fit.b_high:.2f})" if fit.b_low is not None else ""
            trend = f"falls as params^-{fit.b:.2f}" if fit.b > 0 else f"does not fall with size (b = {fit.b:.2f})"
            sentences.append(
                f"Along {line}, test error {trend}{ci} over {fit.sizes} sizes"
                + ("" if fit.b_low is not None else f"; {fit.note}")
                + "."
            )
    if target is not None:
        reached = {line: reach["params"] for line, reach in needed.items()}
        missed = [line for line, (value, _) in reached.items() if value is None]
        text = f"Target accuracy {100 * target:.2f}% ({target_how})"
        if missed:
            text += f": not reached by {', '.join(missed)} at any tested size"
        text += "."
        sentences.append(text)
    with_se = [row for row in rows if row.test_binomial_se is not None]
    if with_se:
        se = max(row.test_binomial_se for row in with_se)
        sentences.append(
            f"With {with_se[0].test_samples:,} test images one run's accuracy carries a binomial standard error "
            f"of up to {100 * se:.2f} points."
        )
    diverged = [run for run in records if run.status == "diverged"]
    if diverged:
        sentences.append(f"{len(diverged)} run(s) diverged and are excluded from every number (listed below).")
    return " ".join(sentences)


def render_markdown(
    title: str,
    records: list[RunRecord],
    rows: list[Row],
    paper: tuple[str | None, list[str]],
    diagnostics: list[str] | None = None,
    tools: list[tuple[str, str]] | None = None,
    target: tuple[float | None, str] = (None, ""),
    diagnostic_notes: list[str] | None = None,
    root: str | Path | None = None,
) -> tuple[str, list[dict], list[dict], list[dict]]:
    """report.md's text, and the lines / comparisons / depth tables for their CSV files."""
    diagnostic_notes = diagnostic_notes or []
    counts = {s: sum(run.status == s for run in records) for s in ("finished", "diverged", "unfinished", "missing")}
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
        f"Runs: {counts['finished']} finished (tested), {counts['diverged']} diverged, {counts['unfinished']} "
        f"unfinished, {counts['missing']} missing. Only finished runs with a finite test accuracy enter the numbers.",
        "",
        "## Summary",
        "",
        summary_paragraph(records, rows, pairs, fits, needed, target[0], target[1]),
        "",
        "## Error against size and cost",
        "",
        markdown_table(rows) if rows else "_No finished runs yet._",
        "",
        "A variant is a resolved config minus its seed (settings that differ within the study are in its name); "
        "a line is the variants that differ only in depth. Test accuracy: mean ± sample std (ddof = 1) over the n "
        "seeds, and the 95% t-interval of the mean (none with one seed). *Binomial SE*: the test set's own "
        "sampling error of one run's accuracy, sqrt(p(1 − p)/m). *Training compute*: 3 × MACs per sample × "
        "training images seen. *Marginal*: points of test accuracy per extra million parameters over the previous "
        "size of the same line, ± its standard error (from the two means' standard errors). The raw accuracy "
        "per Mparam / GMAC ratios are in report.csv only (`raw_acc_per_mparam`): they rank size, not efficiency.",
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
        "Paired t-test (effect size d_z) when both variants ran the same seeds, else Welch's t-test (Hedges' g).",
        "",
        "## Depth within a line",
        "",
        *(depth_md if deeper else ["_No line has two depths with finished runs._"]),
        "",
        "He et al.'s two findings as tests: a deeper plain net has *lower* test and training accuracy than a "
        "shallower one (degradation: not overfitting, since training accuracy falls too); a deeper ResNet has "
        "higher accuracy. *Final train acc*: the last epoch's running accuracy on the augmented training "
        "batches, as the paper's training error. Same tests as above.",
        "",
        "## Figures",
        "",
        *[f"![test error vs {key}]({FIGURES[key]})\n" for key in ("params", "macs", "compute", "time")],
        f"![size to reach the target]({FIGURES['target']})",
        "",
        f"![training curves]({FIGURES['curves']})",
        "",
        *[f"{text}\n" for text in paper[1]],
    ]
    if diagnostics:
        lines += [
            "## Inside the networks: training diagnostics",
            "",
            "Per block against relative depth (position within stage; stage boundaries dotted): the RMS gradient "
            "per weight of the block's branch convolutions, ||g|| / ||w|| (batch norm makes a conv's scale "
            "irrelevant, so the relative step is what matters), and ||F(x)|| / ||s(x)||, the branch against the "
            "shortcut it is added to (plain nets: ||F(x)|| / ||x|| where the shapes match). Each seed is "
            "averaged over its measured steps >= 75% of its last; the curve is the mean over all finished seeds, "
            "the band their min-max (`diagnostics.jsonl`, written with `diagnostics.enabled: true`).",
            "",
            *[f"![{name}]({name})\n" for name in diagnostics],
            *[f"- {note}" for note in diagnostic_notes],
            "",
        ]
    if tools:
        lines += [
            "## Block lesions and pruning",
            "",
            "From `python -m src.lesion` / `python -m src.prune` run on the study's checkpoints:",
            "",
            *[f"![{caption}]({path})\n" for caption, path in tools],
        ]
    lines += ["## Budget and protocol", "", *(budget_lines(records) or ["- none"]), ""]
    lines += ["## Provenance", "", *provenance_lines(records), ""]
    status = status_lines(records, root)
    if status:
        lines += ["## Not in the numbers", "", *status]
    return "\n".join(lines), lines_csv, pairs_csv, depth_csv


def choose_target(rows: list[Row], target_acc: float | None) -> tuple[float | None, str]:
    """The target accuracy and how it was chosen (given, or the best accuracy every line reaches)."""
    if target_acc is not None:
        return target_acc, "given with --target-acc"
    target = default_target(rows)
    return target, "default: the best mean test accuracy every line reaches; set it with --target-acc"


def _rounded(value: object) -> object:
    """Floats to 10 significant digits (the last bits of a float sum are no part of a result), recursively."""
    if isinstance(value, float):
        return float(f"{value:.10g}") if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(key): _rounded(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(item) for item in value]
    return value


def figure_data(rows: list[Row], records: list[RunRecord], target: tuple[float | None, str], diagnostics: dict) -> dict:
    """What every figure draws, as numbers: ``figures.json`` (compared by ``--check`` instead of PNG bytes)."""
    data: dict = {}
    for cost in ("params", "macs", "compute", "time"):
        _, row_cost, run_cost = COSTS[cost]
        data[FIGURES[cost]] = [
            {
                "variant": row.variant,
                "line": row.line,
                "x": row_cost(row),
                "error_mean": row.test_error_mean,
                "error_ci_half_width": row.test_error_half_width,
                "seeds": [[run.seed, run_cost(run), 100.0 * (1.0 - run.test_acc)] for run in row.runs],
            }
            for row in rows
            if row.test_error_mean is not None and row_cost(row)
        ]
    needed = sizes_to_target(rows, target[0])
    data[FIGURES["target"]] = {"target_acc": target[0], "lines": {line: needed[line] for line in sorted(needed)}}
    curves = read_curves(records)
    data[FIGURES["curves"]] = {
        variant: {split: [list(map(list, curve)) for curve in by_split[split]] for split in sorted(by_split)}
        for variant, by_split in sorted(curves.items())
    }
    data.update(diagnostics)  # the depth profiles, by figure name
    return _rounded(data)


def write_report(
    root: str | Path,
    out: str | Path | None = None,
    expected: list | None = None,
    paper: str = "auto",
    target_acc: float | None = None,
    title: str | None = None,
) -> tuple[Path, list[RunRecord]]:
    """Write report.md, the CSV files, figures.json and the figures for the runs under ``root``.

    Returns the folder and the runs. ``title``: the report's heading (default: ``root`` as given).
    """
    root = Path(root)
    out = Path(out) if out is not None else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    records = collect_runs(root, expected)
    rows = aggregate(records)
    overlay = paper_overlay(records, {"on": "force"}.get(paper, paper))
    target = choose_target(rows, target_acc)
    write_csv(rows, out / "report.csv")
    for cost in ("params", "macs", "compute", "time"):
        plot_error_vs_cost(rows, cost, out / FIGURES[cost], paper=overlay[0])
    plot_size_to_target(sizes_to_target(rows, target[0]), target[0], out / FIGURES["target"])
    plot_training_curves(rows, read_curves(records), out / FIGURES["curves"])
    diagnostic_notes: list[str] = []
    profiles: dict = {}
    diagnostics = diagnostics_figures(records, out, diagnostic_notes, profiles)
    tools = tool_figures(records, out)
    text, lines_csv, pairs_csv, depth_csv = render_markdown(
        title or str(root), records, rows, overlay, diagnostics, tools, target, diagnostic_notes, root
    )
    write_rows(lines_csv, out / "report_lines.csv")
    write_rows(pairs_csv, out / "report_comparisons.csv")
    write_rows(depth_csv, out / "report_depth.csv")
    (out / "report.md").write_text(text)
    figures = figure_data(rows, records, target, profiles)
    (out / FIGURE_DATA).write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
    return out, records


# ------------------------------------------------------------------------------------------------ results folders


def _relative(path: Path) -> Path:
    """``path`` relative to here when inside (the report then names no path of this machine)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def results_source(results: Path, study: Study | None = None) -> tuple[Path, list | None, str]:
    """A results folder's root, expected runs (from the study that names it, when found) and title."""
    results = _relative(results)
    index = read_index(results) or {}
    if study is None and index.get("study_file") and Path(index["study_file"]).is_file():
        try:
            study = load_study(index["study_file"]).validate()
        except StudyError:
            study = None  # --check says what is wrong with it; the report still reads the runs
    expected = None
    if study is not None:
        expected = [(run.variant, run.seed, results / run.variant / f"seed{run.seed}") for run in plan_runs(study)]
    title = f"{index.get('study') or (study.name if study else results.name)} (committed results)"
    return results, expected, title


def resolve_source(source: Path) -> tuple[Path, list | None, str | None]:
    """``(root, expected runs, title)`` of what ``python -m src.report`` was given (StudyError if unusable)."""
    if source.is_file():
        if not is_study_file(source):
            raise StudyError(f"{str(source)!r} is a file but not a study file (it has no 'archs')")
        study = load_study(source).validate()
        if study.results:
            return results_source(Path(study.results), study)
        return study.directory, [(run.variant, run.seed, run.run_dir) for run in plan_runs(study)], None
    if source.is_dir():
        if read_index(source) is not None:
            return results_source(source)
        return source, None, None
    raise StudyError(f"{str(source)!r} does not exist; give a log root (a folder of runs) or a study file")


def file_differences(committed: Path, fresh: Path, limit: int = 3) -> list[str]:
    """What differs between the committed report files and the regenerated ones, file by file."""
    problems = []
    for name in CHECKED_FILES:
        old, new = committed / name, fresh / name
        if not old.is_file():
            problems.append(f"{old}: not committed (the report writes it)")
            continue
        old_lines, new_lines = old.read_text().splitlines(), new.read_text().splitlines()
        if old_lines == new_lines:
            continue
        differing = [i for i in range(max(len(old_lines), len(new_lines))) if i >= len(old_lines)
                     or i >= len(new_lines) or old_lines[i] != new_lines[i]]  # fmt: skip
        problems.append(f"{old}: {len(differing)} line(s) differ from what the committed runs give")
        for i in differing[:limit]:
            was = old_lines[i] if i < len(old_lines) else "<no line>"
            now = new_lines[i] if i < len(new_lines) else "<no line>"
            problems.append(f"  line {i + 1}: committed   {was[:160]!r}")
            problems.append(f"  line {i + 1}: regenerated {now[:160]!r}")
    return problems


def config_problems(results: Path) -> list[str]:
    """Committed runs whose resolved config is not what the study file at HEAD plans for them."""
    index = read_index(results) or {}
    study_file = index.get("study_file")
    if not study_file:
        return [f"{results / 'results.json'}: names no study file, so the runs' configs cannot be checked"]
    try:
        study = load_study(study_file).validate()
    except StudyError as error:
        return [f"study file of {results}: {error}"]
    planned = {f"{run.variant}/seed{run.seed}": run for run in plan_runs(study)}
    from src.cli import resolved_config  # lightning and the models: only when there are configs to compare

    problems = []
    for run_dir in find_run_dirs(results):
        label = run_dir.relative_to(results).as_posix()
        run = planned.get(label)
        if run is None:
            problems.append(f"{label}: a committed run that {study_file} does not plan")
            continue
        config = resolved_config(run_command(study, run)[3:])
        for saved in saved_configs(run_dir):
            differences = config_differences(saved, config, limit=5)
            if differences:
                problems.append(f"{label}: config differs from what {study_file} plans: {', '.join(differences)}")
                break
    return problems


def check(results: Path, paper: str = "auto", target_acc: float | None = None) -> int:
    """``--check``: 0 when the committed report and configs are what HEAD gives, else 1 with the differences."""
    if not results.is_dir() or read_index(results) is None:
        print(f"error: {str(results)!r} is not a study's results folder (it has no results.json)", file=sys.stderr)
        return 2
    root, expected, title = results_source(results)
    with tempfile.TemporaryDirectory(prefix="report-check-") as fresh:
        write_report(root, fresh, expected, paper, target_acc, title)
        problems = file_differences(root / "report", Path(fresh))
    problems += config_problems(root)
    if problems:
        print(f"{root}: the committed results are not what HEAD gives:", file=sys.stderr)
        for problem in problems:
            print(f"- {problem}", file=sys.stderr)
        print(f"Regenerate with: python -m src.report {root}", file=sys.stderr)
        return 1
    print(f"{root}: report and run configs match what HEAD gives")
    return 0


def _target(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not an accuracy: give a fraction in (0, 1), e.g. 0.9 for 90%")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.report",
        description="Table and figures of a study, from what its runs saved (never trains).",
    )
    parser.add_argument("source", help="folder of runs (e.g. lightning_logs/cifar10_ladder), or a study file")
    parser.add_argument("--out", help="folder for report.md, report.csv and the figures (default: <root>/report)")
    parser.add_argument(
        "--paper",
        choices=("auto", "force", "on", "off"),
        default="auto",
        help="overlay He et al. Table 6 (auto: only for runs that follow its protocol; force (or on): always, "
        "labelled 'different protocol' when they do not)",
    )
    parser.add_argument(
        "--target-acc",
        type=_target,
        default=None,
        help="test accuracy (fraction) each line's size-to-target is computed for "
        "(default: the best mean accuracy every line reaches)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="the source is a committed results folder: regenerate its report in a temporary folder and fail "
        "(exit 1) when the committed files or run configs differ from what HEAD gives (give the same --paper / "
        "--target-acc the committed report was made with; it is made with the defaults otherwise)",
    )
    args = parser.parse_args(argv)
    if args.check:
        return check(Path(args.source), args.paper, args.target_acc)
    try:
        root, expected, title = resolve_source(Path(args.source))
    except StudyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out, records = write_report(root, args.out, expected, args.paper, args.target_acc, title)
    finished = sum(run.status == "finished" for run in records)
    diverged = sum(run.status == "diverged" for run in records)
    print(
        f"{finished} finished, {diverged} diverged of {len(records)} runs under {root}; "
        f"wrote {out}/report.md, report.csv, report_lines.csv, report_comparisons.csv, report_depth.csv and figures"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
