"""How sure a number is: a 95% interval of a mean over seeds, the paired difference of two cells
(or two metrics of one cell) over matching seeds, and a verdict against the paper's direction.

Below 5 seeds the interval is Student's t (a bootstrap of 2-4 values only spans their extremes);
from 5 seeds on it is a percentile bootstrap of the mean (SciPy, 9,999 resamples, a fixed seed,
so a report is the same every time it is built)."""

from __future__ import annotations

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


@dataclass
class Interval:
    mean: float
    std: float
    low: float
    high: float
    n: int
    method: str  # "t" or "bootstrap"

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


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

    @property
    def paper_difference(self) -> Optional[float]:
        if self.paper_without is None or self.paper_with is None:
            return None
        return self.paper_with - self.paper_without

    @property
    def interval(self) -> Optional[Interval]:
        return interval(self.differences)

    @property
    def mean(self) -> Optional[float]:
        return statistics.fmean(self.differences) if self.differences else None

    @property
    def verdict(self) -> str:
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
