"""Report a study: ``python -m src.report <log root | results folder | study file> [--out DIR] [--check] ...``.

Reads only what the runs saved -- ``efficiency.json``, ``config.yaml``, ``data.json`` and the
TensorBoard scalars ``train/acc`` and ``val/acc`` -- and never trains. Writes into ``--out``
(default: ``<root>/report/``):

* ``report.csv``: one row per variant (its resolved config minus the seed: see
  ``src.reporting.records``): size, MACs, training compute, wall-clock, test accuracy as mean,
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
* ``test_error_vs_{params,macs,compute,time}.png``, ``size_to_target.png``, ``training_curves.png``,
  ``fig6_by_family.png`` (per family, every depth overlaid: He et al. Fig. 6);
* ``diagnostics_grad_rms.png``, ``diagnostics_grad_to_weight.png``, ``diagnostics_branch_to_shortcut.png``
  when runs trained with the diagnostics callback: scale-free per-block profiles against relative
  depth, every finished seed, residual against plain;
* links to the ``lesion/lesion.png`` and ``prune/prune.png`` that ``python -m src.lesion`` /
  ``python -m src.prune`` wrote into the study's run directories;
* ``test_error_width_depth.png`` (a family spanning two widths and two depths) and ``report_iso_params.csv``
  (variants of different shape within ``--iso-tolerance`` of each other's parameter count; header-only when
  none): ``src.reporting.shapes``; the Wide / pre-activation ResNets' published errors on the error figures
  when runs of those families follow their protocol (``src.reporting.anchors``);
* ``report_lesions.csv`` and ``lesions_across_seeds.png``: those lesions summarized per variant over its
  seeds (``src.reporting.lesions``; the CSV is header-only when no run has a lesion);
* ``report_selection.csv`` and a section of report.md, when the study chose a setting per variant on the
  validation split (``selection.json``, ``src.sweeping.selection``): every candidate's score and the choice;
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

This file is the command: its arguments, ``write_report`` (what is written, in which order) and ``check``.
The pieces live in ``src/reporting/``: ``study_rows`` (runs -> rows), ``figures`` and ``figure_data`` (what is
drawn), ``markdown`` (report.md), ``committed`` (results folders and what ``--check`` compares).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

from src.files import staged_writes
from src.reporting import frontier, frontier_figure, shapes
from src.reporting.analysis_plan import PlanError, is_plan_file, load_plan, planned_pairs
from src.reporting.anchors import anchor_data, anchor_overlay
from src.reporting.committed import (
    config_problems,
    file_differences,
    resolve_source,
    results_source,
    selection_problems,
)
from src.reporting.fig6 import FIG6_FILE, plot_fig6
from src.reporting.figure_data import (
    FIGURE_DATA,
    FIGURES,
    choose_target,
    diagnostics_figures,
    figure_data,
    read_curves,
    sizes_to_target,
)
from src.reporting.figures import plot_error_vs_cost, plot_size_to_target, plot_training_curves, variant_colors
from src.reporting.includes import DOCUMENTS, refresh, stale_blocks
from src.reporting.lesions import CSV_FILE as LESIONS_CSV
from src.reporting.lesions import FIGURE as LESIONS_FIGURE
from src.reporting.lesions import (
    base_variant,
    lesion_figure_data,
    lesion_markdown,
    lesions_by_variant,
    plot_lesions,
    summary_rows,
)
from src.reporting.markdown import Sections, paper_overlay, render_markdown, tool_figures
from src.reporting.own_nets import CSV_FILE as OWN_NETS_CSV
from src.reporting.own_nets import own_net_markdown, own_net_pairs, own_net_rows
from src.reporting.plan_report import PLAN_FILES, PLAN_INDEX, write_plan_report
from src.reporting.records import RunRecord, collect_runs
from src.reporting.selection_section import CSV_FILE as SELECTION_CSV
from src.reporting.selection_section import selection_markdown, selection_rows
from src.reporting.study_rows import aggregate, write_study_csv
from src.sweeping.results import read_index
from src.sweeping.selection import read_selection
from src.sweeping.study import StudyError
from src.table_files import write_rows


class ReportFolderError(ValueError):
    """The default report folder ``<root>/report`` is a symbolic link: a study folder received from someone else
    could otherwise send the report's writes (report.md, the CSVs...) into any folder the user can write."""


def write_report(
    root: str | Path,
    out: str | Path | None = None,
    expected: list | None = None,
    paper: str = "auto",
    target_acc: float | None = None,
    title: str | None = None,
    iso_tolerance: float = shapes.DEFAULT_ISO_TOLERANCE,
    links_from: str | Path | None = None,
) -> tuple[Path, list[RunRecord]]:
    """Write report.md, the CSV files, figures.json and the figures for the runs under ``root``.

    Returns the folder and the runs. ``title``: the report's heading (default: ``root`` as given).
    ``iso_tolerance``: how far apart (fraction of the larger) two shapes' parameter counts may be to be compared.
    ``links_from``: the folder report.md's links to the runs' own figures are relative to (default ``out``;
    ``--check`` writes into a temporary folder but compares links as they are from the committed report's folder).
    Every file is written into a staging folder inside ``out`` and then renamed into place
    (:func:`src.files.staged_writes`): a symbolic link planted at a report file's name is replaced, never written
    through. A default ``<root>/report`` that is a symbolic link is refused (:class:`ReportFolderError`).
    """
    root = Path(root)
    if out is None and (root / "report").is_symlink():
        link = root / "report"
        raise ReportFolderError(
            f"'{link}' is a symbolic link (to '{os.readlink(link)}'): the report is written only into a real folder, "
            "so a study folder from elsewhere cannot send it to another place. Remove the link (the report makes "
            "the folder), or name the folder to write into with --out DIR."
        )
    out = Path(out) if out is not None else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    links = Path(links_from) if links_from is not None else out
    with staged_writes(out) as staging:  # a link planted at a report file is replaced, never written through
        records = _write_files(root, staging, links, expected, paper, target_acc, title, iso_tolerance)
    return out, records


def _write_files(
    root: Path,
    folder: Path,
    links: Path,
    expected: list | None,
    paper: str,
    target_acc: float | None,
    title: str | None,
    iso_tolerance: float,
) -> list[RunRecord]:
    """``write_report``'s files, into ``folder`` (a fresh staging folder); report.md's links relative to ``links``."""
    selection = read_selection(root)
    records = collect_runs(root, expected, tuple((selection or {}).get("grid", {})))
    rows = aggregate(records)
    mode = {"on": "force"}.get(paper, paper)
    overlay = paper_overlay(records, mode)
    anchors, anchor_lines = anchor_overlay(records, mode)
    overlay = (overlay[0], [*overlay[1], *anchor_lines])
    target = choose_target(rows, target_acc)
    write_study_csv(rows, folder / "report.csv")
    for cost in ("params", "macs", "compute", "time"):
        plot_error_vs_cost(rows, cost, folder / FIGURES[cost], paper=overlay[0], anchors=anchors)
    plot_size_to_target(sizes_to_target(rows, target[0]), target[0], folder / FIGURES["target"])
    curves = read_curves(records)
    plot_training_curves(rows, curves, folder / FIGURES["curves"])
    plot_fig6(rows, curves, folder / FIG6_FILE)
    diagnostic_notes: list[str] = []
    profiles: dict = {}
    diagnostics = diagnostics_figures(records, folder, diagnostic_notes, profiles)
    tools = tool_figures(records, links)
    lesions = lesions_by_variant(records)
    if lesions:
        plot_lesions(lesions, folder / LESIONS_FIGURE, variant_colors(rows, map(base_variant, lesions)))
    write_rows(summary_rows(lesions), folder / LESIONS_CSV)
    grids, shape_pairs = shapes.width_depth_grids(rows), shapes.iso_pairs(rows, iso_tolerance)
    if grids:
        shapes.plot_width_depth(grids, folder / shapes.HEATMAP)
        profiles[shapes.HEATMAP] = grids
    if anchors:
        profiles["published_anchors"] = anchor_data(anchors)
    shapes.write_iso_csv(shape_pairs, folder / shapes.ISO_CSV)
    if selection is not None:
        write_rows(selection_rows(selection), folder / SELECTION_CSV)
    spending = _frontier(root, rows, folder, iso_tolerance, links)
    own_nets = own_net_pairs(rows)
    if own_nets:  # only a study with a class-path network has the file
        write_rows(own_net_rows(own_nets), folder / OWN_NETS_CSV)
    sections = Sections(
        paper=overlay, diagnostics=diagnostics, diagnostic_notes=diagnostic_notes, tools=tools, target=target,
        lesions=lesion_markdown(lesions), root=root,
        extra=[*shapes.heatmap_markdown(grids), *shapes.iso_markdown(shape_pairs, iso_tolerance), *spending,
               *own_net_markdown(own_nets), *selection_markdown(selection)],
    )  # fmt: skip
    report = render_markdown(title or str(root), records, rows, sections)
    write_rows(report.lines_csv, folder / "report_lines.csv")
    write_rows(report.pairs_csv, folder / "report_comparisons.csv")
    write_rows(report.depth_csv, folder / "report_depth.csv")
    (folder / "report.md").write_text(report.text)
    if lesions:
        profiles[LESIONS_FIGURE] = lesion_figure_data(lesions)
    figures = figure_data(rows, records, target, profiles)
    (folder / FIGURE_DATA).write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
    return records


def _frontier(root: Path, rows: list, out: Path, tolerance: float, links_from: Path) -> list[str]:
    """The frontier's figure, pairs and answer (``src.reporting.frontier``) where the study spends its size in more
    than one way; report.md's section (empty otherwise)."""
    if not frontier.is_frontier(rows):
        return []
    frontier_figure.plot_frontier(rows, out / frontier_figure.FIGURE)
    pairs = [*frontier.matched_pairs(rows, "params", tolerance), *frontier.matched_pairs(rows, "compute", tolerance)]
    planned, plans = planned_pairs(root)
    frontier.adjust(pairs, planned)
    frontier.write_pairs_csv(pairs, out / frontier.CSV_FILE)
    (out / frontier.ANSWER).write_text(frontier.answer(pairs, frontier.figure_link(links_from)))
    note = f" The planned comparisons are tested in {', '.join(f'`{p}`' for p in plans)}'s report." if plans else ""
    return frontier.frontier_markdown(pairs, tolerance, note)


def refresh_documents(under: str) -> None:
    """Copy the files below ``under`` into the README/docs blocks that quote them, saying which documents changed."""
    changed = [doc for doc in DOCUMENTS if refresh(Path(doc), under)]
    if changed:
        print(f"updated the generated blocks of {', '.join(changed)}")


def check(
    results: Path,
    paper: str = "auto",
    target_acc: float | None = None,
    iso_tolerance: float = shapes.DEFAULT_ISO_TOLERANCE,
) -> int:
    """``--check``: 0 when the committed report and configs are what HEAD gives, else 1 with the differences."""
    if not results.is_dir() or read_index(results) is None:
        print(f"error: {str(results)!r} is not a study's results folder (it has no results.json)", file=sys.stderr)
        return 2
    root, expected, title = results_source(results)
    with tempfile.TemporaryDirectory(prefix="report-check-") as fresh:
        write_report(root, fresh, expected, paper, target_acc, title, iso_tolerance, links_from=root / "report")
        problems = file_differences(root / "report", Path(fresh))
    problems += config_problems(root) + selection_problems(root)
    problems += [line for doc in DOCUMENTS for line in stale_blocks(Path(doc), str(root))]
    return _check_outcome(problems, f"{root}: the committed results", str(root), "report and run configs match")


def _check_outcome(problems: list[str], what: str, regenerate: str, matches: str) -> int:
    """``--check``'s ending, one for both kinds of folder: 1 with the problems listed, else 0."""
    where = what.split(":")[0]
    if problems:
        print(f"{what} are not what HEAD gives:", file=sys.stderr)
        for problem in problems:
            print(f"- {problem}", file=sys.stderr)
        print(f"Regenerate with: python -m src.report {regenerate}", file=sys.stderr)
        return 1
    print(f"{where}: {matches} what HEAD gives")
    return 0


def planned_analysis(source: Path, out: str | None, check_only: bool) -> int:
    """A plan file: its hypotheses' verdicts into its results folder. ``--check`` on that folder (or the plan
    file): 1 when the committed plan report is not what HEAD gives, or an arm mixes code versions."""
    try:
        plan_file = Path(json.loads((source / PLAN_INDEX).read_text())["plan"]) if source.is_dir() else source
        plan = load_plan(plan_file)
        if source.is_dir() and (check_only or out is None):
            _require_own_plan(source, plan_file, plan.results)
        if not check_only:
            folder = Path(out or plan.results)
            folder.mkdir(parents=True, exist_ok=True)
            with staged_writes(folder) as staging:  # a link planted at a report file is replaced, not written through
                _, rows, problems = write_plan_report(plan, staging)
            if out is None:  # the committed folder: the documents that quote it follow
                refresh_documents(plan.results)
            tested = sum(row.verdict != "pending" for row in rows)
            print(f"{tested} of {len(rows)} planned hypotheses tested; wrote {folder}/report.md, plan.csv, plan.json")
            for problem in problems:
                print(f"warning: {problem}", file=sys.stderr)
            return 0
        with tempfile.TemporaryDirectory(prefix="plan-check-") as fresh:
            _, _, problems = write_plan_report(plan, fresh)
            committed = Path(plan.results)
            problems += [line for doc in DOCUMENTS for line in stale_blocks(Path(doc), plan.results)]
            for name in PLAN_FILES:
                if not (committed / name).is_file():
                    problems.append(f"{committed / name}: not committed")
                elif (committed / name).read_text() != (Path(fresh) / name).read_text():
                    problems.append(f"{committed / name}: differs from what HEAD gives")
    except (PlanError, StudyError, OSError, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return _check_outcome(
        problems, f"{plan.results}: the planned analysis and its arms", plan.source,
        "the planned analysis and each arm's one clean commit match",
    )  # fmt: skip


def _require_own_plan(folder: Path, plan_file: Path, results: str) -> None:
    """Refuse a results folder whose ``plan.json`` names a plan that reports into another folder.

    Why: ``python -m src.report <folder>`` writes (or ``--check`` compares) the plan's ``results:`` folder; a
    folder received from someone else could otherwise name a plan of its own whose ``results:`` is any folder
    the user can write, and have its report.md, summary.md, plan.csv and plan.json overwritten.
    """
    if Path(results).resolve() != folder.resolve():
        raise PlanError(
            f"'{folder / PLAN_INDEX}' names the plan '{plan_file}', whose results folder is '{results}' "
            f"('{Path(results).resolve()}'), not this folder '{folder}' ('{folder.resolve()}'): a results folder's "
            f"{PLAN_INDEX} may only name the plan that reports into that same folder. To report into '{results}', "
            f"give the plan file itself: python -m src.report {plan_file}"
        )


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a tolerance: give a fraction in [0, 1), e.g. 0.1 for 10%")
    return value


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
    parser.add_argument(
        "--iso-tolerance",
        type=_tolerance,
        default=shapes.DEFAULT_ISO_TOLERANCE,
        help="compare two variants of different shape when their parameter counts differ by at most this fraction "
        f"of the larger (report_iso_params.csv; default {shapes.DEFAULT_ISO_TOLERANCE})",
    )
    args = parser.parse_args(argv)
    source = Path(args.source)
    if (source.is_file() and is_plan_file(source)) or (source / PLAN_INDEX).is_file():
        return planned_analysis(source, args.out, args.check)
    if args.check:
        return check(source, args.paper, args.target_acc, args.iso_tolerance)
    try:
        root, expected, title = resolve_source(Path(args.source))
    except StudyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        out, records = write_report(root, args.out, expected, args.paper, args.target_acc, title, args.iso_tolerance)
    except ReportFolderError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.out is None:  # the study's own report folder: the documents that quote it follow
        refresh_documents(str(root))
    finished = sum(run.status == "finished" for run in records)
    diverged = sum(run.status == "diverged" for run in records)
    print(
        f"{finished} finished, {diverged} diverged of {len(records)} runs under {root}; "
        f"wrote {out}/report.md, report.csv, report_lines.csv, report_comparisons.csv, report_depth.csv, "
        f"{shapes.ISO_CSV} and figures"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
