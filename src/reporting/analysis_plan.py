"""A study's analysis plan, fixed before its runs, and the verdicts it gives on the committed runs.

Why: a report that tests every pair it finds, picks the significant ones and corrects nothing is a
fishing trip. A plan file (``configs/studies/plans/*.yaml``, example: ``cifar10_depth.yaml``) names, before the
first run, the few hypotheses a study exists to test (each a directional difference of one metric between
two architectures of one arm), the test (two-sided Welch: different networks share no random draws), the
correction over the whole family (Holm, ``statsmodels.stats.multitest.multipletests``), a distribution-free
check printed beside each (Mann-Whitney U, its exact permutation distribution, ties included), and the power
calculation behind the seeds (``statsmodels.stats.power.TTestIndPower``). ``python -m src.report <plan file>``
applies it to the arms' committed runs; everything else in the arms' reports is exploratory.

A hypothesis is *supported* when its Holm-adjusted p is below ``alpha`` and the difference has the predicted
sign; *not supported* otherwise (which is not evidence of no effect); *pending* while either side has fewer
than two finished runs; *not testable* when neither side's runs vary (Welch's t is undefined; the check still
prints). The family always has every planned hypothesis (a pending one counts with p = 1), so
an interim verdict can only get easier to reach as runs come in, never by leaving a hypothesis out.

Each arm is one code version: ``arm_problems`` (``--check``) fails when an arm's runs name more than one git
commit, one trained from a dirty tree, or one whose commit is unknown. Every provenance a run had counts (the
parts before a resume, ``earlier_provenance``, trained its weights too), and so do the selection runs that chose
the arm's settings (``<results>/select/``): they are no results, but the results depend on their choice.
And a pruned run is its committed parent's (``lineage_problems``): it started from the run its study plans, as that
run is committed (the checkpoint stays out of git; the study driver compares its sha256 before the commit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower

from src.modules.start_weights import parent_facts
from src.reporting.records import RunRecord, collect_runs, read_run, run_key
from src.reporting.statistics import Change, compare, difference_change
from src.runs import read_efficiency
from src.sweeping.plan import plan_runs
from src.sweeping.study import Study, StudyError, load_study

PLAN_KEYS = ("name", "results", "arms", "alpha", "correction", "test", "check", "hypotheses", "power", "exploratory")
HYPOTHESIS_KEYS = ("id", "arm", "claim", "metric", "secondary", "higher", "lower")
ASSUMPTION_KEYS = ("for", "delta", "sd", "level", "seeds")
METRICS = {
    "test_error": "test error (%) on the test split, best-by-validation checkpoint",
    "train_eval_error": "training error (%), every training image, eval mode, final weights (train_eval_acc)",
    "train_error_running": "training error (%), the last epoch's running mean (augmented, train mode)",
}


class PlanError(ValueError):
    """A plan file that cannot be applied; the message says what is wrong and what is valid."""


@dataclass(frozen=True)
class Hypothesis:
    id: str
    arm: str
    claim: str
    metric: str
    higher: str  # the variant (its results folder: arch or entry name) predicted to have the higher ``metric``
    lower: str
    secondary: str | None = None  # a second measure of the same quantity, printed beside, not tested in the family


@dataclass(frozen=True)
class Assumption:
    """One line of the power calculation: the effect and spread assumed, the level, the seeds chosen."""

    hypotheses: tuple[str, ...]
    delta: float
    sd: float
    level: float
    seeds: int


@dataclass
class Plan:
    name: str
    results: str
    arms: dict[str, str]  # arm -> study file
    hypotheses: list[Hypothesis]
    alpha: float = 0.05
    correction: str = "holm"
    test: str = "welch"
    check: str = "mannwhitney"
    power_target: float = 0.8
    assumptions: list[Assumption] = field(default_factory=list)
    exploratory: list[str] = field(default_factory=list)
    source: str = ""


def is_plan_file(path: str | Path) -> bool:
    """Whether a YAML file is an analysis plan (it has 'hypotheses'), not a study or a run config."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "hypotheses" in data


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise PlanError(message)


def _hypothesis(entry: Any, arms: dict[str, str], where: str) -> Hypothesis:
    _require(isinstance(entry, dict), f"{where}: each hypothesis is a mapping with keys {list(HYPOTHESIS_KEYS)}")
    unknown = sorted(set(entry) - set(HYPOTHESIS_KEYS))
    _require(not unknown, f"{where}: unknown keys {unknown}; valid: {list(HYPOTHESIS_KEYS)}")
    missing = [key for key in HYPOTHESIS_KEYS if key != "secondary" and not entry.get(key)]
    _require(not missing, f"{where}: missing {missing}")
    _require(entry["arm"] in arms, f"{where}: arm {entry['arm']!r} is not one of {sorted(arms)}")
    for key in ("metric", "secondary"):
        if entry.get(key) is not None:
            _require(entry[key] in METRICS, f"{where}: {key} {entry[key]!r} is not one of {sorted(METRICS)}")
    _require(entry["higher"] != entry["lower"], f"{where}: higher and lower name the same architecture")
    return Hypothesis(**{key: str(entry[key]) if key != "secondary" else entry.get(key) for key in HYPOTHESIS_KEYS})


def _assumption(entry: Any, ids: set[str], where: str) -> Assumption:
    _require(isinstance(entry, dict), f"{where}: each assumption is a mapping with keys {list(ASSUMPTION_KEYS)}")
    missing = [key for key in ASSUMPTION_KEYS if entry.get(key) is None]
    _require(not missing, f"{where}: missing {missing}")
    names = entry["for"] if isinstance(entry["for"], list) else [entry["for"]]
    _require(all(name in ids for name in names), f"{where}: 'for' {names} names a hypothesis the plan lacks")
    numbers = {key: entry[key] for key in ("delta", "sd", "level")}
    _require(
        all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in numbers.values())
        and entry["level"] < 1,
        f"{where}: delta and sd must be > 0 and level in (0, 1), got {numbers}",
    )
    _require(isinstance(entry["seeds"], int) and entry["seeds"] >= 2, f"{where}: seeds must be an integer >= 2")
    return Assumption(tuple(names), float(entry["delta"]), float(entry["sd"]), float(entry["level"]), entry["seeds"])


def _text(item: Any) -> str:
    """A list item as written: YAML reads ``- a: b`` (a colon in unquoted prose) as a one-key mapping."""
    if isinstance(item, dict):
        return "; ".join(f"{key}: {value}" for key, value in item.items())
    return str(item)


def load_plan(path: str | Path) -> Plan:
    """Read and check a plan file (``PlanError`` naming the key for anything it cannot apply)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise PlanError(f"cannot read plan file {str(path)!r}: {error}") from None
    _require(isinstance(data, dict), f"plan file {str(path)!r} must be a mapping with keys {list(PLAN_KEYS)}")
    unknown = sorted(set(data) - set(PLAN_KEYS))
    _require(not unknown, f"plan file {str(path)!r} has unknown keys {unknown}; valid keys: {list(PLAN_KEYS)}")
    arms = data.get("arms")
    _require(isinstance(arms, dict) and bool(arms), f"{path}: 'arms' must map arm names to study files")
    _require(isinstance(data.get("results"), str), f"{path}: 'results' must be the folder the plan's report goes to")
    for key, expected in (("correction", "holm"), ("test", "welch"), ("check", "mannwhitney")):
        _require(data.get(key, expected) == expected, f"{path}: {key} {data.get(key)!r} is not supported ({expected})")
    alpha = data.get("alpha", 0.05)
    _require(isinstance(alpha, float) and 0 < alpha < 1, f"{path}: alpha must be in (0, 1), got {alpha!r}")
    entries = data.get("hypotheses")
    _require(isinstance(entries, list) and bool(entries), f"{path}: 'hypotheses' must be a non-empty list")
    hypotheses = [_hypothesis(entry, arms, f"{path}: hypothesis {i + 1}") for i, entry in enumerate(entries)]
    ids = [h.id for h in hypotheses]
    _require(len(set(ids)) == len(ids), f"{path}: a hypothesis id is used twice: {ids}")
    power = data.get("power") or {}
    _require(isinstance(power, dict), f"{path}: 'power' must be a mapping (target, assumptions)")
    assumptions = [
        _assumption(entry, set(ids), f"{path}: power assumption {i + 1}")
        for i, entry in enumerate(power.get("assumptions") or [])
    ]
    return Plan(
        name=str(data.get("name") or path.stem),
        results=data["results"],
        arms={str(arm): str(study) for arm, study in arms.items()},
        hypotheses=hypotheses,
        alpha=alpha,
        power_target=float(power.get("target", 0.8)),
        assumptions=assumptions,
        exploratory=[_text(item) for item in data.get("exploratory") or []],
        source=path.as_posix(),
    )


PLANS = Path("configs/studies/plans")  # the analysis plans, relative to the repository root (where commands run)


def planned_pairs(results: Path, plans: Path = PLANS) -> tuple[dict[frozenset[str], str], list[str]]:
    """The pairs that the plans under ``plans`` test in the study whose results folder is ``results``:
    ``({frozenset({higher, lower}): hypothesis id}, [the plans' files])``. Variants by their results folder
    (arch or entry name), as plans name them. A plan or study file that cannot be read is skipped here:
    ``--check`` on it says why."""
    found: dict[frozenset[str], str] = {}
    sources: list[str] = []
    for path in sorted(plans.glob("*.yaml")) if plans.is_dir() else []:
        try:
            plan = load_plan(path)
            arms = {
                arm for arm, study_file in plan.arms.items()
                if (results_of := load_study(study_file).results) and Path(results_of).resolve() == results.resolve()
            }  # fmt: skip
        except (PlanError, StudyError, OSError):
            continue
        ids = [(h.id, frozenset((h.higher, h.lower))) for h in plan.hypotheses if h.arm in arms]
        for hypothesis, pair in ids:
            found[pair] = hypothesis
        if ids:
            sources.append(plan.source)
    return found, sources


# ------------------------------------------------------------------------------------------------ the arms' runs
@dataclass
class Arm:
    """One arm: its study, committed runs (finished only) and how many seeds each architecture plans."""

    name: str
    study: Study
    runs: list[RunRecord]
    planned: dict[str, int]
    train_eval: dict[Path, float | None]  # run dir -> train_eval_acc
    selection_runs: list[RunRecord] = field(default_factory=list)  # the ended runs that chose selected settings
    unfinished: list[RunRecord] = field(default_factory=list)  # committed but not finished (diverged, untested)

    def checked_runs(self) -> list[RunRecord]:
        """The runs whose code must be the arm's one version: its results and the selection runs behind them."""
        return [*self.runs, *self.selection_runs]


def load_arm(name: str, study_file: str) -> Arm:
    try:
        study = load_study(study_file).validate()
    except StudyError as error:
        raise PlanError(f"arm {name!r}: {error}") from None
    _require(bool(study.results), f"arm {name!r}: its study {study_file!r} has no 'results' folder to read")
    results = Path(str(study.results))
    expected = [(run.variant, run.seed, results / run.variant / f"seed{run.seed}") for run in plan_runs(study, True)]
    records = collect_runs(results, expected) if results.is_dir() else []
    finished = [run for run in records if run.status == "finished"]
    planned: dict[str, int] = {}
    for run in plan_runs(study, True):
        if run.selects is None:  # a selection run is no result of the study
            planned[run.variant] = planned.get(run.variant, 0) + 1
    train_eval = {run.run_dir: (read_efficiency(run.run_dir) or {}).get("train_eval_acc") for run in finished}
    unfinished = [run for run in records if run.status not in ("finished", "missing")]
    return Arm(name, study, finished, planned, train_eval, selection_records(study, results), unfinished)


def selection_records(study: Study, results: Path) -> list[RunRecord]:
    """The study's committed selection runs that ended (finished or diverged: both decided the choice).

    ``collect_runs`` leaves them out of the results; they are read here only so that their code is checked.
    """
    records = []
    for run in plan_runs(study, True):
        run_dir = results / run.variant / f"seed{run.seed}"
        if run.selects is not None and run_dir.is_dir():
            records.append(read_run(run_dir, run.variant))
    return [run for run in records if run.status in ("finished", "diverged")]


def _by_seed(runs: list[RunRecord], variant: str) -> list[RunRecord]:
    mine = (r for r in runs if r.run_dir.parent.name == variant)
    return sorted(mine, key=lambda r: r.seed if r.seed is not None else -1)


def _metric_acc(arm: Arm, run: RunRecord, metric: str) -> float | None:
    acc = {
        "test_error": run.test_acc,
        "train_eval_error": arm.train_eval.get(run.run_dir),
        "train_error_running": run.final_train_acc,
    }[metric]
    return acc if acc is not None and math.isfinite(acc) else None


def metric_values(arm: Arm, variant: str, metric: str) -> list[float]:
    """The metric, in percent, of every finished run of ``variant`` in the arm, ordered by seed.

    ``variant`` is the study's name for it -- its results folder: ``resnet20``, ``resnet20_2``, a pruned entry's
    name -- not the network's architecture (a pruned ResNet-56 is a ``resnet56`` too).
    """
    accs = (_metric_acc(arm, run, metric) for run in _by_seed(arm.runs, variant))
    return [100.0 * (1.0 - acc) for acc in accs if acc is not None]


def left_out(arm: Arm, variant: str, metric: str) -> list[str]:
    """The committed runs of ``variant`` that are not in the metric's values, each with why.

    Why: a diverged or untested run left the test without a word, so it read as a run not trained yet -- and
    missingness that depends on the network (a deep plain net that diverges) biases the comparison (an audit).
    """
    why = [
        f"{variant}/seed{run.seed}: {run.status}"
        + (f" at step {run.diverged_step} ({run.diverged_reason})" if run.status == "diverged" else "")
        for run in _by_seed(arm.unfinished, variant)
    ]
    why += [
        f"{variant}/seed{run.seed}: finished, no `{metric}` recorded"
        for run in _by_seed(arm.runs, variant)
        if _metric_acc(arm, run, metric) is None
    ]
    return why


# ------------------------------------------------------------------------------------------------ the verdicts
@dataclass
class Verdict:
    hypothesis: Hypothesis
    n_higher: int
    n_lower: int
    planned_higher: int
    planned_lower: int
    mean_higher: float | None
    mean_lower: float | None
    difference: float | None  # mean(higher) - mean(lower), points: positive is the predicted direction
    ci_low: float | None
    ci_high: float | None
    hedges_g: float | None
    statistic: float | None
    p: float | None  # two-sided Welch
    p_holm: float | None
    mannwhitney_p: float | None  # exact permutation p of U, two-sided (ties included)
    secondary_difference: float | None
    secondary_p: float | None
    verdict: str  # supported | not supported | pending | not testable
    secondary_n: tuple[int, int] | None = None  # the secondary measure's seeds (higher, lower): it may differ
    left_out: list[str] = field(default_factory=list)  # committed runs not in the test, with why

    @property
    def complete(self) -> bool:
        return self.n_higher >= self.planned_higher and self.n_lower >= self.planned_lower


def mannwhitney_floor(n_one: int, n_two: int) -> float:
    """The smallest two-sided exact Mann-Whitney p that ``n_one`` against ``n_two`` runs can give: every run of one
    side beyond every run of the other, 2 of the C(n_one + n_two, n_one) equally likely splits (1 at most)."""
    return min(1.0, 2.0 / math.comb(n_one + n_two, n_one))


def _mannwhitney(a: list[float], b: list[float]) -> float | None:
    """Two-sided p of U from its exact permutation distribution (every split of the pooled values enumerated).

    scipy's ``method="exact"`` assumes no ties and says nothing when there are: [14, 14, 15] vs [14, 14, 14] gets
    0.70 where the exact p is 1.0, and errors recorded in steps of 0.01 points do tie. Without ties the two agree.
    """
    if len(a) < 2 or len(b) < 2:
        return None
    exact = stats.PermutationMethod(n_resamples=np.inf)
    return float(stats.mannwhitneyu(a, b, alternative="two-sided", method=exact).pvalue)


def verdicts(plan: Plan, arms: dict[str, Arm]) -> list[Verdict]:
    """Every planned hypothesis tested (Welch), the family Holm-adjusted, the check and the secondary beside."""
    rows = []
    for h in plan.hypotheses:
        arm = arms[h.arm]
        high, low = metric_values(arm, h.higher, h.metric), metric_values(arm, h.lower, h.metric)
        test = compare(high, low)  # no seeds given: Welch, never paired
        secondary, secondary_n = None, None
        if h.secondary:
            high_2, low_2 = metric_values(arm, h.higher, h.secondary), metric_values(arm, h.lower, h.secondary)
            secondary, secondary_n = compare(high_2, low_2), (len(high_2), len(low_2))
        rows.append(
            Verdict(
                h, len(high), len(low), arm.planned.get(h.higher, 0), arm.planned.get(h.lower, 0),
                float(np.mean(high)) if high else None, float(np.mean(low)) if low else None,
                test.difference, test.ci_low, test.ci_high, test.effect, test.statistic, test.p_value, None,
                _mannwhitney(high, low), secondary.difference if secondary else None,
                secondary.p_value if secondary else None, "pending", secondary_n,
                left_out(arm, h.higher, h.metric) + left_out(arm, h.lower, h.metric),
            )
        )  # fmt: skip
    # The whole family, always: a hypothesis without a test yet counts with p = 1 (conservative for the others).
    adjusted = multipletests([row.p if row.p is not None else 1.0 for row in rows], alpha=plan.alpha, method="holm")[1]
    for row, p_holm in zip(rows, adjusted):
        if row.p is None:
            if row.n_higher >= 2 and row.n_lower >= 2:
                row.verdict = "not testable"  # enough runs, but neither side varies: no t statistic
            continue
        row.p_holm = float(p_holm)
        predicted = row.difference is not None and row.difference > 0
        row.verdict = "supported" if row.p_holm < plan.alpha and predicted else "not supported"
    return rows


@dataclass(frozen=True)
class AcrossArms:
    """One planned difference (metric, higher - lower) tested in two arms, and how it changed from the first to
    the later (exploratory: no plan tests it): e.g. does the plain gap persist at 48 epochs, does the ResNet gain
    grow."""

    first: Verdict
    later: Verdict
    change: Change  # later difference - first difference, Welch-Satterthwaite over the four groups


def across_arms(rows: list[Verdict], arms: dict[str, Arm]) -> list[AcrossArms]:
    """Each later arm's hypothesis against the first arm's with the same metric, higher and lower, in plan order."""
    found = []
    for index, first in enumerate(rows):
        h = first.hypothesis
        same = (h.metric, h.higher, h.lower)
        if any((e.hypothesis.metric, e.hypothesis.higher, e.hypothesis.lower) == same for e in rows[:index]):
            continue  # not the first arm of this difference
        for later in rows[index + 1 :]:
            g = later.hypothesis
            if (g.metric, g.higher, g.lower) != same or g.arm == h.arm:
                continue
            values = [
                metric_values(arms[arm], variant, h.metric) for arm in (h.arm, g.arm) for variant in (h.higher, h.lower)
            ]
            found.append(AcrossArms(first, later, difference_change(*values)))
    return found


@dataclass(frozen=True)
class PowerLine:
    assumption: Assumption
    effect_size: float  # Cohen's d = delta / sd
    seeds_needed: float  # per architecture, for power_target at level
    power_at_seeds: float


def power_table(plan: Plan) -> list[PowerLine]:
    """Per assumption: the seeds a two-sided two-sample t-test needs for the target power, and the power chosen."""
    solver = TTestIndPower()
    lines = []
    for a in plan.assumptions:
        d = a.delta / a.sd
        needed = float(solver.solve_power(effect_size=d, alpha=a.level, power=plan.power_target))
        power = float(solver.power(effect_size=d, nobs1=a.seeds, alpha=a.level))
        lines.append(PowerLine(a, d, needed, power))
    return lines


def arm_problems(arm: Arm) -> list[str]:
    """One code version per arm: every provenance of every run (its results and its selection runs, each part
    before a resume too) names the same git commit, from a clean tree."""
    runs = arm.checked_runs()
    commits = {provenance.get("git_commit") for run in runs for provenance in run.provenances()}
    problems = []
    unknown = [str(run.run_dir) for run in runs if any(p.get("git_commit") is None for p in run.provenances())]
    if unknown:
        problems.append(f"arm {arm.name}: {len(unknown)} run(s) name no git commit, e.g. {unknown[0]}")
    known = sorted(c for c in commits if c)
    if len(known) > 1:
        problems.append(f"arm {arm.name}: its runs mix {len(known)} commits ({', '.join(c[:8] for c in known)})")
    dirty = [run for run in runs if any(p.get("git_dirty") is not False for p in run.provenances())]
    if dirty and not unknown:
        problems.append(f"arm {arm.name}: {len(dirty)} run(s) trained from a dirty tree, e.g. {_dirty_part(dirty[0])}")
    return problems


def lineage_problems(arm: Arm) -> list[str]:
    """Every committed pruned run started from its planned parent as that parent is committed.

    Why: a pruned net's accuracy (and its share of the parent's training compute) is its parent's too. Its
    ``init_from`` record names the parent run and copies what that run's ``efficiency.json`` said when the pruned
    run started (``start_weights.parent_facts``: training images, best validation accuracy, code version); a pruned
    run committed beside a parent trained again since, from elsewhere, or not committed at all would pass the
    one-version check and still not be the study's net. The checkpoint's own sha256 cannot be compared here:
    checkpoints stay out of git (the study driver compares it before committing a pruned run with its parent).
    """
    planned: dict[tuple[str, int | None], Path] = {
        (run.variant, run.seed): run.after for run in plan_runs(arm.study, True) if run.after is not None
    }
    parents = {run_key(run.run_dir): run for run in arm.runs}
    problems = []
    for run in [*arm.runs, *arm.unfinished]:
        after = planned.get((run.run_dir.parent.name, run.seed))
        if after is None:
            continue
        label, want = run_key(run.run_dir), run_key(after)
        if run.parent != want:
            problems.append(f"arm {arm.name}: {label} started from {run.parent or 'no recorded run'}, not {want}")
            continue
        if want not in parents:
            problems.append(f"arm {arm.name}: {label} started from {want}, which is no finished run of the arm")
            continue
        start = (read_efficiency(run.run_dir) or {}).get("init_from") or {}
        for name, committed in parent_facts(read_efficiency(parents[want].run_dir) or {}).items():
            if start.get(name) != committed:
                problems.append(
                    f"arm {arm.name}: {label} started from a {want} with {name} {start.get(name)!r}; the committed "
                    f"{want} has {committed!r} (another training of it)"
                )
    return problems


def _dirty_part(run: RunRecord) -> str:
    """The run's folder, and which part of it was dirty when only a part before a resume was."""
    if run.provenance.get("git_dirty") is False:
        return f"{run.run_dir} (before it was resumed)"
    return str(run.run_dir)
