"""How sure a number is: a 95% interval of a mean over seeds, the paired difference of two cells
(or two metrics of one cell) over matching seeds, and a verdict against the paper's direction.

Below 5 seeds the interval is Student's t (a bootstrap of 2-4 values only spans their extremes);
from 5 seeds on it is a percentile bootstrap of the mean (SciPy, 9,999 resamples, a fixed seed,
so a report is the same every time it is built)."""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
BOOTSTRAP_FROM = 5  # seeds
BOOTSTRAP_RESAMPLES = 9999

REPRODUCED, OPPOSITE, INCONCLUSIVE = "reproduced", "opposite", "inconclusive"
ONE_SEED = "no verdict (1 seed)"
NO_DIRECTION = "no verdict (the paper's values are equal or missing)"


PERCENT_RANGE = (0.0, 100.0)  # a percentage's interval stays in it
PERCENT_DIFFERENCE_RANGE = (-100.0, 100.0)  # so does a difference of two percentages'

# More seeds by a rule fixed before any result: every pair still inconclusive at its first
# FIRST_SEEDS seeds goes to MORE_SEEDS (the paper ran MNIST 10 times); both verdicts are reported.
FIRST_SEEDS = 3
MORE_SEEDS = 10
JUDGED = (REPRODUCED, OPPOSITE, INCONCLUSIVE)


@dataclass
class Interval:
    mean: float
    std: float
    low: float
    high: float
    n: int
    method: str  # "t" or "bootstrap"
    clipped_low: bool = False  # ``low`` was moved up to the range's end (``raw_low`` is the computed end)
    clipped_high: bool = False
    raw_low: Optional[float] = None
    raw_high: Optional[float] = None

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def within(self, lower: float, upper: float) -> "Interval":
        """This interval with its ends clipped to [lower, upper] (a percentage cannot leave
        [0, 100]); the computed ends stay in ``raw_low``/``raw_high`` and clipped ends are flagged."""
        return dataclasses.replace(self, low=min(max(self.low, lower), upper), high=max(min(self.high, upper), lower),
                                   clipped_low=self.low < lower, clipped_high=self.high > upper,
                                   raw_low=self.low, raw_high=self.high)


def interval(values: list[float]) -> Optional[Interval]:
    """The mean of ``values`` with its sample std and 95% interval; None below 2 values."""
    n = len(values)
    if n < 2:
        return None
    mean, std = statistics.fmean(values), statistics.stdev(values)
    method = "bootstrap" if n >= BOOTSTRAP_FROM else "t"
    if std == 0:  # every seed agrees: the interval is the point
        return Interval(mean, 0.0, mean, mean, n, method)
    if method == "t":
        low, high = stats.t.interval(CONFIDENCE, n - 1, loc=mean, scale=std / math.sqrt(n))
    else:
        result = stats.bootstrap((np.asarray(values, dtype=float),), np.mean, confidence_level=CONFIDENCE,
                                 n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
                                 rng=np.random.default_rng(0))
        low, high = result.confidence_interval
    return Interval(mean, std, float(low), float(high), n, method)


def p_value(values: list[float]) -> Optional[float]:
    """Two-sided p-value of "the mean is 0", by the interval's own method, so that p < 0.05
    exactly when :func:`interval` excludes 0 (Student's t below 5 values; from 5, twice the
    smaller share of bootstrap means on either side of 0, the same resamples as the interval's).
    None below 2 values."""
    n = len(values)
    if n < 2:
        return None
    std = statistics.stdev(values)
    if std == 0:
        return 1.0 if statistics.fmean(values) == 0 else 0.0
    if n < BOOTSTRAP_FROM:
        return float(stats.ttest_1samp(values, 0.0).pvalue)
    data = np.asarray(values, dtype=float)
    means = stats.bootstrap((data,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
                            rng=np.random.default_rng(0)).bootstrap_distribution
    return float(min(1.0, 2 * min(np.mean(means <= 0), np.mean(means >= 0))))


def holm(p_values: list[Optional[float]], alpha: float = 1 - CONFIDENCE) -> list[bool]:
    """Holm's step-down procedure over a family of tests: which hypotheses are rejected at
    family-wise error ``alpha``. The smallest p-value is compared with alpha / m, the next with
    alpha / (m - 1), ..., stopping at the first that fails. A missing p-value is never rejected
    and does not count in m."""
    ranked = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    rejected = [False] * len(p_values)
    for rank, (p, i) in enumerate(ranked):
        if p > alpha / (len(ranked) - rank):
            break
        rejected[i] = True
    return rejected


def verdict(paper_difference: Optional[float], ours: Optional[Interval]) -> str:
    """*reproduced*: our interval excludes 0 on the paper's side; *opposite*: it excludes 0 on the
    other side; *inconclusive*: it includes 0. No verdict from one seed or without a paper
    direction."""
    if ours is None:
        return ONE_SEED
    if paper_difference is None or paper_difference == 0:
        return NO_DIRECTION
    if not ours.excludes_zero():
        return INCONCLUSIVE
    return REPRODUCED if (ours.mean > 0) == (paper_difference > 0) else OPPOSITE


@dataclass
class Comparison:
    """A with/without pair the paper compares: ``with_`` minus ``without`` per matching seed."""

    dataset: str
    metric: str  # the metric compared ("without → with" for two metrics of one cell)
    without: str  # setting (or metric) of the baseline
    with_: str
    paper_without: Optional[float]
    paper_with: Optional[float]
    seeds: list  # matching seeds, converged in both
    differences: list  # ours, with - without, per seed, in the metric's unit
    paper_source: str = ""  # the dataset the paper's values come from (another one where it has none for this)
    withheld: str = ""  # why this pair gets no verdict whatever its numbers (e.g. the attack does not work)
    percent: bool = False  # a difference of two percentages: its interval is clipped to [-100, +100]
    cells: tuple = ()  # the cells (slugs) the values of both sides come from

    @property
    def paper_difference(self) -> Optional[float]:
        if self.paper_without is None or self.paper_with is None:
            return None
        return self.paper_with - self.paper_without

    @property
    def interval(self) -> Optional[Interval]:
        """The 95% interval of the paired difference; a difference of percentages' is clipped to
        [-100, +100] (its computed ends kept in ``raw_low``/``raw_high``)."""
        ci = interval(self.differences)
        return ci.within(*PERCENT_DIFFERENCE_RANGE) if ci is not None and self.percent else ci

    @property
    def p_value(self) -> Optional[float]:
        """The two-sided p-value of "no difference" (None below 2 seeds)."""
        return p_value(self.differences)

    def first_seeds(self, n: int = FIRST_SEEDS) -> "Comparison":
        """This pair over its seeds below ``n`` only (seeds 0 to n - 1: what a sweep of n seeds has)."""
        kept = [(s, d) for s, d in zip(self.seeds, self.differences) if s < n]
        return dataclasses.replace(self, seeds=[s for s, _ in kept], differences=[d for _, d in kept])

    @property
    def mean(self) -> Optional[float]:
        return statistics.fmean(self.differences) if self.differences else None

    @property
    def extended(self) -> bool:
        """Whether it has seeds beyond the first :data:`FIRST_SEEDS` (then both verdicts are shown)."""
        return any(s >= FIRST_SEEDS for s in self.seeds)

    @property
    def verdict(self) -> str:
        if self.withheld:
            return f"no verdict ({self.withheld})"
        if not self.differences:
            return "no verdict (no seed finished both)"
        return verdict(self.paper_difference, self.interval)


def paired(without: dict, with_: dict) -> tuple[list, list]:
    """(matching seeds, with - without per seed) of two {seed: value} maps."""
    seeds = sorted(set(without) & set(with_))
    return seeds, [with_[s] - without[s] for s in seeds]


def verdict_summary(comparisons: list[Comparison]) -> str:
    """One line: how many of the table's comparisons reproduce the paper's direction."""
    if not comparisons:
        return "no with/without pairs in this table"
    counts = {REPRODUCED: 0, OPPOSITE: 0, INCONCLUSIVE: 0}
    for c in comparisons:
        if c.verdict in counts:
            counts[c.verdict] += 1
    judged = sum(counts.values())
    line = f"{counts[REPRODUCED]} of {len(comparisons)} pairs reproduced"
    if judged:
        line += f" ({counts[OPPOSITE]} opposite, {counts[INCONCLUSIVE]} inconclusive"
        line += f", {len(comparisons) - judged} without a verdict)" if judged < len(comparisons) else ")"
    else:
        line += " (no verdict possible: " + comparisons[0].verdict.removeprefix("no verdict ").strip("()") + ")"
    return line


@dataclass
class VerdictCounts:
    """A table's with/without pairs by verdict, and by verdict after a Holm correction over its
    judged pairs (those with a reproduced, opposite or inconclusive verdict; ``holm`` per pair,
    in the order of the comparisons: its verdict after the correction, "" for a pair not judged)."""

    pairs: int
    counts: dict  # verdict -> number of pairs, for each of JUDGED
    holm_counts: dict
    holm: list
    alpha: float = 1 - CONFIDENCE

    @property
    def judged(self) -> int:
        return sum(self.counts.values())


def verdict_counts(comparisons: list[Comparison], alpha: float = 1 - CONFIDENCE) -> VerdictCounts:
    """Each pair's verdict, and whether it still holds after Holm's step-down correction at
    family-wise error ``alpha`` over the judged pairs' p-values: a reproduced or opposite pair
    whose hypothesis "no difference" Holm does not reject counts as inconclusive."""
    verdicts = [c.verdict for c in comparisons]
    judged = [v in JUDGED for v in verdicts]
    rejected = holm([c.p_value if j else None for c, j in zip(comparisons, judged)], alpha)
    after = [("" if not j else v if r and v != INCONCLUSIVE else INCONCLUSIVE)
             for v, j, r in zip(verdicts, judged, rejected)]
    return VerdictCounts(len(comparisons), {v: verdicts.count(v) for v in JUDGED},
                         {v: after.count(v) for v in JUDGED}, after, alpha)


def holm_summary(comparisons: list[Comparison], alpha: float = 1 - CONFIDENCE) -> str:
    """One line: how many of the table's judged pairs hold after a Holm correction over them."""
    counts = verdict_counts(comparisons, alpha)
    if not counts.judged:
        return "no judged pairs for a Holm correction"
    held = counts.holm_counts
    return (f"after a Holm correction over the table's {counts.judged} judged pairs (family-wise alpha {alpha:g}): "
            f"{held[REPRODUCED]} reproduced, {held[OPPOSITE]} opposite, {held[INCONCLUSIVE]} inconclusive")
