"""The report of an analysis plan: each planned hypothesis with its verdict, the power calculation, the arms'
code versions (``report.md``, ``plan.csv``, ``plan.json`` in the plan's ``results`` folder).

Deterministic (no paths of this machine, no timestamps), so ``--check`` regenerates it into a temporary folder
and compares; the arms' provenance (one commit, clean tree) is checked at the same time
(``src.reporting.analysis_plan``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from src.reporting.analysis_plan import (
    METRICS,
    AcrossArms,
    Arm,
    Plan,
    PowerLine,
    Verdict,
    across_arms,
    arm_problems,
    lineage_problems,
    load_arm,
    mannwhitney_floor,
    power_table,
    verdicts,
)

PLAN_FILES = ("report.md", "summary.md", "plan.csv", "plan.json")
SUMMARY = "summary.md"  # the verdict table README.md and docs/results.md include (src.reporting.includes)
PLAN_INDEX = "plan.json"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _p(value: float | None) -> str:
    """A p-value as printed; one that underflowed to 0 is "< 1e-300", never "0" (no test gives certainty)."""
    if value is None:
        return "-"
    if value == 0:
        return "< 1e-300"
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def _interval(low: float | None, high: float | None) -> str:
    """`` [low, high]`` of a 95% interval, or nothing when there is none."""
    return f" [{_num(low)}, {_num(high)}]" if low is not None else ""


def _seeds(n: tuple[int, int] | None) -> str:
    """The secondary measure's seeds, which need not be the primary's (a run with one metric and not the other)."""
    return "" if n is None else f" (n = {n[0]}, {n[1]})"


def _verdict_text(row: Verdict) -> str:
    if row.verdict == "pending":
        return f"pending (n = {row.n_higher}, {row.n_lower})"
    if row.verdict == "not testable":
        return f"not testable: neither side's runs vary (n = {row.n_higher}, {row.n_lower})"
    if row.complete:
        return f"**{row.verdict}**"
    return f"{row.verdict} (interim: {row.n_higher}/{row.planned_higher} and {row.n_lower}/{row.planned_lower} seeds)"


def _rows(rows: list[Verdict]) -> list[dict[str, Any]]:
    return [
        {
            "id": row.hypothesis.id,
            "arm": row.hypothesis.arm,
            "metric": row.hypothesis.metric,
            "higher": row.hypothesis.higher,
            "lower": row.hypothesis.lower,
            "n_higher": row.n_higher,
            "planned_higher": row.planned_higher,
            "n_lower": row.n_lower,
            "planned_lower": row.planned_lower,
            "mean_higher": row.mean_higher,
            "mean_lower": row.mean_lower,
            "difference": row.difference,
            "ci_low": row.ci_low,
            "ci_high": row.ci_high,
            "hedges_g": row.hedges_g,
            "welch_t": row.statistic,
            "p_welch": row.p,
            "p_holm": row.p_holm,
            "p_mannwhitney_exact": row.mannwhitney_p,
            "secondary": row.hypothesis.secondary,
            "secondary_difference": row.secondary_difference,
            "secondary_p_welch": row.secondary_p,
            "secondary_n_higher": row.secondary_n[0] if row.secondary_n else None,
            "secondary_n_lower": row.secondary_n[1] if row.secondary_n else None,
            "left_out": "; ".join(row.left_out),
            "verdict": row.verdict,
            "complete": row.complete,
        }
        for row in rows
    ]


def _across_rows(changes: list[AcrossArms]) -> list[dict[str, Any]]:
    return [
        {
            "metric": item.first.hypothesis.metric,
            "higher": item.first.hypothesis.higher,
            "lower": item.first.hypothesis.lower,
            "first": item.first.hypothesis.id,
            "later": item.later.hypothesis.id,
            "change": item.change.change,
            "ci_low": item.change.ci_low,
            "ci_high": item.change.ci_high,
            "t": item.change.statistic,
            "df": item.change.df,
            "p_uncorrected": item.change.p_value,
        }
        for item in changes
    ]


def _difference(row: Verdict) -> str:
    return f"{_num(row.difference)}{_interval(row.ci_low, row.ci_high)} (n {row.n_higher}, {row.n_lower})"


def _across_markdown(changes: list[AcrossArms]) -> list[str]:
    """The planned differences side by side across arms (the budgets), with how each changed: exploratory."""
    if not changes:
        return []
    lines = [
        "",
        "## The same difference in each arm (exploratory)",
        "",
        "Each planned difference that more than one arm tests, side by side, and how it changed from the first "
        "arm to the later one: the later difference minus the first, its 95% interval and a two-sided t-test over "
        "the four groups of runs (unpaired; Welch-Satterthwaite degrees of freedom). No plan tests the change, so it "
        "has no verdict and no correction.",
        "",
        "| metric | higher - lower | first arm: difference, points [95% CI] (n) | later arm: the same | "
        "change, points [95% CI] | p (uncorrected) |",
        "|---|---|---|---|---|---|",
    ]
    for item in changes:
        h, c = item.first.hypothesis, item.change
        lines.append(
            f"| `{h.metric}` | {h.higher} - {h.lower} | {h.id} ({h.arm}): {_difference(item.first)} | "
            f"{item.later.hypothesis.id} ({item.later.hypothesis.arm}): {_difference(item.later)} | "
            f"{_num(c.change)}{_interval(c.ci_low, c.ci_high)} | {_p(c.p_value)} |"
        )
    return lines


def _power_rows(lines: list[PowerLine]) -> list[dict[str, Any]]:
    return [
        {
            "hypotheses": list(line.assumption.hypotheses),
            "delta": line.assumption.delta,
            "sd": line.assumption.sd,
            "cohens_d": line.effect_size,
            "level": line.assumption.level,
            "seeds_needed": line.seeds_needed,
            "seeds": line.assumption.seeds,
            "power_at_seeds": line.power_at_seeds,
        }
        for line in lines
    ]


def _arm_rows(arms: dict[str, Arm]) -> list[dict[str, Any]]:
    rows = []
    for name, arm in arms.items():
        # What --check reads (arm_problems, lineage_problems): every part of every run, the selection runs' too.
        provenances = [(run, part) for run in arm.checked_runs() for part in run.provenances()]
        commits = sorted({str(part.get("git_commit")) for _, part in provenances})
        rows.append(
            {
                "arm": name,
                "study": arm.study.source,
                "results": arm.study.results,
                "finished_runs": len(arm.runs),
                "planned_runs": sum(arm.planned.values()),
                "commits": commits,
                "dirty_runs": len({id(run) for run, part in provenances if part.get("git_dirty") is not False}),
                "devices": sorted({str(run.provenance.get("device")) for run in arm.runs}),
                "problems": arm_problems(arm) + lineage_problems(arm),
            }
        )
    return rows


def _mannwhitney_floor(rows: list[Verdict], strictest: float) -> str:
    """What the distribution-free check can show at each hypothesis's planned n.

    Why: at 4 runs a side the exact p cannot go below 2/70 = 0.029, above a Holm level of 0.05/4 -- read without
    its floor, a Mann-Whitney p beside a supported verdict looks like a check that failed.
    """
    floors = [(row.hypothesis.id, row.planned_higher, row.planned_lower) for row in rows]
    text = ", ".join(f"{name} {_p(mannwhitney_floor(a, b))} ({a}/{b})" for name, a, b in floors)
    above = [name for name, a, b in floors if mannwhitney_floor(a, b) >= strictest]
    line = f"The smallest Mann-Whitney p there can be at each hypothesis's planned n (2 / C(n1 + n2, n1)): {text}."
    if above:
        line += (
            f" For {', '.join(above)} it is not below the strictest Holm level, alpha / {len(rows)} = "
            f"{strictest:g}: there the check can confirm the direction, never the verdict's level."
        )
    return line


def _markdown(
    plan: Plan,
    rows: list[Verdict],
    power: list[PowerLine],
    arm_rows: list[dict[str, Any]],
    changes: list[AcrossArms],
) -> str:
    m = len(plan.hypotheses)
    lines = [
        f"# {plan.name}: the planned analysis",
        "",
        f"Plan: `{plan.source}`, fixed before the first run of any arm (its history is in git). The family is the "
        f"{m} hypotheses below, each a two-sided Welch t-test between two variants (different networks share "
        f"no random draws: never paired), Holm-adjusted together at alpha = {plan.alpha} (statsmodels "
        "`multipletests`); a hypothesis still without a test counts with p = 1. *Supported*: adjusted p < alpha "
        "and the difference in the predicted direction; *not supported* is not evidence of no effect. The "
        "two-sided Mann-Whitney U p (its exact permutation distribution, ties included) is printed beside each as "
        "a distribution-free check (not corrected). Everything else in the arms' reports is **exploratory**.",
    ]
    lines += ["", _mannwhitney_floor(rows, plan.alpha / m)]
    if any(not row.complete and row.verdict not in ("pending", "not testable") for row in rows):
        lines += [
            "",
            "*Interim* verdicts are read before every planned seed is in. They are no stopping rule (every planned "
            "run is made, whatever they say, so these looks spend no alpha): only the verdict at the planned n is "
            "the study's, and an interim one may still change.",
        ]
    lines += [
        "",
        "| hypothesis | arm | claim | metric | higher: mean (n/planned) | lower: mean (n/planned) | "
        "difference, points [95% CI] | Hedges' g | p Welch | p Holm | p Mann-Whitney | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        h = row.hypothesis
        lines.append(
            f"| {h.id} | {h.arm} | {h.claim} | `{h.metric}` | {h.higher}: {_num(row.mean_higher)} "
            f"({row.n_higher}/{row.planned_higher}) | {h.lower}: {_num(row.mean_lower)} "
            f"({row.n_lower}/{row.planned_lower}) | {_num(row.difference)} "
            f"{_interval(row.ci_low, row.ci_high).strip()} | {_num(row.hedges_g)} | "
            f"{_p(row.p)} | {_p(row.p_holm)} | {_p(row.mannwhitney_p)} | {_verdict_text(row)} |"
        )
    excluded = [(row.hypothesis.id, why) for row in rows for why in row.left_out]
    if excluded:
        lines += ["", "**Committed runs left out of the tests** (counted in no n above; the plan has no rule for "
                  "them, so read the verdicts with them in mind):", ""]  # fmt: skip
        lines += [f"- {hypothesis}: {why}" for hypothesis, why in excluded]
    lines += ["", "Metrics: " + "; ".join(f"`{key}`: {text}" for key, text in METRICS.items()) + "."]
    secondary = [row for row in rows if row.hypothesis.secondary]
    if secondary:
        lines += ["", "Secondary measures (printed beside, not in the family):", ""]
        for row in secondary:
            lines.append(
                f"- {row.hypothesis.id}, `{row.hypothesis.secondary}`: difference {_num(row.secondary_difference)} "
                f"points, p Welch {_p(row.secondary_p)}{_seeds(row.secondary_n)}"
            )
    lines += _across_markdown(changes)
    lines += [
        "",
        "## Power calculation (why these seeds)",
        "",
        f"Two-sided two-sample t-test (statsmodels `TTestIndPower`), target power {plan.power_target}. "
        "Seeds needed are per architecture. `TTestIndPower` is the equal-variance t-test; the planned test is "
        "Welch's, whose power is a little lower when the two seed sds differ. *level* is the Holm step the plan "
        "expects the hypothesis to be tested at (the smallest p is tested at alpha / family size).",
        "",
        "| hypotheses | assumed difference | assumed seed sd | Cohen's d | level | seeds needed | seeds planned | "
        "power at planned |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for line in power:
        a = line.assumption
        lines.append(
            f"| {', '.join(a.hypotheses)} | {a.delta:g} | {a.sd:g} | {line.effect_size:.2f} | {a.level:g} | "
            f"{line.seeds_needed:.1f} | {a.seeds} | {line.power_at_seeds:.2f} |"
        )
    lines += ["", "## Arms: one code version each", "", "| arm | study | runs | commits | dirty runs | devices |"]
    lines.append("|---|---|---|---|---|---|")
    for arm in arm_rows:
        commits = ", ".join(commit[:12] for commit in arm["commits"]) or "-"
        lines.append(
            f"| {arm['arm']} | `{arm['study']}` | {arm['finished_runs']}/{arm['planned_runs']} | {commits} | "
            f"{arm['dirty_runs']} | {'; '.join(arm['devices']) or '-'} |"
        )
    problems = [problem for arm in arm_rows for problem in arm["problems"]]
    if problems:
        heading = "**Not one clean code version per arm, or a pruned run not from its committed parent**"
        heading += " (`--check` fails):"
        lines += ["", heading, ""] + [f"- {p}" for p in problems]
    if plan.exploratory:
        lines += ["", "## Exploratory (no verdicts)", ""] + [f"- {item}" for item in plan.exploratory]
    return "\n".join(lines) + "\n"


def _summary(rows: list[Verdict]) -> str:
    """The verdicts in a few lines, for README.md and docs/results.md (points of error, 95% Welch intervals)."""
    lines = [
        "| planned hypothesis | n (of planned) | difference, points [95% CI] | p Welch / Holm | verdict |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        h = row.hypothesis
        lines.append(
            f"| {h.id}: {h.claim} (`{h.metric}`, {h.higher} - {h.lower}) | {row.n_higher}/{row.planned_higher}, "
            f"{row.n_lower}/{row.planned_lower} | {_num(row.difference)}{_interval(row.ci_low, row.ci_high)} | "
            f"{_p(row.p)} / {_p(row.p_holm)} "
            f"| {_verdict_text(row)} |"
        )
    return "\n".join(lines) + "\n"


def write_plan_report(plan: Plan, out: str | Path | None = None) -> tuple[Path, list[Verdict], list[str]]:
    """Write the plan's report into ``out`` (default: its ``results`` folder); ``(folder, verdicts, problems)``."""
    arms = {name: load_arm(name, study) for name, study in plan.arms.items()}
    rows, power, arm_rows = verdicts(plan, arms), power_table(plan), _arm_rows(arms)
    changes = across_arms(rows, arms)
    folder = Path(out or plan.results)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.md").write_text(_markdown(plan, rows, power, arm_rows, changes))
    (folder / SUMMARY).write_text(_summary(rows))
    table = _rows(rows)
    with open(folder / "plan.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    record = {
        "plan": plan.source,
        "verdicts": table,
        "across_arms": _across_rows(changes),
        "power": _power_rows(power),
        "arms": arm_rows,
    }
    (folder / PLAN_INDEX).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return folder, rows, [problem for arm in arm_rows for problem in arm["problems"]]
