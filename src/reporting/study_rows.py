"""From run records to the study's tables: one row per variant, lines, comparisons, statistics, fits, CSV.

The records (each run's numbers, status and variant) come from ``src.reporting.records``.

A *line* (family) is the variants that differ only in size: the depth in the architecture name
(``resnet20``/``resnet56`` with everything else equal). Marginal slopes, power-law fits and the
size needed to reach a target accuracy are computed along a line only, ordered by size.

Only finished (tested) runs with a finite test accuracy enter the numbers; diverged runs
(``status: diverged`` in efficiency.json, or a non-finite test accuracy), unfinished and missing
runs are listed apart. Accuracies are fractions as in ``efficiency.json``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from src.models import families
from src.reporting.records import UNKNOWN_FAMILY, RunRecord
from src.reporting.statistics import Comparison, PowerLaw, Summary, binomial_se, compare, fit_power_law, summarize
from src.table_files import write_rows


@dataclass
class Row:
    """One variant of the study: its size and cost, and its accuracy over the finished seeds."""

    variant: str
    line: str
    arch: str
    family: str  # the name's family (src.models.names: cifar, imagenet, wrn, preact), else "unknown"
    depth: int
    kind: str  # residual | plain | own (a net plugged in by class path: src.reporting.own_nets)
    shortcut: str  # A | B | -
    params: int | None
    macs: int | None
    n: int
    seeds: str
    test_acc_mean: float | None
    test_acc_std: float | None
    test_acc_ci_low: float | None
    test_acc_ci_high: float | None
    test_binomial_se: float | None  # of one run's accuracy on the test set (at the mean accuracy)
    test_samples: int | None
    best_val_acc_mean: float | None
    best_val_acc_std: float | None
    n_val: int
    final_train_acc_mean: float | None
    final_train_acc_std: float | None
    n_train: int
    train_compute_macs: float | None  # mean over seeds
    train_compute_source: str | None
    train_time_sec_mean: float | None
    train_time_sec_std: float | None
    marginal_from: str | None = None
    marginal_pp_per_extra_mparam: float | None = None
    marginal_pp_per_extra_mparam_ci_low: float | None = None  # 95% Welch interval (Welch-Satterthwaite df)
    marginal_pp_per_extra_mparam_ci_high: float | None = None
    marginal_pp_per_extra_gmac: float | None = None
    marginal_pp_per_extra_gmac_ci_low: float | None = None
    marginal_pp_per_extra_gmac_ci_high: float | None = None
    raw_acc_per_mparam: float | None = None
    raw_acc_per_gmac: float | None = None
    runs: list[RunRecord] = field(default_factory=list, repr=False)  # the finished seeds (not a CSV column)
    summary: Summary | None = field(default=None, repr=False)

    @property
    def pruned(self) -> bool:
        """A trained net pruned to a smaller size (``model.pruning``): its params are those it kept."""
        return bool(self.runs) and self.runs[0].pruned

    @property
    def test_errors(self) -> list[float]:
        """Each tested seed's test error (%), in ``runs``' order (a row's runs are its tested seeds)."""
        return [100.0 * (1.0 - cast(float, run.test_acc)) for run in self.runs]

    @property
    def test_error_mean(self) -> float | None:
        return None if self.test_acc_mean is None else 100.0 * (1.0 - self.test_acc_mean)

    @property
    def test_error_std(self) -> float:
        return 0.0 if self.test_acc_std is None else 100.0 * self.test_acc_std

    @property
    def test_error_half_width(self) -> float | None:
        """Half the 95% t-interval of the mean test error, in points; None with one seed."""
        return None if self.summary is None or self.summary.half_width is None else 100.0 * self.summary.half_width


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); std is None for fewer than two values."""
    summary = summarize(values)
    return summary.mean, summary.std


def _row(runs: list[RunRecord]) -> Row:
    first = runs[0]
    # A net plugged in by class path (no family the grammar knows) is neither: report.csv called it "residual"
    # (an audit), though nothing says it has a shortcut at all.
    own = first.family == UNKNOWN_FAMILY
    kind = "own" if own else "residual" if first.residual else "plain"
    shortcut = "-"
    if first.residual and not own:
        family_default = next((f.shortcut for f in families() if f.name == first.family), "-")
        shortcut = next((str(run.shortcut) for run in runs if run.shortcut), family_default)
    tests = summarize([run.test_acc for run in runs])
    vals = summarize([run.best_val_acc for run in runs])
    trains = summarize([run.final_train_acc for run in runs])
    times = summarize([run.train_time_sec for run in runs])
    computes = [run.train_compute for run in runs if run.train_compute]
    sources = sorted({run.compute_source for run in runs if run.compute_source})
    params = next((run.params for run in runs if run.params), None)
    macs = next((run.macs for run in runs if run.macs), None)
    samples = next((run.test_samples for run in runs if run.test_samples), None)
    return Row(
        variant=first.variant,
        line=first.line,
        arch=first.arch or "",
        family=first.family,
        depth=first.depth,
        kind=kind,
        shortcut=shortcut,
        params=params,
        macs=macs,
        n=tests.n,
        seeds=" ".join(str(run.seed) for run in runs if run.seed is not None),
        test_acc_mean=tests.mean,
        test_acc_std=tests.std,
        test_acc_ci_low=tests.ci_low,
        test_acc_ci_high=tests.ci_high,
        test_binomial_se=binomial_se(tests.mean, samples),
        test_samples=samples,
        best_val_acc_mean=vals.mean,
        best_val_acc_std=vals.std,
        n_val=vals.n,
        final_train_acc_mean=trains.mean,
        final_train_acc_std=trains.std,
        n_train=trains.n,
        train_compute_macs=sum(computes) / len(computes) if computes else None,
        train_compute_source="; ".join(sources) or None,
        train_time_sec_mean=times.mean,
        train_time_sec_std=times.std,
        raw_acc_per_mparam=tests.mean / (params / 1e6) if tests.mean is not None and params else None,
        raw_acc_per_gmac=tests.mean / (macs / 1e9) if tests.mean is not None and macs else None,
        runs=runs,
        summary=tests,
    )


def aggregate(records: list[RunRecord]) -> list[Row]:
    """One row per variant with a finished run, ordered by line then size; marginal columns along each line."""
    groups: dict[tuple, list[RunRecord]] = {}
    for run in records:
        if run.status == "finished" and run.test_acc is not None:
            groups.setdefault(run.identity, []).append(run)
    rows = [_row(sorted(runs, key=lambda r: (r.seed is None, r.seed or 0))) for runs in groups.values()]
    rows.sort(key=lambda row: (row.line, row.params or 0, row.depth, row.variant))
    previous: Row | None = None
    for row in rows:
        if previous is not None and previous.runs[0].line_identity == row.runs[0].line_identity:
            _marginal(previous, row)
        previous = row
    return rows


def _marginal(small: Row, big: Row) -> None:
    """Points of test accuracy per extra Mparam / GMAC from ``small`` to ``big`` (next size on the line), with the
    95% Welch interval of the difference of the two means (its df Welch-Satterthwaite's; none below two seeds a
    side or when neither side's seeds vary: a standard error of 0 would claim a certainty the seeds lack)."""
    gain = 100.0 * (cast(float, big.test_acc_mean) - cast(float, small.test_acc_mean))  # lines hold tested rows
    test = compare([run.test_acc for run in big.runs], [run.test_acc for run in small.runs])
    big.marginal_from = small.variant
    for cost, extra in (
        ("mparam", (big.params - small.params) / 1e6 if big.params and small.params else None),
        ("gmac", (big.macs - small.macs) / 1e9 if big.macs and small.macs else None),
    ):
        if extra is None or extra <= 0:
            continue
        setattr(big, f"marginal_pp_per_extra_{cost}", gain / extra)
        if test.ci is not None:
            low, high = test.ci
            setattr(big, f"marginal_pp_per_extra_{cost}_ci_low", 100.0 * low / extra)
            setattr(big, f"marginal_pp_per_extra_{cost}_ci_high", 100.0 * high / extra)


def lines_of(rows: list[Row]) -> dict[str, list[Row]]:
    """``{line: its rows by increasing size}``."""
    lines: dict[str, list[Row]] = {}
    for row in rows:
        lines.setdefault(row.line, []).append(row)
    return lines


# ------------------------------------------------------------------------------------------------ comparisons


@dataclass
class Pair:
    """A residual variant and its plain twin: same depth, same everything but the shortcut."""

    residual: Row
    plain: Row
    comparison: Comparison  # residual minus plain test accuracy


def twin_pairs(rows: list[Row]) -> list[Pair]:
    """Each residual/plain pair of equal depth whose configs differ only in the architecture's kind and shortcut."""

    def rest(row: Row) -> tuple:
        return tuple(i for i in row.runs[0].identity if i[0] not in ("model.arch", "model.shortcut"))

    pairs = []
    for res in (row for row in rows if row.kind == "residual"):
        for plain in (row for row in rows if row.kind == "plain"):
            if (res.depth, res.family, rest(res)) == (plain.depth, plain.family, rest(plain)):
                # Welch: a seed is not shown to give the twins the same draws (a test would have to), so no pairing.
                comparison = compare([run.test_acc for run in res.runs], [run.test_acc for run in plain.runs])
                pairs.append(Pair(res, plain, comparison))
    return pairs


@dataclass
class DepthPair:
    """A deeper variant of a line against the line's shallowest: the paper's two findings are tests of these.

    He et al.: a deeper *plain* net has higher training and test error than a shallower one (degradation);
    a deeper *ResNet* has lower error. Both are compared on test accuracy and on the final training accuracy.
    """

    line: str
    shallow: Row
    deep: Row
    test: Comparison  # deep minus shallow test accuracy
    train: Comparison  # deep minus shallow final training accuracy


def depth_pairs(rows: list[Row]) -> list[DepthPair]:
    """Every deeper variant of each line against the line's shallowest variant (Welch: different networks share no
    random draws -- built after one seed, two depths get other initial weights and another data order)."""
    pairs = []
    for line, members in lines_of(rows).items():
        shallow = min(members, key=lambda row: (row.depth, row.params or 0))
        for deep in members:
            if deep is shallow or deep.depth <= shallow.depth:
                continue
            test = compare([run.test_acc for run in deep.runs], [run.test_acc for run in shallow.runs])
            train = compare([run.final_train_acc for run in deep.runs], [run.final_train_acc for run in shallow.runs])
            pairs.append(DepthPair(line, shallow, deep, test, train))
    return pairs


# ------------------------------------------------------------------------------------------------ scaling


def row_size(row: Row, size: str) -> float | None:
    return {"params": row.params, "macs": row.macs, "compute": row.train_compute_macs}[size]


def power_laws(rows: list[Row], size: str = "params") -> dict[str, PowerLaw | str]:
    """Per line: the fit of test error (%) against ``size``, or why there is none."""
    fits: dict[str, PowerLaw | str] = {}
    for line, members in lines_of(rows).items():
        points: dict[float, Sequence[float]] = {}
        for row in members:
            value = row_size(row, size)
            if value:
                points[value] = row.test_errors
        fits[line] = fit_power_law(points)
    return fits


def default_target(rows: list[Row]) -> float | None:
    """The best mean test accuracy every line reaches: the lowest of the lines' best means."""
    bests = [max(cast(float, row.test_acc_mean) for row in members) for members in lines_of(rows).values()]
    return min(bests) if bests else None


# ------------------------------------------------------------------------------------------------ provenance


def majority_commit(records: list[RunRecord]) -> str | None:
    """The commit more than half of the runs that recorded one were trained at; None when no commit is.

    A study that accumulates (each finished run committed before the next starts) trains every run at its
    own commit: there is then no majority, and no run is the odd one out.
    """
    commits = Counter(run.provenance.get("git_commit") for run in records if run.provenance.get("git_commit"))
    if not commits:
        return None
    commit, count = commits.most_common(1)[0]
    return commit if 2 * count > sum(commits.values()) else None


# ------------------------------------------------------------------------------------------------ output


CSV_COLUMNS = [name for name in Row.__dataclass_fields__ if name not in ("runs", "summary")]


def write_study_csv(rows: list[Row], path: str | Path) -> None:
    """``report.csv``: one line per variant, every column of ``Row`` but its runs and summary."""
    write_rows([{key: getattr(row, key) for key in CSV_COLUMNS} for row in rows], path, CSV_COLUMNS)


def pct(value: float | None, digits: int = 2) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{100 * value:.{digits}f}"


def size_text(value: float | None) -> str:
    if value is None:
        return "—"
    for scale, unit in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def _interval(row: Row) -> str:
    if row.test_acc_ci_low is None:
        return "— (n = 1)" if row.n == 1 else "—"
    return f"[{pct(row.test_acc_ci_low)}, {pct(row.test_acc_ci_high)}]"


def study_markdown_table(rows: list[Row]) -> str:
    """The study's table in Markdown: error, its interval, size and cost first; raw ratios left to the CSV."""
    lines = [
        "| Model | Line | Params | MACs | Training compute | Train time (s) | n | Test error (%) "
        "| Test acc (%) mean ± std | 95% CI (acc %) | Binomial SE (pp) | Best val acc (%) | Final train acc (%) "
        "| Marginal: pp / extra Mparam [95% Welch CI] |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        std = f" ± {pct(row.test_acc_std)}" if row.test_acc_std is not None else ""
        val_std = f" ± {pct(row.best_val_acc_std)}" if row.best_val_acc_std is not None else ""
        train_std = f" ± {pct(row.final_train_acc_std)}" if row.final_train_acc_std is not None else ""
        marginal = "—"
        if row.marginal_pp_per_extra_mparam is not None:
            low, high = row.marginal_pp_per_extra_mparam_ci_low, row.marginal_pp_per_extra_mparam_ci_high
            interval = f" [{low:+.2f}, {high:+.2f}]" if low is not None and high is not None else " (no interval)"
            marginal = f"{row.marginal_pp_per_extra_mparam:+.2f}{interval}"
            marginal += f" (vs {row.marginal_from})"
        time = "—" if row.train_time_sec_mean is None else f"{row.train_time_sec_mean:.1f}"
        lines.append(
            f"| `{row.variant}` | {row.line} | {'—' if row.params is None else f'{row.params:,}'} "
            f"| {size_text(row.macs)} | {size_text(row.train_compute_macs)} | {time} | {row.n} "
            f"| {'—' if row.test_error_mean is None else f'{row.test_error_mean:.2f}'} "
            f"| {pct(row.test_acc_mean)}{std} | {_interval(row)} "
            f"| {pct(row.test_binomial_se)} | {pct(row.best_val_acc_mean)}{val_std} "
            f"| {pct(row.final_train_acc_mean)}{train_std} | {marginal} |"
        )
    return "\n".join(lines)
