"""The report's statistics: the t interval against a hand computation with a printed t quantile,
the bootstrap interval against a brute-force numpy bootstrap, pairing by seed, and the verdict
rules."""

from __future__ import annotations

import math

import numpy as np

from tradeoff.stats import (INCONCLUSIVE, ONE_SEED, OPPOSITE, REPRODUCED, Comparison, interval, paired,
                                   verdict, verdict_summary)


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
