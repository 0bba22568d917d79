"""From run directories to the study's tables: variants from resolved configs, lines, statistics, fits.

A *variant* is everything a run's resolved ``config.yaml`` fixes except its seed and the fields
that only say where things are written (run_dir, the logger, checkpoint folder, progress bar,
measurement callbacks): two runs are averaged only when they are the same variant. Folder names
never decide it -- runs of two architectures under one logger name (``version_0``, ``version_1``)
stay apart. A variant's name is its architecture plus every setting that differs within the study
(``resnet8 width=2``).

A *line* (family) is the variants that differ only in size: the depth in the architecture name
(``resnet20``/``resnet56`` with everything else equal). Marginal slopes, power-law fits and the
size needed to reach a target accuracy are computed along a line only, ordered by size.

Only finished (tested) runs with a finite test accuracy enter the numbers; diverged runs
(``status: diverged`` in efficiency.json, or a non-finite test accuracy), unfinished and missing
runs are listed apart. Accuracies are fractions as in ``efficiency.json``.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.models import parse_arch
from src.reporting import protocol
from src.reporting.paper import protocol_differences
from src.reporting.statistics import Comparison, PowerLaw, Summary, binomial_se, compare, fit_power_law, summarize
from src.runs import (
    find_run_dirs,
    read_config,
    read_data_record,
    read_efficiency,
    read_scalars,
    run_seed,
    run_status,
)

# Config fields that say where a run writes or how it shows progress, not what it trains: never part of a variant.
NOT_IDENTITY = (
    "seed_everything",
    "run_dir",
    "ckpt_path",
    "weights_only",
    "test_after_fit",  # whether and when it was tested, not what it trained (the protocol line says)
    "trainer.logger",
    "trainer.default_root_dir",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "checkpoint.dirpath",
    "data.init_args.num_workers",
    "data.init_args.pin_memory",
    "efficiency",
    "diagnostics",
)


@dataclass
class RunRecord:
    """What one run left behind (or that it is missing)."""

    variant: str  # the variant's name (arch + settings that differ in the study); the folder for missing runs
    seed: int | None
    run_dir: Path
    status: str  # finished | diverged | unfinished | missing
    arch: str | None = None
    params: int | None = None
    macs: int | None = None
    best_val_acc: float | None = None
    test_acc: float | None = None
    final_train_acc: float | None = None  # the last epoch's running training accuracy (augmented, as trained)
    test_samples: int | None = None
    shortcut: str | None = None
    train_time_sec: float | None = None
    train_compute: float | None = None  # MACs spent training: 3 x MACs x images seen
    compute_source: str | None = None
    diverged_step: int | None = None
    diverged_reason: str | None = None
    identity: tuple = ()  # the config fields that make the variant
    settings: dict[str, Any] = field(default_factory=dict)  # flattened identity, for naming
    context: dict[str, Any] = field(default_factory=dict)  # protocol description (src.reporting.protocol.describe)
    provenance: dict[str, Any] = field(default_factory=dict)
    paper_differences: list[str] = field(default_factory=list)
    line: str = ""
    line_identity: tuple = ()
    depth: int = 0
    family: str = "unknown"
    residual: bool = True


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model.optimizer.init_args.lr": 0.1, ...}``; lists stay values."""
    if isinstance(config, dict):
        flat: dict[str, Any] = {}
        for key, value in config.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): config}


def _identity_fields(config: dict) -> dict[str, str]:
    flat = flatten(config)
    keep = {}
    for key, value in flat.items():
        if any(key == skip or key.startswith(skip + ".") for skip in NOT_IDENTITY):
            continue
        keep[key] = json.dumps(value, sort_keys=True, default=str)
    return keep


def _training_compute(report: dict, config: dict | None) -> tuple[float | None, str | None]:
    """3 x MACs per sample x images the optimizer stepped over, and where the image count came from."""
    macs = report.get("macs_per_sample")
    if not macs:
        return None, None
    if isinstance(report.get("train_images_seen"), int):
        return 3.0 * macs * report["train_images_seen"], "train_images_seen"
    steps = report.get("global_step")
    batch = report.get("global_batch_size")
    if steps and batch:
        return 3.0 * macs * batch * steps, "global batch x steps (efficiency.json has no train_images_seen)"
    batch = protocol.nested(config, "data", "init_args", "batch_size")
    steps = protocol.nested(config, "trainer", "max_steps")
    if steps and steps > 0 and batch:
        return 3.0 * macs * batch * steps, "batch size x max_steps (config; efficiency.json has no image count)"
    return None, None


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def read_run(run_dir: Path, variant: str) -> RunRecord:
    """One run as the report sees it; ``variant`` is a provisional name (the folder) until ``name_variants``."""
    config = read_config(run_dir)
    report = read_efficiency(run_dir) or {}
    data = read_data_record(run_dir)
    arch = report.get("arch") or protocol.nested(config, "model", "arch")
    status = run_status(run_dir)
    record = RunRecord(
        variant=variant,
        seed=run_seed(run_dir, config),
        run_dir=run_dir,
        status=status,
        arch=arch,
        params=report.get("params_total"),
        macs=report.get("macs_per_sample"),
        best_val_acc=_finite(report.get("best_val_acc")),
        test_acc=_finite(report.get("test_acc")),
        test_samples=report.get("test_samples"),
        shortcut=protocol.nested(config, "model", "shortcut"),
        train_time_sec=_finite(report.get("train_time_sec")),
        diverged_step=report.get("diverged_step"),
        diverged_reason=report.get("diverged_reason"),
        provenance=report.get("provenance") if isinstance(report.get("provenance"), dict) else {},
    )
    if status == "finished" and record.test_acc is None:  # tested, but the accuracy is NaN / inf
        record.status = "diverged"
        record.diverged_step = report.get("global_step")
        record.diverged_reason = f"test accuracy is {report.get('test_acc')} (no status: diverged recorded)"
    record.train_compute, record.compute_source = _training_compute(report, config)
    if record.status == "finished":
        record.final_train_acc = final_train_accuracy(run_dir)
    if report or config:
        record.context = protocol.describe(config, report, data)
        split, checkpoint = protocol.test_protocol(config, report, data)
        record.paper_differences = protocol_differences(config, report, data, split, checkpoint)
    # Without config.yaml nothing says what the run was beyond its architecture: only seeds of one folder group.
    fields = _identity_fields(config) if config else {"config.yaml": json.dumps(f"absent: {run_dir.parent}")}
    if arch:
        fields["model.arch"] = json.dumps(arch)
    try:
        record.family, record.residual, record.depth = parse_arch(arch or "")
    except ValueError:
        record.residual = not str(arch).startswith("plain")
        record.depth = int(re.sub(r"\D", "", str(arch)) or 0)
    if not record.residual:
        fields.pop("model.shortcut", None)  # plain nets have no shortcut: the setting does not apply to them
    record.settings = fields
    record.identity = tuple(sorted(fields.items()))
    return record


def final_train_accuracy(run_dir: Path) -> float | None:
    """The run's last logged ``train/acc``: the final epoch's running accuracy on the augmented training batches.

    It is He et al.'s *training error* (Fig. 6's thin lines are measured the same way, on augmented
    batches while training), so the degradation finding can be checked on it: a deeper plain net that is
    worse on held-out images *and* on its own training images is not overfitting.
    """
    _, values = read_scalars(run_dir, ["train/acc"]).get("train/acc", ([], []))
    return _finite(values[-1]) if values else None


def _stem(arch: str, family: str) -> str:
    """The architecture without its depth: ``resnet56`` -> ``resnet``; ImageNet nets get their own stem."""
    stem = re.sub(r"\d+", "", arch or "?")
    return f"imagenet-{stem}" if family == "imagenet" else stem


def _value(text: str) -> str:
    value = json.loads(text)
    return "none" if value is None else str(value)


UNSET = json.dumps("unset")  # a setting some runs' configs lack (e.g. saved by an older version)


def name_variants(records: list[RunRecord]) -> None:
    """Name each run's variant and line from the settings that differ within the study (never from folders)."""
    present = [run for run in records if run.identity]
    configured = [run for run in present if "config.yaml" not in run.settings]
    keys = sorted({key for run in configured for key in run.settings})

    def values(key: str) -> set[str]:
        # A plain net lacks model.shortcut (it does not apply): that absence is not a difference.
        return {
            run.settings.get(key, UNSET)
            for run in configured
            if key in run.settings or not (key == "model.shortcut" and not run.residual)
        }

    differing = [key for key in keys if key != "model.arch" and len(values(key)) > 1]
    short = {}
    for key in differing:
        tail = key.rsplit(".", 1)[-1]
        short[key] = tail if sum(k.rsplit(".", 1)[-1] == tail for k in differing) == 1 else key
    for run in present:
        if "config.yaml" in run.settings:
            extras = [f"[no config.yaml: {run.run_dir.parent.name}]"]
        else:
            extras = [
                f"{short[key]}={_value(run.settings.get(key, UNSET))}"
                for key in differing
                if key in run.settings or not (key == "model.shortcut" and not run.residual)
            ]
        suffix = (" " + ", ".join(extras)) if extras else ""
        run.variant = f"{run.arch}{suffix}"
        run.line = f"{_stem(run.arch or '?', run.family)}{suffix}"
        run.line_identity = (_stem(run.arch or "?", run.family), *(i for i in run.identity if i[0] != "model.arch"))


def forget_settings_older_runs_lack(records: list[RunRecord]) -> None:
    """Leave out of every identity a setting that only some runs' configs have, all with one value.

    Such a key is an option added to the code after the older runs were made (the project's rule: a new
    option's default keeps the old behaviour), so it cannot tell the runs apart; without this, a study
    whose seeds straddle the change would split every variant in two. A key the newer runs set to
    different values still tells them apart.
    """
    configured = [run for run in records if run.identity and "config.yaml" not in run.settings]
    for key in sorted({key for run in configured for key in run.settings}):
        having = [run for run in configured if key in run.settings]
        if key in ("model.arch", "model.shortcut") or len(having) == len(configured):
            continue
        if len({run.settings[key] for run in having}) == 1:
            for run in having:
                del run.settings[key]
    for run in configured:
        run.identity = tuple(sorted(run.settings.items()))


def collect_runs(root: str | Path, expected: list[tuple[str, int, Path]] | None = None) -> list[RunRecord]:
    """Every run under ``root``, plus a ``missing`` record for each expected run without a directory.

    ``expected``: ``(variant, seed, run_dir)`` of every run a study plans. Without it, a seed that
    some run folders of a directory have and a sibling folder lacks is reported missing for that sibling
    (a guess about the layout, used only to list missing runs, never to group results).
    """
    root = Path(root)
    records = []
    for run_dir in find_run_dirs(root):
        parent = run_dir.parent
        folder = parent.relative_to(root).as_posix() if root in parent.parents else parent.name
        records.append(read_run(run_dir, folder))
    folders = {id(run): run.variant for run in records}
    forget_settings_older_runs_lack(records)
    name_variants(records)
    present = {run.run_dir.resolve() for run in records}
    if expected is not None:
        for variant, seed, run_dir in expected:
            if Path(run_dir).resolve() not in present:
                records.append(RunRecord(variant, seed, Path(run_dir), "missing"))
    else:
        groups: dict[str, list[RunRecord]] = {}
        for run in records:
            groups.setdefault(str(Path(folders[id(run)]).parent), []).append(run)
        for siblings in groups.values():
            seeds = {run.seed for run in siblings if run.seed is not None}
            for folder in sorted({folders[id(run)] for run in siblings}):
                have = {run.seed for run in siblings if folders[id(run)] == folder}
                directory = next(run.run_dir.parent for run in siblings if folders[id(run)] == folder)
                if not all(run.run_dir.name.startswith("seed") for run in siblings):
                    continue  # not the sweep's <variant>/seed<k> layout: nothing to infer
                for seed in sorted(seeds - have):
                    records.append(RunRecord(folder, seed, directory / f"seed{seed}", "missing"))
    return sorted(records, key=lambda run: (run.variant, run.seed if run.seed is not None else -1))


@dataclass
class Row:
    """One variant of the study: its size and cost, and its accuracy over the finished seeds."""

    variant: str
    line: str
    arch: str
    family: str  # cifar | imagenet
    depth: int
    kind: str  # residual | plain
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
    marginal_pp_per_extra_mparam_se: float | None = None
    marginal_pp_per_extra_gmac: float | None = None
    marginal_pp_per_extra_gmac_se: float | None = None
    raw_acc_per_mparam: float | None = None
    raw_acc_per_gmac: float | None = None
    runs: list[RunRecord] = field(default_factory=list, repr=False)  # the finished seeds (not a CSV column)
    summary: Summary | None = field(default=None, repr=False)

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
    kind = "residual" if first.residual else "plain"
    shortcut = "-"
    if first.residual:
        shortcut = next((str(run.shortcut) for run in runs if run.shortcut), "B" if first.family == "imagenet" else "A")
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
    """Points of test accuracy per extra Mparam / GMAC from ``small`` to ``big`` (next size on the line)."""
    gain = 100.0 * (big.test_acc_mean - small.test_acc_mean)
    se = None
    if small.summary and big.summary and small.summary.sem is not None and big.summary.sem is not None:
        se = 100.0 * math.sqrt(small.summary.sem**2 + big.summary.sem**2)
    big.marginal_from = small.variant
    if big.params and small.params and big.params > small.params:
        extra = (big.params - small.params) / 1e6
        big.marginal_pp_per_extra_mparam = gain / extra
        big.marginal_pp_per_extra_mparam_se = None if se is None else se / extra
    if big.macs and small.macs and big.macs > small.macs:
        extra = (big.macs - small.macs) / 1e9
        big.marginal_pp_per_extra_gmac = gain / extra
        big.marginal_pp_per_extra_gmac_se = None if se is None else se / extra


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
                comparison = compare(
                    [run.test_acc for run in res.runs],
                    [run.test_acc for run in plain.runs],
                    [run.seed for run in res.runs],
                    [run.seed for run in plain.runs],
                )
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
    """Every deeper variant of each line against the line's shallowest variant (paired by seed when they align)."""
    pairs = []
    for line, members in lines_of(rows).items():
        shallow = min(members, key=lambda row: (row.depth, row.params or 0))
        for deep in members:
            if deep is shallow or deep.depth <= shallow.depth:
                continue
            seeds = ([run.seed for run in deep.runs], [run.seed for run in shallow.runs])
            test = compare([run.test_acc for run in deep.runs], [run.test_acc for run in shallow.runs], *seeds)
            train = compare(
                [run.final_train_acc for run in deep.runs], [run.final_train_acc for run in shallow.runs], *seeds
            )
            pairs.append(DepthPair(line, shallow, deep, test, train))
    return pairs


# ------------------------------------------------------------------------------------------------ scaling


SIZES = {"params": "parameters", "macs": "MACs per sample", "compute": "training compute (MACs)"}


def row_size(row: Row, size: str) -> float | None:
    return {"params": row.params, "macs": row.macs, "compute": row.train_compute_macs}[size]


def power_laws(rows: list[Row], size: str = "params") -> dict[str, PowerLaw | str]:
    """Per line: the fit of test error (%) against ``size``, or why there is none."""
    fits: dict[str, PowerLaw | str] = {}
    for line, members in lines_of(rows).items():
        points = {
            row_size(row, size): [100.0 * (1.0 - run.test_acc) for run in row.runs]
            for row in members
            if row_size(row, size)
        }
        fits[line] = fit_power_law(points)
    return fits


def default_target(rows: list[Row]) -> float | None:
    """The best mean test accuracy every line reaches: the lowest of the lines' best means."""
    bests = [max(row.test_acc_mean for row in members) for members in lines_of(rows).values()]
    return min(bests) if bests else None


# ------------------------------------------------------------------------------------------------ provenance


def majority_commit(records: list[RunRecord]) -> str | None:
    commits = Counter(run.provenance.get("git_commit") for run in records if run.provenance.get("git_commit"))
    return commits.most_common(1)[0][0] if commits else None


# ------------------------------------------------------------------------------------------------ output


CSV_COLUMNS = [name for name in Row.__dataclass_fields__ if name not in ("runs", "summary")]


def write_csv(rows: list[Row], path: str | Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if getattr(row, key) is None else getattr(row, key) for key in CSV_COLUMNS})


def write_rows(rows: list[dict[str, Any]], path: str | Path) -> None:
    """A plain CSV of dicts (the lines and comparisons tables); a header-only file when there are none."""
    columns = list(rows[0]) if rows else ["none"]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in rows)


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


def markdown_table(rows: list[Row]) -> str:
    """The study's table in Markdown: error, its interval, size and cost first; raw ratios left to the CSV."""
    lines = [
        "| Model | Line | Params | MACs | Training compute | Train time (s) | n | Test error (%) "
        "| Test acc (%) mean ± std | 95% CI (acc %) | Binomial SE (pp) | Best val acc (%) | Final train acc (%) "
        "| Marginal: pp / extra Mparam ± SE |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        std = f" ± {pct(row.test_acc_std)}" if row.test_acc_std is not None else ""
        val_std = f" ± {pct(row.best_val_acc_std)}" if row.best_val_acc_std is not None else ""
        train_std = f" ± {pct(row.final_train_acc_std)}" if row.final_train_acc_std is not None else ""
        marginal = "—"
        if row.marginal_pp_per_extra_mparam is not None:
            se = row.marginal_pp_per_extra_mparam_se
            marginal = f"{row.marginal_pp_per_extra_mparam:+.2f}" + (f" ± {se:.2f}" if se is not None else " (no SE)")
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
