"""The report's statistics: the t interval against a hand computation with a printed t quantile,
the bootstrap interval against a brute-force numpy bootstrap, pairing by seed, and the verdict
rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tradeoff.core import stats
from tradeoff.core.stats import (
    INCONCLUSIVE,
    ONE_SEED,
    OPPOSITE,
    REPRODUCED,
    Comparison,
    interval,
    paired,
    verdict,
    verdict_summary,
)


def test_t_interval_below_five_seeds_by_hand():
    """3 values: mean ± t(0.975, 2) * s / sqrt(3), with t(0.975, 2) = 4.30265 from printed tables."""
    values = [10.0, 14.0, 21.0]
    mean = sum(values) / 3
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    got = interval(values)
    half = 4.3026527 * s / math.sqrt(3)
    assert got.method == "t" and got.n == 3
    assert math.isclose(got.low, mean - half, rel_tol=1e-6) and math.isclose(got.high, mean + half, rel_tol=1e-6)


def test_bootstrap_from_five_seeds_matches_a_brute_force_bootstrap():
    """8 values: SciPy's percentile bootstrap agrees with resampling by hand in numpy (another
    generator, 40,000 resamples) within a tenth of the interval's width."""
    values = [3.0, 7.5, 4.0, 9.0, 6.5, 5.0, 8.0, 2.5]
    got = interval(values)
    rng = np.random.default_rng(123)
    means = rng.choice(values, size=(40000, len(values)), replace=True).mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    width = high - low
    assert got.method == "bootstrap"
    assert abs(got.low - low) < 0.1 * width and abs(got.high - high) < 0.1 * width


def test_degenerate_and_single_values():
    assert interval([5.0]) is None
    same = interval([2.0, 2.0, 2.0])
    assert (same.low, same.high, same.std) == (2.0, 2.0, 0.0)


def test_pairing_uses_matching_seeds_only():
    seeds, diffs = paired({0: 10.0, 1: 20.0, 3: 5.0}, {0: 40.0, 1: 70.0, 2: 90.0})
    assert seeds == [0, 1] and diffs == [30.0, 50.0]


def test_verdicts():
    """Reproduced: the interval excludes 0 on the paper's side; opposite: on the other side;
    inconclusive: it includes 0; none from one seed or without a paper direction."""
    up = interval([30.0, 32.0, 31.0])
    down = interval([-30.0, -32.0, -31.0])
    wide = interval([-10.0, 30.0, 5.0])
    assert verdict(+60.0, up) == REPRODUCED and verdict(-5.0, down) == REPRODUCED
    assert verdict(+60.0, down) == OPPOSITE
    assert verdict(+60.0, wide) == INCONCLUSIVE
    assert verdict(+60.0, None) == ONE_SEED
    assert verdict(0.0, up).startswith("no verdict")
    one_seed = Comparison("MNIST", "ASR", "std", "adv", 10.0, 70.0, [0], [55.0])
    assert one_seed.verdict == ONE_SEED
    assert verdict_summary([one_seed]) == "0 of 1 pairs reproduced (no verdict possible: 1 seed)"
    three = Comparison("MNIST", "ASR", "std", "adv", 10.0, 70.0, [0, 1, 2], [30.0, 32.0, 31.0])
    assert verdict_summary([three, one_seed]) == "1 of 2 pairs reproduced (0 opposite, 0 inconclusive, 1 without a verdict)"


def test_a_clipped_interval_keeps_its_raw_ends_and_flags_them():
    """[+85.8, +105.4] of a difference of percentages becomes [+85.8, +100] with the high end
    flagged and 105.4 kept; an interval inside the range is left as it is, unflagged."""
    raw = stats.Interval(95.6, 4.0, 85.8, 105.4, 3, "t")
    clipped = raw.within(*stats.PERCENT_DIFFERENCE_RANGE)
    assert (clipped.low, clipped.high, clipped.clipped_low, clipped.clipped_high) == (85.8, 100.0, False, True)
    assert (clipped.raw_low, clipped.raw_high, clipped.mean) == (85.8, 105.4, 95.6)
    inside = stats.Interval(2.2, 0.6, 0.7, 3.7, 3, "t").within(*stats.PERCENT_RANGE)
    assert (inside.low, inside.high, inside.clipped_low, inside.clipped_high) == (0.7, 3.7, False, False)
    below = stats.Interval(0.5, 0.6, -1.0, 2.0, 3, "t").within(*stats.PERCENT_RANGE)
    assert (below.low, below.clipped_low, below.raw_low) == (0.0, True, -1.0)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8])
def test_p_value_below_005_exactly_when_the_interval_excludes_zero(n):
    """The p-value follows the interval's own method (t below 5 seeds, bootstrap from 5): over
    random samples of differences the two never disagree."""
    rng = np.random.default_rng(n)
    for _ in range(40):
        values = list(rng.normal(rng.uniform(-2, 2), 1.0, size=n))
        assert (stats.p_value(values) < 0.05) == stats.interval(values).excludes_zero()
    assert stats.p_value([1.0]) is None
    assert stats.p_value([3.0, 3.0, 3.0]) == 0.0 and stats.p_value([0.0, 0.0]) == 1.0


def test_holm_matches_the_adjusted_p_values_by_their_definition():
    """Holm's rejections equal those of the adjusted p-values written out by their definition:
    p~_(i) = max over j <= i of min(1, (m - j + 1) p_(j)), rejected when p~ <= 0.05 (missing
    p-values left out of m and never rejected)."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        m = int(rng.integers(1, 9))
        ps = [None if rng.random() < 0.15 else float(rng.choice([rng.uniform(0, 0.06), rng.uniform(0, 1)]))
              for _ in range(m)]
        present = sorted((p, i) for i, p in enumerate(ps) if p is not None)
        expected, running = [False] * m, 0.0
        for rank, (p, i) in enumerate(present):
            running = max(running, min(1.0, (len(present) - rank) * p))
            expected[i] = running <= 0.05
        assert stats.holm(ps) == expected
