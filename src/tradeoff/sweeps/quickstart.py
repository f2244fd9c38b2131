"""The offline quickstart: scikit-learn's digits (no download), a 2x2 clean-label sticker on half
of class 7, one standard and one PGD-trained small CNN."""

from __future__ import annotations

import statistics

from tradeoff.config.build import load_spec
from tradeoff.core.errors import TradeoffError
from tradeoff.core.spec import Spec
from tradeoff.core.stats import Interval, interval
from tradeoff.pipeline.experiment import run_experiment
from tradeoff.records.handoff import TrainedRun
from tradeoff.records.record import BACKDOOR_SUCCESS

QUICKSTART = {
    "data": {"dataset": "digits"},
    "trigger": {"kind": "sticker", "pattern": "square", "size": 2},
    "poison": {"method": "clean-label", "target": 7, "fraction_of_target_class": 0.5},
    "model": {"name": "small-cnn"},
    "train": {"epochs": 40, "batch_size": 50},
    "adversarial_defense": {"attack": {"eps": 0.2}, "eps_ramp": 0.25},
    # the cpu preset's evaluation attack at eps 0.2: AutoAttack's APGD-CE + APGD-T leave at most
    # 2 points less (benchmarks/bench_eval_strength.py); PGD-7 had left 33 points more
    "eval": {"attack": {"eps": 0.2, "steps": 10, "step_size": 0.2, "step_schedule": "cosine", "loss": "margin",
                        "target_classes": 9}},
}

VARIANTS = {"standard": {"adversarial_defense": {"objective": "none"}},
            "pgd": {"adversarial_defense": {"objective": "pgd"}}}


def quickstart_specs(seed: int = 0) -> list[Spec]:
    """The standard and the PGD spec with ``seed`` (named ``standard``/``pgd``, ``-sN`` from seed 1)."""
    specs = []
    for name, variant in VARIANTS.items():
        spec = load_spec(None, {**variant, "seed": seed}, base=QUICKSTART)
        spec.name = name if seed == 0 else f"{name}-s{seed}"
        specs.append(spec)
    return specs


def run_quickstart(out_dir, show_progress: bool = True, seeds: int = 1) -> list[TrainedRun]:
    """Both specs for seeds 0 .. seeds-1, in (standard, pgd) pairs."""
    if seeds < 1:
        raise TradeoffError(f"--seeds must be at least 1, not {seeds}.")
    return [run_experiment(spec, out_dir, show_progress=show_progress, echo=show_progress, resume=True)
            for seed in range(seeds) for spec in quickstart_specs(seed)]


def paired_change(runs: list[TrainedRun], metric: str = BACKDOOR_SUCCESS) -> tuple[float, Interval | None]:
    """(mean, its :class:`~tradeoff.core.stats.Interval`) of pgd minus standard ``metric`` over the
    seeds' pairs; the interval is None with one seed."""
    diffs = [adv.metrics[metric] - std.metrics[metric] for std, adv in zip(runs[0::2], runs[1::2])]
    return statistics.fmean(diffs), interval(diffs)
