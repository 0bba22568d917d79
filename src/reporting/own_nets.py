"""The report's section on your own networks (a study's class-path ``archs`` entries) against its built-in ones.

Why: a network plugged in by class path has no residual twin and no depth line, so neither the residual/plain
nor the depth comparisons reach it; without this section it would sit in the size table untested. Each of
your networks is compared with every built-in variant of the study on test accuracy: different networks
share no random draws, so the test is always unpaired (Welch), never paired by seed. These comparisons are
exploratory (a study's planned hypotheses live in its analysis plan, ``src.reporting.analysis_plan``).
"""

from __future__ import annotations

from typing import Any

from src.reporting.statistics import compare
from src.reporting.study_rows import Row

CSV_FILE = "report_own_nets.csv"
UNKNOWN_FAMILY = "unknown"  # what records.py gives a name the grammar does not know: a class-path network


def own_net_rows(rows: list[Row]) -> list[dict[str, Any]]:
    """One row per (your network, built-in variant): sizes, n, the difference of test accuracy and its test."""
    own = [row for row in rows if row.family == UNKNOWN_FAMILY]
    built_in = [row for row in rows if row.family != UNKNOWN_FAMILY]
    table = []
    for mine in own:
        for other in built_in:
            c = compare([run.test_acc for run in mine.runs], [run.test_acc for run in other.runs])  # no seeds: Welch
            table.append(
                {
                    "own": mine.variant,
                    "built_in": other.variant,
                    "params_own": mine.params,
                    "params_built_in": other.params,
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


def _points(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:+.2f}"


def own_net_markdown(table: list[dict[str, Any]]) -> list[str]:
    """The section's lines (none when the study has no network of your own)."""
    if not table:
        return []
    lines = [
        "## Your networks against the built-in ones (exploratory)",
        "",
        "| Yours | Built-in | Params (yours / built-in) | n | Test acc difference (pp, yours − built-in) "
        "[95% CI] | Test, p | Effect size |",
        "|---|---|---:|---|---:|---|---:|",
    ]
    for row in table:
        params = " / ".join("—" if p is None else f"{p:,}" for p in (row["params_own"], row["params_built_in"]))
        interval = "" if row["ci_low"] is None else f" [{_points(row['ci_low'])}, {_points(row['ci_high'])}]"
        test = row["test"] if not row["note"] else f"{row['test']}: {row['note']}"
        p = "—" if row["p_value"] is None else f"{row['p_value']:.3g}"
        effect = "—" if row["effect_size"] is None else f"{row['effect_size_name']} {row['effect_size']:+.2f}"
        lines.append(
            f"| `{row['own']}` | `{row['built_in']}` | {params} | {row['n_own']}/{row['n_built_in']} "
            f"| {_points(row['difference_acc'])}{interval} | {test}, {p} | {effect} |"
        )
    lines += [
        "",
        "Welch's t-test (Hedges' g) for every pair: different networks share no random draws, so no pairing by "
        "seed. Not corrected for multiplicity and not planned: read these as leads for a planned comparison.",
        "",
    ]
    return lines
