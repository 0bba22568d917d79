"""The report's section on your own networks (a study's class-path ``archs`` entries) against its built-in ones.

Why: a network plugged in by class path has no residual twin and no depth line, so neither the residual/plain
nor the depth comparisons reach it; without this section it would sit in the size table untested. Each of
your networks is compared with every built-in variant of the study on test accuracy: different networks
share no random draws, so the test is always unpaired (Welch), never paired by seed. These comparisons are
exploratory (a study's planned hypotheses live in its analysis plan, ``src.reporting.analysis_plan``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from src.reporting.markdown_tables import effect_text, p_text, points, test_text
from src.reporting.records import UNKNOWN_FAMILY
from src.reporting.statistics import Comparison, compare
from src.reporting.study_rows import Row

CSV_FILE = "report_own_nets.csv"


@dataclass
class OwnPair:
    """One of your networks against one built-in variant: ``comparison`` is yours minus the built-in's accuracy."""

    own: Row
    built_in: Row
    comparison: Comparison


def own_net_pairs(rows: list[Row]) -> list[OwnPair]:
    """Every (your network, built-in variant) pair, each tested unpaired (no seeds given: Welch)."""
    own = [row for row in rows if row.family == UNKNOWN_FAMILY]
    built_in = [row for row in rows if row.family != UNKNOWN_FAMILY]
    return [
        OwnPair(mine, other, compare([run.test_acc for run in mine.runs], [run.test_acc for run in other.runs]))
        for mine in own
        for other in built_in
    ]


def own_net_rows(pairs: list[OwnPair]) -> list[dict[str, Any]]:
    """``report_own_nets.csv``: one row per pair, sizes, n, the difference of test accuracy and its test."""
    table = []
    for pair in pairs:
        c = pair.comparison
        table.append(
            {
                "own": pair.own.variant,
                "built_in": pair.built_in.variant,
                "params_own": pair.own.params,
                "params_built_in": pair.built_in.params,
                "n_own": c.n_a,
                "n_built_in": c.n_b,
                "difference_acc": c.difference,
                "ci_low": c.ci_low,
                "ci_high": c.ci_high,
                "test": c.test,
                "p_value": c.p_value,
                "effect_size": c.effect,
                "effect_size_name": c.effect_name,
                "note": c.reason,
            }
        )
    return table


def own_net_markdown(pairs: list[OwnPair]) -> list[str]:
    """The section's lines (none when the study has no network of your own)."""
    if not pairs:
        return []
    lines = [
        "## Your networks against the built-in ones (exploratory)",
        "",
        "| Yours | Built-in | Params (yours / built-in) | n | Test acc difference (pp, yours − built-in) "
        "[95% CI] | Test, p | Effect size |",
        "|---|---|---:|---|---:|---|---:|",
    ]
    for pair in pairs:
        c = pair.comparison
        params = " / ".join("—" if p is None else f"{p:,}" for p in (pair.own.params, pair.built_in.params))
        interval = "" if c.ci is None else f" [{points(c.ci_low)}, {points(c.ci_high)}]"
        lines.append(
            f"| `{pair.own.variant}` | `{pair.built_in.variant}` | {params} | {c.n_a}/{c.n_b} "
            f"| {points(c.difference)}{interval} | {test_text(c)}, {p_text(c)} | {effect_text(c)} |"
        )
    lines += [
        "",
        "Welch's t-test (Hedges' g) for every pair: different networks share no random draws, so no pairing by "
        "seed. Not corrected for multiplicity and not planned: read these as leads for a planned comparison.",
        "",
    ]
    return lines
