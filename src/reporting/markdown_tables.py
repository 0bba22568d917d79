"""The line, comparison and depth tables of ``report.md``, each also returned as CSV rows (``report_*.csv``).

Split from ``src.reporting.markdown`` (which assembles the report) so each file has one job.
"""

from __future__ import annotations

from src.reporting.statistics import Comparison, PowerLaw
from src.reporting.study_rows import (
    DepthPair,
    Pair,
    Row,
    lines_of,
    size_text,
)


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
    return (
        size_text(value) + how.removeprefix("interpolated")
        if how.startswith("interpolated")
        else (f"≤ {size_text(value)} ({how})")
    )


def line_table(rows: list[Row], fits: dict, needed: dict) -> tuple[list[str], list[dict]]:
    md = [
        "| Line | Sizes | Seeds per size | Fit: error % = a · params^-b (+ c), 95% parametric-bootstrap CI on b "
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
        names = f"| `{pair.residual.variant}` | `{pair.plain.variant}` | {c.n_a}/{c.n_b}"
        md.append(f"{names} | {points(c.difference)} | {test_text(c)} | {p_text(c)} | {effect_text(c)} |")
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


def points(value: float | None) -> str:
    """A difference of accuracies (fractions) in signed percentage points, or a dash."""
    return "—" if value is None else f"{100 * value:+.2f}"


def test_text(c: Comparison) -> str:
    """The test's name, with the reason when it could not be run."""
    return c.test if not c.reason else f"{c.test}: {c.reason}"


def p_text(c: Comparison) -> str:
    return "—" if c.p_value is None else f"{c.p_value:.3g}"


def effect_text(c: Comparison) -> str:
    return "—" if c.effect is None else f"{c.effect_name} {c.effect:+.2f}"


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
            cells.append(f"{points(c.difference)} | {test_text(c)}, p = {p_text(c)}")
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
