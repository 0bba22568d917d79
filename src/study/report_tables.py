"""From run directories to the study's table: one row per variant, mean ± std over seeds.

A *variant* is the folder holding a network's seeds (``resnet56``, ``resnet56-shortcutB``); a
*line* is the variants that differ only in depth (``resnet-shortcutB`` = resnet20/56/110 with
shortcut B), along which the marginal columns compare consecutive depths.

Only finished (tested) runs enter the numbers; unfinished and missing runs are listed apart.
Accuracies are fractions as in ``efficiency.json``; ``*_per_mparam`` / ``*_per_gmac`` divide the
mean accuracy by millions of parameters / GMACs (as ``efficiency.json`` does per run), and the
marginal columns are accuracy *percentage points* gained per extra million parameters (or GMAC)
over the previous depth of the same line.
"""

from __future__ import annotations

import csv
import math
import re
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from src.models import parse_arch
from src.study.runs_io import find_run_dirs, read_config, read_efficiency, run_seed, run_status


@dataclass
class RunRecord:
    """What one run left behind (or that it is missing)."""

    variant: str  # relative to the report's root, e.g. "resnet56" or "cifar10_ladder/resnet56-shortcutB"
    seed: int | None
    run_dir: Path
    status: str  # finished | unfinished | missing
    arch: str | None = None
    params: int | None = None
    macs: int | None = None
    best_val_acc: float | None = None
    test_acc: float | None = None
    shortcut: str | None = None
    context: dict[str, Any] = field(default_factory=dict)  # data set, batch size, steps: from the config


def _nested(config: dict | None, *keys: str) -> Any:
    value: Any = config or {}
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _context(config: dict | None) -> dict[str, Any]:
    data = _nested(config, "data") or {}
    init = data.get("init_args", data) if isinstance(data, dict) else {}
    data_name = str(data.get("class_path", "")).rsplit(".", 1)[-1] if isinstance(data, dict) else ""
    dataset = init.get("dataset") if isinstance(init, dict) else None
    return {
        "data": "/".join(str(part) for part in (data_name, dataset) if part) or None,
        "data_dir": init.get("data_dir") if isinstance(init, dict) else None,
        "val_size": init.get("val_size") if isinstance(init, dict) else None,
        "batch_size": init.get("batch_size") if isinstance(init, dict) else None,
        "max_steps": None if _nested(config, "trainer", "max_steps") in (None, -1) else config["trainer"]["max_steps"],
        "max_epochs": _nested(config, "trainer", "max_epochs"),
    }


def read_run(run_dir: Path, variant: str) -> RunRecord:
    config = read_config(run_dir)
    report = read_efficiency(run_dir) or {}
    arch = report.get("arch") or _nested(config, "model", "arch")
    return RunRecord(
        variant=variant,
        seed=run_seed(run_dir, config),
        run_dir=run_dir,
        status=run_status(run_dir),
        arch=arch,
        params=report.get("params_total"),
        macs=report.get("macs_per_sample"),
        best_val_acc=report.get("best_val_acc"),
        test_acc=report.get("test_acc"),
        shortcut=_nested(config, "model", "shortcut"),
        context=_context(config),
    )


def collect_runs(root: str | Path, expected: list[tuple[str, int, Path]] | None = None) -> list[RunRecord]:
    """Every run under ``root``, plus a ``missing`` record for each expected run without a directory.

    ``expected``: ``(variant, seed, run_dir)`` of every run a study plans. Without it, a seed that
    some variants of a folder have and a sibling lacks is reported missing for that sibling.
    """
    root = Path(root)
    records = []
    for run_dir in find_run_dirs(root):
        parent = run_dir.parent
        variant = parent.relative_to(root).as_posix() if root in parent.parents else parent.name
        records.append(read_run(run_dir, variant))
    present = {run.run_dir.resolve() for run in records}
    if expected is not None:
        for variant, seed, run_dir in expected:
            if Path(run_dir).resolve() not in present:
                records.append(RunRecord(variant, seed, Path(run_dir), "missing"))
    else:
        groups: dict[str, list[RunRecord]] = {}
        for run in records:
            groups.setdefault(str(Path(run.variant).parent), []).append(run)
        for siblings in groups.values():
            seeds = {run.seed for run in siblings if run.seed is not None}
            for variant in sorted({run.variant for run in siblings}):
                have = {run.seed for run in siblings if run.variant == variant}
                for seed in sorted(seeds - have):
                    folder = next(run.run_dir.parent for run in siblings if run.variant == variant)
                    records.append(RunRecord(variant, seed, folder / f"seed{seed}", "missing"))
    return sorted(records, key=lambda run: (run.variant, run.seed if run.seed is not None else -1))


@dataclass
class Row:
    """One variant of the study: its size and cost, and its accuracy over the finished seeds."""

    variant: str
    arch: str
    family: str  # cifar | imagenet
    depth: int
    kind: str  # residual | plain
    shortcut: str  # A | B | -
    line: str  # the variants that differ only in depth share it
    params: int | None
    macs: int | None
    n: int
    seeds: str
    best_val_acc_mean: float | None
    best_val_acc_std: float | None
    n_val: int
    test_acc_mean: float | None
    test_acc_std: float | None
    n_test: int
    test_acc_per_mparam: float | None = None
    test_acc_per_gmac: float | None = None
    marginal_from: str | None = None
    marginal_pp_per_extra_mparam: float | None = None
    marginal_pp_per_extra_gmac: float | None = None

    @property
    def test_error_mean(self) -> float | None:
        return None if self.test_acc_mean is None else 100.0 * (1.0 - self.test_acc_mean)

    @property
    def test_error_std(self) -> float:
        return 0.0 if self.test_acc_std is None else 100.0 * self.test_acc_std


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); std is None for fewer than two values."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def _line(variant: str, arch: str, kind: str, family: str) -> str:
    """The variant's name without its depth: ``study/resnet56-shortcutB`` -> ``study/resnet-shortcutB``."""
    folder, _, name = variant.rpartition("/")
    rest = name[len(arch) :] if name.startswith(arch) else ""
    line = ("resnet" if kind == "residual" else "plain") + rest
    if family == "imagenet":
        line = f"imagenet-{line}"
    return f"{folder}/{line}" if folder else line


def aggregate(records: list[RunRecord]) -> list[Row]:
    """One row per variant with at least one finished run, ordered by line then depth; marginal columns filled."""
    rows = []
    for variant in sorted({run.variant for run in records}):
        finished = [run for run in records if run.variant == variant and run.status == "finished"]
        if not finished:
            continue
        arch = finished[0].arch or ""
        try:
            family, residual, depth = parse_arch(arch)
        except ValueError:
            family, residual, depth = "unknown", not arch.startswith("plain"), int(re.sub(r"\D", "", arch) or 0)
        kind = "residual" if residual else "plain"
        shortcut = "-"
        if residual:
            shortcut = next(
                (str(run.shortcut) for run in finished if run.shortcut), "B" if family == "imagenet" else "A"
            )
        vals = [run.best_val_acc for run in finished if run.best_val_acc is not None]
        tests = [run.test_acc for run in finished if run.test_acc is not None]
        val_mean, val_std = mean_std(vals)
        test_mean, test_std = mean_std(tests)
        params = next((run.params for run in finished if run.params), None)
        macs = next((run.macs for run in finished if run.macs), None)
        rows.append(
            Row(
                variant=variant,
                arch=arch,
                family=family,
                depth=depth,
                kind=kind,
                shortcut=shortcut,
                line=_line(variant, arch, kind, family),
                params=params,
                macs=macs,
                n=len(finished),
                seeds=" ".join(str(run.seed) for run in finished if run.seed is not None),
                best_val_acc_mean=val_mean,
                best_val_acc_std=val_std,
                n_val=len(vals),
                test_acc_mean=test_mean,
                test_acc_std=test_std,
                n_test=len(tests),
                test_acc_per_mparam=test_mean / (params / 1e6) if test_mean is not None and params else None,
                test_acc_per_gmac=test_mean / (macs / 1e9) if test_mean is not None and macs else None,
            )
        )
    rows.sort(key=lambda row: (row.line, row.depth, row.variant))
    previous: Row | None = None
    for row in rows:
        if (
            previous is not None
            and previous.line == row.line
            and None not in (row.test_acc_mean, previous.test_acc_mean)
        ):
            gain = 100.0 * (row.test_acc_mean - previous.test_acc_mean)
            row.marginal_from = previous.arch
            if row.params and previous.params and row.params != previous.params:
                row.marginal_pp_per_extra_mparam = gain / ((row.params - previous.params) / 1e6)
            if row.macs and previous.macs and row.macs != previous.macs:
                row.marginal_pp_per_extra_gmac = gain / ((row.macs - previous.macs) / 1e9)
        previous = row
    return rows


CSV_COLUMNS = [name for name in Row.__dataclass_fields__]


def write_csv(rows: list[Row], path: str | Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if value is None else value for key, value in asdict(row).items()})


def _pct(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "—"
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if std is not None else f"{100 * mean:.2f}"


def _num(value: float | None, digits: int = 2) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _size(value: int | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1e9:.2f}G" if value >= 1e9 else f"{value / 1e6:.2f}M"


def markdown_table(rows: list[Row]) -> str:
    """The study's table in Markdown (accuracies in %, mean ± std over n seeds)."""
    lines = [
        "| Model | Shortcut | Params | MACs | n | Best val acc (%) | Test acc (%) | Test acc / Mparam "
        "| Test acc / GMAC | Marginal: pp / extra Mparam | pp / extra GMAC |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        marginal = "—"
        if row.marginal_pp_per_extra_mparam is not None:
            marginal = f"{row.marginal_pp_per_extra_mparam:+.2f} (vs {row.marginal_from})"
        per_gmac_marginal = "—" if row.marginal_pp_per_extra_gmac is None else f"{row.marginal_pp_per_extra_gmac:+.2f}"
        lines.append(
            f"| `{row.variant}` | {row.shortcut} | {row.params:,} | {_size(row.macs)} | {row.n} "
            f"| {_pct(row.best_val_acc_mean, row.best_val_acc_std)} | {_pct(row.test_acc_mean, row.test_acc_std)} "
            f"| {_num(row.test_acc_per_mparam)} | {_num(row.test_acc_per_gmac)} | {marginal} | {per_gmac_marginal} |"
            if row.params is not None
            else f"| `{row.variant}` | {row.shortcut} | — | — | {row.n} "
            f"| {_pct(row.best_val_acc_mean, row.best_val_acc_std)} | {_pct(row.test_acc_mean, row.test_acc_std)} "
            f"| — | — | — | — |"
        )
    return "\n".join(lines)
