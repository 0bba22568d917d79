"""Report a study: ``python -m src.report <log root | study file> [--out DIR]``.

Reads only what the runs saved -- ``efficiency.json``, ``config.yaml`` and the TensorBoard
scalars ``train/acc`` and ``val/acc`` -- and never trains. Writes into ``--out`` (default:
``<root>/report/``):

* ``report.csv``: one row per variant (arch, depth, residual / plain, shortcut, params, MACs,
  best val and test accuracy as mean and std over seeds with n, accuracy per Mparam and per GMAC,
  and the marginal accuracy per extra Mparam / GMAC over the previous depth of the same line);
* ``report.md``: the same table for people, the figures, what budget the runs had, and every
  run that is unfinished (not tested: still running or crashed) or missing;
* ``test_error_vs_params.png``, ``test_error_vs_macs.png``, ``training_curves.png``;
* ``diagnostics_grad_norm.png``, ``diagnostics_branch_ratio.png`` when runs trained with the
  diagnostics callback: per-block profiles, residual against plain;
* links to the ``lesion/lesion.png`` and ``prune/prune.png`` that ``python -m src.lesion`` /
  ``python -m src.prune`` wrote into the study's run directories.

Given a study file, the root is the study's folder and the runs it plans but cannot find are
listed as missing. A partial study -- one seed, untested or crashed runs -- is reported as far
as it goes; the report never fails because a run is incomplete.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from src.study.plan import StudyError, is_study_file, load_study, plan_runs
from src.study.plots import depth_profiles, draw_depth_profiles
from src.study.report_figures import plot_error_vs_cost, plot_training_curves
from src.study.report_tables import Row, RunRecord, aggregate, collect_runs, markdown_table, write_csv
from src.study.runs_io import read_scalars

FIGURES = {
    "params": "test_error_vs_params.png",
    "macs": "test_error_vs_macs.png",
    "curves": "training_curves.png",
}
CURVE_TAGS = {"train": "train/acc", "val": "val/acc"}
# Written when finished runs trained with the diagnostics callback (diagnostics.enabled: true).
DIAGNOSTICS_FILE = "diagnostics.jsonl"
DIAGNOSTICS_FIGURES = {
    "grad_rms": "diagnostics_grad_rms.png",
    "grad_to_weight": "diagnostics_grad_to_weight.png",
    "branch_to_shortcut": "diagnostics_branch_to_shortcut.png",
}


def diagnostics_figures(records: list[RunRecord], out: Path, notes: list[str] | None = None) -> list[str]:
    """Scale-free per-block profiles against relative depth: one curve per variant over ALL its finished seeds.

    RMS gradient per weight, ||g|| / ||w|| and ||F(x)|| / ||s(x)|| (``src.study.depth_profiles``: each
    seed averaged over measured steps >= 75% of its last, then the mean over seeds with a min-max band).
    Returns the names of the figures written: none when no run recorded the scale-free diagnostics.
    What was skipped (old ``diagnostics.jsonl`` files, seeds whose blocks differ) is appended to
    ``notes``, or printed to stderr when ``notes`` is None.
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


def compares_with_paper(records: list[RunRecord]) -> bool:
    """Whether He et al.'s CIFAR-10 numbers belong on the figures: every finished run is a CIFAR net on CIFAR-10."""
    finished = [run for run in records if run.status == "finished"]
    if not finished:
        return False
    for run in finished:
        data = " ".join(str(run.context.get(key) or "") for key in ("data", "data_dir")).lower()
        if not (run.arch or "").replace("cifar_", "").startswith(("resnet", "plain")) or "cifar10" not in data:
            return False
        if "cifar100" in data:
            return False
    return True


def _budget_lines(records: list[RunRecord]) -> list[str]:
    finished = [run for run in records if run.status == "finished"]
    budgets: dict[str, int] = {}
    for run in finished:
        parts = [f"{key} {value}" for key, value in run.context.items() if value is not None and key != "data_dir"]
        text = ", ".join(parts) or "not recorded"
        budgets[text] = budgets.get(text, 0) + 1
    return [f"- {text} ({count} runs)" for text, count in budgets.items()]


def _status_lines(records: list[RunRecord]) -> list[str]:
    lines = []
    for status, meaning in (
        ("unfinished", "never tested: still running, stopped or crashed (the sweep resumes or restarts them)"),
        ("missing", "no run directory"),
    ):
        runs = [run for run in records if run.status == status]
        if runs:
            lines.append(f"**{status.capitalize()}** ({len(runs)}; {meaning}):\n")
            lines += [f"- `{run.variant}/seed{run.seed}` — {run.run_dir}" for run in runs]
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


def render_markdown(
    title: str,
    records: list[RunRecord],
    rows: list[Row],
    paper: bool,
    diagnostics: list[str] | None = None,
    tools: list[tuple[str, str]] | None = None,
) -> str:
    counts = {status: sum(run.status == status for run in records) for status in ("finished", "unfinished", "missing")}
    lines = [
        f"# Study report: {title}",
        "",
        f"Runs: {counts['finished']} finished (tested), {counts['unfinished']} unfinished, "
        f"{counts['missing']} missing. Only finished runs enter the numbers.",
        "",
        "## What each parameter buys",
        "",
        markdown_table(rows) if rows else "_No finished runs yet._",
        "",
        "Accuracies are top-1 in %, mean ± sample std over the n finished seeds (no ± with one seed). "
        "*Test acc / Mparam* and */ GMAC* divide the mean test accuracy (a fraction, as in `efficiency.json`) by "
        "millions of parameters and by GMACs per sample. *Marginal* is the test accuracy gained, in percentage points, "
        "per extra million parameters (or GMAC) over the previous depth of the same line (same kind, same shortcut, "
        "same overrides).",
        "",
        "## Figures",
        "",
        f"![test error vs parameters]({FIGURES['params']})",
        "",
        f"![test error vs MACs]({FIGURES['macs']})",
        "",
        f"![training curves]({FIGURES['curves']})",
        "",
    ]
    if paper:
        lines += [
            "Crosses: He et al. (2016), Table 6, CIFAR-10 test error of the ResNets with option A shortcuts, "
            "trained on all 50k training images for 64k iterations (ResNet-110: the best of 5 runs, 6.43; "
            "mean 6.61 ± 0.16). They compare with the test numbers here only when these runs used the same "
            "recipe and all 50k images.",
            "",
        ]
    if diagnostics:
        lines += [
            "## Inside the networks: training diagnostics",
            "",
            "Per block, input to output, averaged over the last measured steps of each variant's first finished "
            "seed: the gradient norm of the block's branch weights, and ||F(x)|| / ||x||, how much the block's "
            "branch changes its input (`diagnostics.jsonl`, written with `diagnostics.enabled: true`).",
            "",
            *[f"![{name}]({name})\n" for name in diagnostics],
        ]
    if tools:
        lines += [
            "## Block lesions and pruning",
            "",
            "From `python -m src.lesion` / `python -m src.prune` run on the study's checkpoints:",
            "",
            *[f"![{caption}]({path})\n" for caption, path in tools],
        ]
    lines += ["## Budget of the finished runs", "", *(_budget_lines(records) or ["- none"]), ""]
    status = _status_lines(records)
    if status:
        lines += ["## Not in the numbers", "", *status]
    return "\n".join(lines)


def write_report(
    root: str | Path, out: str | Path | None = None, expected: list | None = None, paper: str = "auto"
) -> tuple[Path, list[RunRecord]]:
    """Write report.md, report.csv and the figures for the runs under ``root``; return the folder and the runs."""
    root = Path(root)
    out = Path(out) if out is not None else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    records = collect_runs(root, expected)
    rows = aggregate(records)
    with_paper = {"on": True, "off": False}.get(paper, None)
    if with_paper is None:
        with_paper = compares_with_paper(records)
    write_csv(rows, out / "report.csv")
    plot_error_vs_cost(rows, "params", out / FIGURES["params"], paper=with_paper)
    plot_error_vs_cost(rows, "macs", out / FIGURES["macs"], paper=with_paper)
    plot_training_curves(rows, read_curves(records), out / FIGURES["curves"])
    diagnostics = diagnostics_figures(records, out)
    tools = tool_figures(records, out)
    (out / "report.md").write_text(render_markdown(str(root), records, rows, with_paper, diagnostics, tools))
    return out, records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.report",
        description="Table and figures of a study, from what its runs saved (never trains).",
    )
    parser.add_argument("source", help="folder of runs (e.g. lightning_logs/cifar10_ladder), or a study file")
    parser.add_argument("--out", help="folder for report.md, report.csv and the figures (default: <root>/report)")
    parser.add_argument(
        "--paper",
        choices=("auto", "on", "off"),
        default="auto",
        help="overlay He et al. Table 6 (auto: when every run is a CIFAR net on CIFAR-10)",
    )
    args = parser.parse_args(argv)
    source = Path(args.source)
    expected = None
    try:
        if source.is_file():
            if not is_study_file(source):
                raise StudyError(f"{args.source!r} is a file but not a study file (it has no 'archs')")
            study = load_study(source)
            root = study.directory
            expected = [(run.variant, run.seed, run.run_dir) for run in plan_runs(study.validate())]
        elif source.is_dir():
            root = source
        else:
            raise StudyError(f"{args.source!r} does not exist; give a log root (a folder of runs) or a study file")
    except StudyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out, records = write_report(root, args.out, expected, args.paper)
    finished = sum(run.status == "finished" for run in records)
    print(f"{finished} finished of {len(records)} runs under {root}; wrote {out}/report.md, report.csv and figures")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
