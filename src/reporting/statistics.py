"""The statistics every number of a study report carries: intervals, tests, effect sizes, fits.

Why a module of its own: a study has few seeds (often 2), and a mean ± std printed without its n
reads as a result. Everything here returns the n and the interval with the estimate, and says
``None`` rather than inventing a number when the data cannot give one (one seed has no std, no
interval and no test). The formulas are scipy's (``scipy.stats`` / ``scipy.optimize``); what is
written here is only which one applies and how the inputs are arranged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
    """Mean, sample std (ddof = 1), n and the two-sided t-interval of the mean of a few values."""

    n: int
    mean: float | None
    std: float | None  # None below two values
    ci_low: float | None  # None below two values
    ci_high: float | None

    @property
    def sem(self) -> float | None:
        """Standard error of the mean, std / sqrt(n); None below two values."""
        return None if self.std is None else self.std / math.sqrt(self.n)

    @property
    def half_width(self) -> float | None:
        return None if self.ci_high is None or self.mean is None else self.ci_high - self.mean


def finite(values: Sequence[float | None]) -> list[float]:
    """The values that are numbers (None and NaN, e.g. from a diverged run, dropped)."""
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def summarize(values: Sequence[float | None], confidence: float = CONFIDENCE) -> Summary:
    """Mean, sample std, n and the t-interval ``mean ± t_{n-1} * std / sqrt(n)`` of the finite values."""
    data = np.asarray(finite(values), dtype=float)
    n = len(data)
    if n == 0:
        return Summary(0, None, None, None, None)
    mean = float(data.mean())
    if n == 1:
        return Summary(1, mean, None, None, None)
    if np.all(data == data[0]):  # identical values: a zero-width interval would claim a certainty n seeds lack
        return Summary(n, float(data[0]), 0.0, None, None)
    std = float(data.std(ddof=1))
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=std / math.sqrt(n))
    return Summary(n, mean, std, float(low), float(high))


def binomial_se(accuracy: float | None, samples: int | None) -> float | None:
    """Standard error of an accuracy measured on ``samples`` test images, sqrt(p (1 - p) / m)."""
    if accuracy is None or not samples or not math.isfinite(accuracy):
        return None
    return math.sqrt(accuracy * (1.0 - accuracy) / samples)


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b``: the difference of means, its test and effect size."""

    test: str  # "paired t" | "Welch t" | "none"
    n_a: int
    n_b: int
    difference: float | None  # mean(a) - mean(b)
    statistic: float | None
    p_value: float | None
    effect: float | None  # Hedges' g (Welch), d_z of the differences (paired)
    effect_name: str
    reason: str = ""  # why no test, when there is none
    ci_low: float | None = None  # the 95% t-interval of ``difference`` (of the paired differences, or Welch's)
    ci_high: float | None = None

    @property
    def ci(self) -> tuple[float, float] | None:
        return None if self.ci_low is None or self.ci_high is None else (self.ci_low, self.ci_high)


def compare(
    a: Sequence[float | None],
    b: Sequence[float | None],
    seeds_a: Sequence[int | None] | None = None,
    seeds_b: Sequence[int | None] | None = None,
) -> Comparison:
    """Test whether two variants differ: paired t-test when both have the same seeds (n >= 2), else Welch's.

    Pairing by seed is right when the seed fixes what the two variants share (data order, split):
    the seed-to-seed spread then cancels in the differences. Effect sizes: Hedges' g (Cohen's d
    with the pooled sample std, times the small-sample correction 1 - 3 / (4 (n_a + n_b) - 9)) for
    Welch, d_z = mean difference / std of the differences for the paired test. The interval of the
    difference comes from the same test: the t-interval of the paired differences (df n - 1), or
    ``diff ± t * se`` with Welch's se and Welch-Satterthwaite degrees of freedom.
    """
    pairs_a = [(s, float(v)) for s, v in zip(seeds_a or [None] * len(a), a) if v is not None and math.isfinite(v)]
    pairs_b = [(s, float(v)) for s, v in zip(seeds_b or [None] * len(b), b) if v is not None and math.isfinite(v)]
    xa, xb = [v for _, v in pairs_a], [v for _, v in pairs_b]
    na, nb = len(xa), len(xb)
    diff = float(np.mean(xa) - np.mean(xb)) if na and nb else None
    if na < 2 or nb < 2:
        return Comparison("none", na, nb, diff, None, None, None, "", f"needs two seeds on each side (n = {na}, {nb})")
    assert diff is not None  # both sides have values here
    sa = [s for s, _ in pairs_a]
    sb = [s for s, _ in pairs_b]
    if None not in sa and len(set(sa)) == na and set(sa) == set(sb):
        by_seed = dict(pairs_b)
        first = np.array([v for _, v in sorted(pairs_a)])
        second = np.array([by_seed[s] for s, _ in sorted(pairs_a)])
        deltas = first - second
        if np.all(deltas == deltas[0]):  # no spread in the differences: the t statistic is undefined
            return Comparison("paired t", na, nb, diff, None, None, None, "d_z", "the differences have no spread")
        result = stats.ttest_rel(first, second)
        effect = float(deltas.mean() / deltas.std(ddof=1))
        interval = summarize(deltas.tolist())
        return Comparison("paired t", na, nb, diff, float(result.statistic), float(result.pvalue), effect, "d_z",
                          ci_low=interval.ci_low, ci_high=interval.ci_high)  # fmt: skip
    # Equal values have no spread; np.var of three equal floats can be 1e-33 (the mean rounds), which would make
    # Welch's t astronomically large and Hedges' g absurd.
    va = 0.0 if np.ptp(xa) == 0 else float(np.var(xa, ddof=1))
    vb = 0.0 if np.ptp(xb) == 0 else float(np.var(xb, ddof=1))
    if va == 0 and vb == 0:
        return Comparison("Welch t", na, nb, diff, None, None, None, "Hedges' g", "both sides have no spread")
    result = stats.ttest_ind(xa, xb, equal_var=False)
    pooled = math.sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2))
    g = diff / pooled * (1.0 - 3.0 / (4.0 * (na + nb) - 9.0))
    se2 = va / na + vb / nb
    df = se2**2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df) * math.sqrt(se2))
    return Comparison("Welch t", na, nb, diff, float(result.statistic), float(result.pvalue), float(g), "Hedges' g",
                      ci_low=diff - half, ci_high=diff + half)  # fmt: skip


@dataclass(frozen=True)
class Change:
    """How a difference of means changed between two settings: ``(a2 - b2) - (a1 - b1)``, four independent groups."""

    change: float | None
    ci_low: float | None
    ci_high: float | None
    statistic: float | None
    p_value: float | None
    df: float | None
    reason: str = ""  # why no interval, when there is none


def difference_change(a1: Sequence[float], b1: Sequence[float], a2: Sequence[float], b2: Sequence[float]) -> Change:
    """Whether ``mean(a) - mean(b)`` differs between setting 1 and setting 2 (an interaction), unpaired.

    Four groups of different runs share nothing, so the change's variance is the sum of the four squared standard
    errors, and its t has Welch-Satterthwaite's degrees of freedom generalised to four groups (the same reasoning
    as Welch's test of two: no equal-variance assumption, and a seed spread of 0.2 points beside one of 6 points
    is what deep plain nets give). Needs two values in each group.
    """
    groups = [np.asarray(finite(list(group)), dtype=float) for group in (a1, b1, a2, b2)]
    sizes = [len(group) for group in groups]
    change = None
    if all(sizes):
        change = float((groups[2].mean() - groups[3].mean()) - (groups[0].mean() - groups[1].mean()))
    if min(sizes) < 2:
        return Change(change, None, None, None, None, None, f"needs two values in each group (n = {sizes})")
    assert change is not None
    parts = [0.0 if np.ptp(g) == 0 else float(np.var(g, ddof=1)) / len(g) for g in groups]
    variance = sum(parts)
    if variance == 0:
        return Change(change, None, None, None, None, None, "no group has any spread")
    df = variance**2 / sum(part**2 / (n - 1) for part, n in zip(parts, sizes))
    statistic = change / math.sqrt(variance)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df) * math.sqrt(variance))
    p_value = float(2 * stats.t.sf(abs(statistic), df))
    return Change(change, change - half, change + half, statistic, p_value, float(df))


# ------------------------------------------------------------------------------------------------ scaling fits


@dataclass(frozen=True)
class PowerLaw:
    """``error = a * size^-b (+ c)`` fitted along one line; ``b_low``/``b_high``: bootstrap interval on b."""

    a: float
    b: float
    c: float | None  # irreducible error, fitted only with >= 4 sizes
    sizes: int
    b_low: float | None = None
    b_high: float | None = None
    note: str = ""


def _fit(sizes: np.ndarray, errors: np.ndarray, irreducible: bool) -> tuple[float, float, float | None]:
    """Least squares in log error: a straight line in log-log, or ``c + a N^-b`` by curve_fit."""
    if not irreducible:
        result = stats.linregress(np.log(sizes), np.log(errors))
        return float(math.exp(result.intercept)), float(-result.slope), None
    log_a0, slope0 = np.polyfit(np.log(sizes), np.log(errors), 1)
    scale = float(np.median(sizes))

    def model(n: np.ndarray, log_a: float, b: float, c: float) -> np.ndarray:
        return c + np.exp(log_a) * (n / scale) ** (-b)

    start = (float(log_a0 + slope0 * math.log(scale)), max(float(-slope0), 1e-3), 0.0)
    params, _ = optimize.curve_fit(
        model,
        sizes,
        errors,
        p0=start,
        bounds=([-np.inf, 0.0, 0.0], [np.inf, 10.0, float(errors.min())]),
        maxfev=20000,
    )
    log_a, b, c = (float(p) for p in params)
    return math.exp(log_a) * scale**b, b, c


MIN_SEEDS_FOR_FIT = 3  # below this at every size a line's fit is not identified; below it at any size, no interval


def draw_means(rng: np.random.Generator, seeds: Sequence[Sequence[float]]) -> np.ndarray:
    """One parametric-bootstrap draw of each size's mean: its seed variance drawn from the scaled chi-square of
    its n - 1 degrees of freedom, then the mean from a normal with that variance / n.

    Why not resample the seeds: with 3 seeds a size's resampled mean spreads (n - 1) / n as far as it should and
    takes only 10 values, and the uncertainty of the spread itself is lost; a "95%" percentile interval of a
    line's exponent built that way covered the truth in 76-89% of simulated lines (3-4 sizes, 3-8 seeds, with
    and without the irreducible term). The draw here is the t-distribution's (its variance uncertain with its
    df), size by size, so a noisy size does not borrow a quiet one's spread; the same simulations covered
    96-100% (conservative; one is repeated in tests/test_report_statistics.py).
    """
    n = np.array([len(values) for values in seeds], dtype=float)
    means = np.array([np.mean(values) for values in seeds])
    spread = np.array([np.var(values, ddof=1) for values in seeds])
    variance = spread * (n - 1) / rng.chisquare(n - 1)
    return rng.normal(means, np.sqrt(variance / n))


def fit_power_law(
    points: dict[float, Sequence[float]],
    bootstrap: int = 2000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> PowerLaw | str:
    """Fit error against size along a line from ``{size: [error per seed]}``; a sentence when it cannot.

    A straight line in log-log with the sign of the slope free: ``b > 0`` is error falling with size,
    ``b < 0`` error *rising* (a plain net that degrades with depth), never flattened to a constant by a
    bound. Only a falling line with >= 4 sizes also gets an irreducible term ``c`` in [0, min error].
    Fitted to the per-size means (each size weighs the same). Identification: a line with fewer than
    ``MIN_SEEDS_FOR_FIT`` seeds at every size is "not identified" (no fit); a line with such a size gets
    the fit but no interval; otherwise, with >= 3 sizes, a parametric-bootstrap interval on ``b``
    (``draw_means``; seeds that do not vary at any size give no interval, never a zero-width one).
    """
    clean = {float(size): finite(errors) for size, errors in points.items() if size and size > 0}
    clean = {size: errors for size, errors in clean.items() if errors}
    if len(clean) < 2:
        return f"{len(clean)} size{'s' if len(clean) != 1 else ''} with a tested run: a fit needs two"
    sizes = np.array(sorted(clean))
    means = np.array([np.mean(clean[size]) for size in sizes])
    if np.any(means <= 0):
        return "an error of 0 cannot be fitted in log scale"
    if all(len(clean[size]) < MIN_SEEDS_FOR_FIT for size in sizes):
        return f"not identified: fewer than {MIN_SEEDS_FOR_FIT} seeds at every size"
    irreducible = len(sizes) >= 4 and _fit(sizes, means, False)[1] > 0
    try:
        a, b, c = _fit(sizes, means, irreducible)
    except (RuntimeError, ValueError) as error:
        return f"the fit did not converge ({error})"
    if len(sizes) < 3:
        return PowerLaw(a, b, c, len(sizes), note="no interval on b: it needs three sizes")
    if any(len(clean[size]) < MIN_SEEDS_FOR_FIT for size in sizes):
        return PowerLaw(a, b, c, len(sizes), note=f"no interval on b: a size has fewer than {MIN_SEEDS_FOR_FIT} seeds")
    seeds = [clean[size] for size in sizes]
    if all(np.ptp(values) == 0 for values in seeds):
        return PowerLaw(a, b, c, len(sizes), note="no interval on b: the seeds do not vary at any size")
    rng = np.random.default_rng(seed)
    exponents = []
    for _ in range(bootstrap):
        drawn = draw_means(rng, seeds)
        if np.any(drawn <= 0):
            continue
        try:
            exponents.append(_fit(sizes, drawn, irreducible)[1])
        except (RuntimeError, ValueError):
            continue
    if len(exponents) < bootstrap // 2:
        return PowerLaw(a, b, c, len(sizes), note="no interval on b: most bootstrap refits failed")
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(exponents, [tail, 100 - tail])
    return PowerLaw(a, b, c, len(sizes), float(low), float(high))


def trend_text(fit: PowerLaw) -> str:
    """What a fit says, in words that match its sign, its interval in the sign of the exponent printed.

    ``error ~ params^e`` with ``e = -b``: falls (e < 0), rises (e > 0), or no clear trend (an interval that
    includes 0). Without an interval the direction is the point estimate's only, and the words say so.
    """
    exponent = -fit.b
    shown = f"{exponent:+.2f}".replace("-0.00", "+0.00")
    sizes = f"over {fit.sizes} sizes"
    if fit.b_low is None or fit.b_high is None:
        direction = "is flat" if shown == "+0.00" else "falls" if exponent < 0 else "rises"
        return (
            f"{direction} as params^{shown} {sizes} in the fit's point estimate ({fit.note}; no direction is claimed)"
        )
    low, high = -fit.b_high, -fit.b_low
    interval = f"95% parametric-bootstrap interval of the exponent {low:+.2f} to {high:+.2f}"
    if low <= 0 <= high:
        return f"shows no clear trend with size {sizes} (params^{shown}; {interval}, which includes 0)"
    return f"{'falls' if high < 0 else 'rises'} as params^{shown} {sizes} ({interval})"


def size_to_reach(sizes: Sequence[float], accuracies: Sequence[float], target: float) -> tuple[float | None, str]:
    """The size at which a line first reaches ``target`` accuracy, interpolated linearly in log size.

    ``sizes`` ordered ascending with their mean accuracies. Returns ``(size, how)``: how is
    ``"interpolated"``, ``"at the smallest size"`` (already reached there: an upper bound) or
    ``"not reached"`` (size None).
    """
    pairs = [(float(s), float(a)) for s, a in zip(sizes, accuracies) if s and a is not None and math.isfinite(a)]
    if not pairs:
        return None, "no tested size"
    if pairs[0][1] >= target:
        return pairs[0][0], "at the smallest size"
    for (s1, a1), (s2, a2) in zip(pairs, pairs[1:]):
        if a2 >= target > a1:
            fraction = (target - a1) / (a2 - a1)
            return math.exp(math.log(s1) + fraction * (math.log(s2) - math.log(s1))), "interpolated"
    return None, "not reached"
