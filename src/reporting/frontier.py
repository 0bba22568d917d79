"""The parameter-efficiency frontier: which way of spending parameters (and training compute) buys the most.

Drawn for a study whose variants spend their size in more than one way: *deeper* (a line of depths at one
width), *wider* (one family's nets at two or more widths) or *pruned* (a trained net pruned to a smaller size,
``model.pruning``, scored after re-estimating batch norm, or also fine-tuned):

* ``frontier.png``: test error against parameters and against training compute, one series per way of spending
  (drawn by ``src.reporting.frontier_figure``).
* ``report_frontier_pairs.csv`` and a report.md section: every two variants that spend differently, at equal
  parameters (within ``tolerance`` of the larger) and, separately, at equal training compute, every other
  setting equal; the difference of mean test error with its 95% interval, the test, and Holm's adjustment over
  all the exploratory pairs of both tables (``statsmodels`` ``multipletests``). A pair that an analysis plan
  tests (``configs/studies/plans``) is marked with its hypothesis and left out of that family: the plan's report
  tests it, with the plan's correction, and its verdict is the one that counts.
* ``frontier.md``: the answer in two sentences and the figure, for an include block in README.md.

Welch's t between different networks; paired by seed only where two variants provably share their random
draws: a pruned net and the very run it was pruned from (``init_from``), or two nets pruned from the same run.
The equal-compute table leaves such related pairs out -- most of their compute is one and the same training (the
parent's), not two ways of spending it; the equal-parameter table keeps them (what a fine-tune buys at one size).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from statsmodels.stats.multitest import multipletests

from src.reporting import shapes
from src.reporting.frontier_figure import FIGURE
from src.reporting.records import run_key
from src.reporting.statistics import Comparison, compare
from src.reporting.study_rows import Row, size_text
from src.table_files import write_rows

CSV_FILE = "report_frontier_pairs.csv"
ANSWER = "frontier.md"
ALPHA = 0.05
MATCHED = {"params": "parameters", "compute": "training compute"}


def folder(row: Row) -> str:
    """The variant's results folder (``resnet56-p20-ft``): the name a study file and an analysis plan use."""
    return row.runs[0].run_dir.parent.name


def _origins(row: Row) -> dict[int | None, str | None]:
    """Per seed, the trained run its network comes from: a pruned net's parent run, a dense net's own run."""
    return {run.seed: run.parent if row.pruned else run_key(run.run_dir) for run in row.runs}


def related(one: Row, two: Row) -> bool:
    """Whether every common seed of the two is one trained network's: a pruned net and the run it was pruned
    from, or two nets pruned from the same run. Only then do they share their random draws (pairing is right)."""
    if not (one.pruned or two.pruned):
        return False  # two dense variants are two trainings
    mine, theirs = _origins(one), _origins(two)
    common = mine.keys() & theirs.keys()
    return bool(common) and None not in common and all(mine[s] is not None and mine[s] == theirs[s] for s in common)


def is_frontier(rows: list[Row]) -> bool:
    """More than one way of spending: a pruned variant, or one family at two or more widths."""
    if any(row.pruned and row.test_error_mean is not None for row in rows):
        return True
    widths: dict[str, set[int]] = {}
    for row in rows:
        label = shapes.family_label(row)
        if label is not None and row.test_error_mean is not None:
            widths.setdefault(label, set()).add(row.runs[0].width)
    return any(len(found) > 1 for found in widths.values())


# ------------------------------------------------------------------------------------------------ pairs


@dataclass
class MatchedPair:
    """Two variants of equal ``cost`` (``params`` or ``compute``); ``a`` spends no more of it than ``b``."""

    cost: str
    a: Row
    b: Row
    comparison: Comparison  # a minus b, points of test error
    planned: str = ""  # the analysis plan's hypothesis id, when a plan tests this pair
    holm_p: float | None = None  # over the exploratory pairs of both tables

    @property
    def rel_difference(self) -> float:
        low, high = cast(float, _cost(self.a, self.cost)), cast(float, _cost(self.b, self.cost))
        return (high - low) / high

    @property
    def lower(self) -> Row | None:
        difference = self.comparison.difference
        if difference is None or difference == 0:
            return None
        return self.a if difference < 0 else self.b

    @property
    def verdict(self) -> str:
        """In words, by the project's rule: a direction only with n >= 3 per side and a Holm-adjusted p < 0.05."""
        c = self.comparison
        if self.planned:
            return f"planned ({self.planned}): the plan's report tests it"
        if c.p_value is None:
            return f"cannot tell ({c.reason})"
        if min(c.n_a, c.n_b) < 3:
            return f"cannot tell (n = {c.n_a}/{c.n_b})"
        if self.holm_p is not None and self.holm_p < ALPHA and self.lower is not None:
            return f"`{self.lower.variant}` lower"
        return "no difference detected"


def _cost(row: Row, cost: str) -> float | None:
    value = row.params if cost == "params" else row.train_compute_macs
    return float(value) if value else None


def _parents(rows: list[Row]) -> dict[str, Row]:
    """Each pruned variant's parent variant: the dense row among whose runs every one of its runs started (seed
    for seed or not: this only says which settings it was trained with; pairing asks more, ``related``)."""
    dense = [row for row in rows if not row.pruned]
    found = {}
    for row in rows:
        starts = {run.parent for run in row.runs}
        if not row.pruned or None in starts:
            continue
        parent = next((other for other in dense if starts <= set(_origins(other).values())), None)
        if parent is not None:
            found[row.variant] = parent
    return found


def _setting(row: Row, parents: dict[str, Row]) -> tuple[tuple, Any] | None:
    """What must be equal besides the net: the settings beside the architecture (a pruned net: its parent's),
    and the shape (family, block, depth, width) -- None where they cannot be read (a net plugged in by class)."""
    source = parents.get(row.variant, row) if row.pruned else row
    spec = shapes.arch_spec_of(source)
    if spec is None:
        return None
    return shapes.rest(source, shortcut=False), spec


def _comparable(one: Row, two: Row, parents: dict[str, Row]) -> bool:
    first, second = _setting(one, parents), _setting(two, parents)
    if first is None or second is None or first[0] != second[0]:
        return False
    if one.pruned or two.pruned:
        return True  # pruned against anything: different ways, whatever the shapes
    spec_one, spec_two = first[1], second[1]
    # Two dense nets: different shapes of one kind. A residual net against a plain one asks what shortcuts do
    # (the residual/plain and iso-shape tables), not how to spend parameters.
    return spec_one.residual == spec_two.residual and shapes.shape_of(spec_one) != shapes.shape_of(spec_two)


def matched_pairs(rows: list[Row], cost: str, tolerance: float) -> list[MatchedPair]:
    """Every two variants that spend differently with ``cost`` within ``tolerance`` of the larger (see the module
    docstring). Related pairs (one trained network's) are paired by seed and kept only for ``params``."""
    tested = [row for row in rows if row.test_error_mean is not None and _cost(row, cost)]
    parents = _parents(rows)
    pairs = []
    for i, one in enumerate(tested):
        for two in tested[i + 1 :]:
            if not _comparable(one, two, parents):
                continue
            a, b = sorted((one, two), key=lambda row: (cast(float, _cost(row, cost)), row.variant))
            low, high = cast(float, _cost(a, cost)), cast(float, _cost(b, cost))
            if high - low > tolerance * high:
                continue
            paired = related(a, b)
            if paired and cost == "compute":
                continue
            pairs.append(MatchedPair(cost, a, b, _compare(a, b, paired)))
    return sorted(pairs, key=lambda pair: (cast(float, _cost(pair.a, cost)), pair.a.variant, pair.b.variant))


def _compare(a: Row, b: Row, paired: bool) -> Comparison:
    if not paired:
        return compare(a.test_errors, b.test_errors)
    common = {run.seed for run in a.runs} & {run.seed for run in b.runs}

    def shared(row: Row) -> tuple[list[float], list[int | None]]:
        kept = [(run.seed, error) for run, error in zip(row.runs, row.test_errors) if run.seed in common]
        return [error for _, error in kept], [seed for seed, _ in kept]

    (xa, sa), (xb, sb) = shared(a), shared(b)
    return compare(xa, xb, sa, sb)  # the same seeds on both sides: a paired t-test over the shared seeds


def adjust(pairs: list[MatchedPair], planned: dict[frozenset[str], str]) -> None:
    """Mark the planned pairs; Holm over every other pair with a test (one family: both tables; a pair equal in
    both parameters and compute is one test, counted once)."""
    for pair in pairs:
        pair.planned = planned.get(frozenset((folder(pair.a), folder(pair.b))), "")
    tests: dict[frozenset[str], float] = {}
    for pair in pairs:
        if not pair.planned and pair.comparison.p_value is not None:
            tests[frozenset((pair.a.variant, pair.b.variant))] = pair.comparison.p_value
    if tests:
        adjusted = dict(zip(tests, multipletests(list(tests.values()), method="holm")[1]))
        for pair in pairs:
            pair.holm_p = (
                float(adjusted[key]) if (key := frozenset((pair.a.variant, pair.b.variant))) in adjusted else None
            )


def pair_rows(pairs: list[MatchedPair]) -> list[dict[str, Any]]:
    """``report_frontier_pairs.csv``'s rows."""
    rows = []
    for pair in pairs:
        c = pair.comparison
        rows.append(
            {
                "matched_on": pair.cost,
                "a": pair.a.variant,
                "b": pair.b.variant,
                "params_a": pair.a.params,
                "params_b": pair.b.params,
                "train_compute_a": pair.a.train_compute_macs,
                "train_compute_b": pair.b.train_compute_macs,
                "rel_difference": pair.rel_difference,
                "n_a": c.n_a,
                "n_b": c.n_b,
                "test_error_a": pair.a.test_error_mean,
                "test_error_b": pair.b.test_error_mean,
                "difference_error_pp": c.difference,
                "difference_ci_low_pp": c.ci_low,
                "difference_ci_high_pp": c.ci_high,
                "test": c.test,
                "p_value": c.p_value,
                "holm_p": pair.holm_p,
                "effect_size": c.effect,
                "effect_size_name": c.effect_name,
                "planned": pair.planned,
                "verdict": pair.verdict.replace("`", ""),
            }
        )
    return rows


def write_pairs_csv(pairs: list[MatchedPair], path: str | Path) -> None:
    write_rows(pair_rows(pairs), path)


# ------------------------------------------------------------------------------------------------ text


def _pair_line(pair: MatchedPair) -> str:
    c = pair.comparison
    difference = "—" if c.difference is None else f"{c.difference:+.2f}"
    ci = f" [{c.ci_low:+.2f}, {c.ci_high:+.2f}]" if c.ci else ""
    p = "—" if c.p_value is None else f"{c.p_value:.3g}"
    holm = "—" if pair.holm_p is None else f"{pair.holm_p:.3g}"
    test = c.test if not c.reason else f"{c.test}: {c.reason}"
    costs = (
        f"{pair.a.params:,} / {pair.b.params:,}"
        if pair.cost == "params"
        else f"{size_text(pair.a.train_compute_macs)} / {size_text(pair.b.train_compute_macs)}"
    )
    return (
        f"| `{pair.a.variant}` | `{pair.b.variant}` | {costs} ({100 * pair.rel_difference:.1f}%) | {c.n_a}/{c.n_b} "
        f"| {pair.a.test_error_mean:.2f} / {pair.b.test_error_mean:.2f} | {difference}{ci} | {test} | {p} | {holm} "
        f"| {pair.verdict} |"
    )


def frontier_markdown(pairs: list[MatchedPair], tolerance: float, plan_note: str) -> list[str]:
    """report.md's frontier section: the figure, then the equal-parameter and equal-compute tables."""
    family = len({frozenset((pair.a.variant, pair.b.variant)) for pair in pairs if pair.holm_p is not None})
    lines = [
        "## The frontier: deeper, wider or pruned",
        "",
        f"![frontier]({FIGURE})",
        "",
        f"Pairs of variants that spend differently at equal parameters, and at equal training compute (each within "
        f"{100 * tolerance:g}% of the larger, `--iso-tolerance`), every other setting equal (a pruned net: its "
        "parent's). Difference: the first's mean test error minus the second's, points, with its 95% interval. "
        "Welch's t between different networks; paired t over the shared seeds only where both are one trained "
        "network's (a pruned net and the run it was pruned from, or two nets pruned from the same run); such pairs "
        "share their parent's training and appear only at equal parameters. These comparisons are "
        f"exploratory: Holm over the {family} tested pair{'' if family == 1 else 's'} of both tables (a pair in "
        "both counted once; "
        "`report_frontier_pairs.csv`); a "
        "direction is named only with n >= 3 per side and a Holm-adjusted p < 0.05." + plan_note,
        "",
    ]
    for cost in ("params", "compute"):
        chosen = [pair for pair in pairs if pair.cost == cost]
        lines += [f"### At equal {MATCHED[cost]}", ""]
        if not chosen:
            lines += [f"_No two variants that spend differently have equal {MATCHED[cost]}._", ""]
            continue
        lines += [
            f"| First | Second | {MATCHED[cost].capitalize()} | n | Test error (%) | Difference (pp) [95% CI] "
            "| Test | p | Holm p | Verdict |",
            "|---|---|---:|---|---:|---:|---|---:|---:|---|",
            *[_pair_line(pair) for pair in chosen],
            "",
        ]
    return lines


def answer(pairs: list[MatchedPair], figure: str) -> str:
    """``frontier.md``: two sentences (equal parameters, equal compute) and the figure. A pair counts as tested only
    where the rule lets it speak (n >= 3 per side and a test): the rest are said to be not testable yet, never
    "not different" (an audit: n = 2/2 pairs read as "none of the 40 pairs differs", two of them with Holm p < 0.05).
    """
    sentences = []
    for cost in ("params", "compute"):
        chosen = [pair for pair in pairs if pair.cost == cost and not pair.planned]
        if not chosen:
            sentences.append(f"No exploratory pair has equal {MATCHED[cost]}.")
            continue
        tested = [pair for pair in chosen if not pair.verdict.startswith("cannot tell")]
        untested = len(chosen) - len(tested)
        if not tested:
            which = "the one pair has" if untested == 1 else f"each of the {untested} pairs has"
            sentences.append(
                f"At equal {MATCHED[cost]}, no exploratory pair can be told apart yet: {which} fewer than 3 seeds a "
                "side, or no test."
            )
            continue
        kind = "testable exploratory pair" if untested else "exploratory pair"
        later = (
            f" ({untested} more {'is' if untested == 1 else 'are'} not testable yet: fewer than 3 seeds a side, or no "
            "test)"
            if untested
            else ""
        )
        found = [pair for pair in tested if pair.verdict.endswith(" lower")]
        if not found:
            n = sorted({f"{pair.comparison.n_a}/{pair.comparison.n_b}" for pair in tested})
            many = len(tested) > 1
            which = f"none of the {len(tested)} {kind}s differs" if many else f"the one {kind} does not differ"
            sentences.append(
                f"At equal {MATCHED[cost]}, {which} after Holm's correction (n = {', '.join(n)} seeds){later}."
            )
            continue
        wins = []
        for pair in found:
            c, lower = pair.comparison, cast(Row, pair.lower)
            other, n_lower, n_other = (pair.b, c.n_a, c.n_b) if lower is pair.a else (pair.a, c.n_b, c.n_a)
            low, high = sorted((abs(cast(float, c.ci_low)), abs(cast(float, c.ci_high))))
            wins.append(
                f"`{lower.variant}` beats `{other.variant}` by {abs(cast(float, c.difference)):.2f} points of test "
                f"error [95% CI {low:.2f}, {high:.2f}; n = {n_lower}/{n_other}, Holm p = {pair.holm_p:.2g}]"
            )
        sentences.append(
            f"At equal {MATCHED[cost]}, {len(found)} of {len(tested)} {kind}s differ after Holm's correction: "
            + "; ".join(wins)
            + ("" if len(found) == len(tested) else "; no other difference survives the correction")
            + f"{later}."
        )
    return " ".join(sentences) + f"\n\n![the frontier: test error against parameters and training compute]({figure})\n"


def figure_link(out: Path) -> str:
    """The figure's path as README.md (the repository root, where the report command runs) links it."""
    return Path(os.path.relpath(out / FIGURE, Path.cwd())).as_posix()
