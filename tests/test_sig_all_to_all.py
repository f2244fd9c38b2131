"""SIG's signal against its formula computed by hand in numpy, the trigger's L-inf size, a tiny
clean-label SIG run; all-to-all dirty-label poisoning's labels and its success rates (over every
source class and per class) against counts made by hand on a tiny set; bad values refused with
one sentence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tradeoff.config.build import load_spec, section
from tradeoff.config.resolve import resolve
from tradeoff.core.errors import TradeoffError
from tradeoff.core.spec import EvalSpec
from tradeoff.data.imageset import ImageSet
from tradeoff.evaluation.metrics import evaluate
from tradeoff.pipeline.experiment import run_experiment
from tradeoff.poisoning import BackdoorTarget, backdoor_target, plan_poison
from tradeoff.sweeps import grids
from tradeoff.triggers import make_trigger, trigger_linf

CPU = torch.device("cpu")


def test_sig_signal_is_the_formula_computed_by_hand():
    """Training stamps clip(x + delta sin(2 pi j f / m), 0, 1) with m the width, the same on
    every row and channel, computed in numpy float64 on a non-square image; the test-time stamp
    uses test_delta; the defaults are BackdoorBench's (delta 40/255, f 6)."""
    shape = (3, 5, 12)
    x = torch.rand(4, *shape, generator=torch.Generator().manual_seed(0))
    trigger = make_trigger(section("trigger", kind="sig", delta=0.2, test_delta=0.35, frequency=3), shape)
    j = np.arange(shape[2])
    for delta, stamped in ((0.2, trigger.apply(x, trigger.training_corners(4, torch.Generator()))),
                           (0.35, trigger.apply(x))):
        by_hand = np.clip(x.double().numpy() + delta * np.sin(2 * np.pi * j * 3 / shape[2]), 0, 1)
        np.testing.assert_allclose(stamped.double().numpy(), by_hand, atol=1e-6)
    default = make_trigger(section("trigger", kind="sig"), (1, 28, 28))
    assert default.options.delta == pytest.approx(40 / 255) and default.options.frequency == 6


def test_trigger_linf_sizes():
    """The L-inf size (largest |x' - x| over pixels and x in [0, 1]): SIG's is the signal's
    largest |delta sin(2 pi j f / m)| over the columns (numpy), an opaque sticker's 1, a blend's
    alpha (its pattern holds 0 and 1)."""
    sig = make_trigger(section("trigger", kind="sig"), (1, 28, 28))
    expected = np.abs(40 / 255 * np.sin(2 * np.pi * np.arange(28) * 6 / 28)).max()
    assert trigger_linf(sig) == pytest.approx(expected, abs=1e-6)
    assert trigger_linf(make_trigger(section("trigger", kind="sticker", size=3), (1, 28, 28))) == pytest.approx(1.0)
    blend = make_trigger(section("trigger", kind="blend", alpha=0.1), (1, 28, 28))
    assert trigger_linf(blend) == pytest.approx(0.1, abs=1e-6)


def test_sig_bad_values_are_one_sentence():
    with pytest.raises(TradeoffError, match=r"trigger.delta must be in \[0, 1\]"):
        load_spec(None, {"trigger": {"kind": "sig", "delta": 2}})
    with pytest.raises(TradeoffError, match="trigger.frequency"):
        load_spec(None, {"trigger": {"kind": "sig", "frequency": 0}})


def test_tiny_sig_clean_label_run():
    """digits, 2 epochs: clean-label SIG on half of class 7 trains and measures its backdoor; the
    record holds the trigger's L-inf size."""
    spec = resolve(load_spec(None, {
        "data": {"dataset": "digits"}, "model": {"name": "small-cnn"}, "eval": {"adversarial": False},
        "train": {"epochs": 2, "batch_size": 50, "device": "cpu"}, "trigger": {"kind": "sig"},
        "poison": {"method": "clean-label", "target": 7, "fraction_of_target_class": 0.5}}))
    run = run_experiment(spec, show_progress=False)
    assert run.metrics["trigger"] == "sig" and run.metrics["poisoned_images"] > 0
    assert 0 <= run.metrics["backdoor_success_rate"] <= 1 and run.metrics["accuracy"] > 0.5
    assert run.metrics["trigger_linf"] == pytest.approx(trigger_linf(run.data.trigger))


# --------------------------------------------------------------------------- all-to-all


def test_all_to_all_labels_by_hand():
    """All-to-all: the chosen images come from every class (the target's too) and image y gets
    label (y + 1) mod C; the others keep theirs; the count is the fraction of the whole set."""
    labels = torch.arange(40) % 4
    spec = section("poison", method="dirty-label", target=2, fraction_of_training_set=0.5, target_mode="all-to-all")
    plan = plan_poison(labels, spec, make_trigger(section("trigger"), (1, 8, 8)), 4, seed=3)
    assert len(plan.indices) == 20 and set(labels[plan.indices].tolist()) == {0, 1, 2, 3}
    for i in range(40):
        expected = (int(labels[i]) + 1) % 4 if bool(plan.mask[i]) else int(labels[i])
        assert int(plan.labels[i]) == expected
    one = plan_poison(labels, section("poison", method="dirty-label", target=2, fraction_of_training_set=0.5),
                      make_trigger(section("trigger"), (1, 8, 8)), 4, seed=3)
    assert set(one.labels[one.indices].tolist()) == {2}  # all-to-one is unchanged


class ReadsPixels(nn.Module):
    """Predicts the class written in pixel (0, 0) (class / 10), except where the 1x1 sticker at
    the bottom-right is on and pixel (0, 1) says the backdoor fires: then that class plus one."""

    def forward(self, x):
        cls = (x[:, 0, 0, 0] * 10).round().long()
        fires = (x[:, 0, -1, -1] == 1) & (x[:, 0, 0, 1] > 0.5)
        return nn.functional.one_hot(torch.where(fires, (cls + 1) % 4, cls), 4).float()


def test_all_to_all_success_rates_by_hand():
    """On 12 hand-made images (4 classes) with a model whose clean and stamped predictions are
    known: the success rate over every source class and per class is the paper's (hits among
    images whose clean prediction is not their target), counted here by hand in Python."""
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    written = torch.tensor([0, 1, 0, 1, 1, 2, 2, 2, 2, 3, 0, 3])  # the class the model sees (some wrong)
    fires = torch.tensor([1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1, 1])
    x = torch.zeros(12, 1, 4, 4)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = written / 10, fires.float()
    trigger = make_trigger(section("trigger", kind="sticker", size=1), (1, 4, 4))
    metrics = evaluate(ReadsPixels(), ImageSet(x, y), trigger, BackdoorTarget(0, True, 4),
                       EvalSpec(adversarial=False, batch_size=5), CPU, show_progress=False)
    hits, totals = [0] * 4, [0] * 4
    for i in range(12):
        goal, clean = (int(y[i]) + 1) % 4, int(written[i])
        stamped = (clean + 1) % 4 if fires[i] else clean
        if clean != goal:
            totals[int(y[i])] += 1
            hits[int(y[i])] += stamped == goal
    assert metrics["backdoor_success_rate"] == pytest.approx(sum(hits) / sum(totals))
    for c in range(4):
        assert metrics[f"backdoor_success_rate_source_{c}"] == pytest.approx(hits[c] / totals[c])
    assert metrics["backdoor_target_mode"] == "all-to-all"


def test_all_to_all_target_and_bad_mode():
    """backdoor_target follows the spec; an unknown mode is one sentence."""
    spec = load_spec(None, {"poison": {"method": "dirty-label", "target_mode": "all-to-all"}})
    target = backdoor_target(spec.poison, 10)
    assert target.all_to_all and torch.equal(target.of(torch.tensor([0, 9])), torch.tensor([1, 0]))
    assert not backdoor_target(load_spec(None, {}).poison, 10).all_to_all
    with pytest.raises(TradeoffError, match="poison.target_mode"):
        load_spec(None, {"poison": {"method": "dirty-label", "target_mode": "some-to-one"}})


# --------------------------------------------------------------------------- the tables


@pytest.mark.parametrize("preset", ["smoke", "cpu", "paper"])
def test_beyond_attacks_sig_and_all_to_all_cells(preset):
    """beyond-attacks' SIG and all-to-all rows: each under standard, PGD and TRADES training, the
    adversarial cells naming the standard one as their twin; SIG clean-label on half of class 7,
    all-to-all dirty-label on 5% of the training set. Every attack of the table has its TRADES
    cell (24 per dataset: 8 attacks x 3 trainings)."""
    every = grids.expand(grids.load_table("beyond-attacks"), preset, seeds=1)
    assert sum(c.dataset == "mnist" for c in every.cells) == 24
    grid = grids.expand(grids.load_table("beyond-attacks"), preset, seeds=1, only=["sig-*", "all-to-all-*"])
    assert not [c.error for c in grid.cells if c.error]
    for ds in ("mnist", "cifar10"):
        cells = {c.slug: c for c in grid.cells if c.dataset == ds}
        assert len(cells) == 6
        for attack in ("sig", "all-to-all"):
            standard = cells[f"{attack}-standard"]
            for training, objective in (("standard", "none"), ("adv-training", "pgd"), ("trades", "trades")):
                c = cells[f"{attack}-{training}"]
                assert c.spec.adversarial_defense.objective == objective
                assert c.twin == (None if training == "standard" else standard.setting)
                if attack == "sig":
                    assert c.spec.trigger.kind == "sig" and c.spec.poison.method == "clean-label"
                else:
                    assert c.spec.poison.options.target_mode == "all-to-all"
                    assert c.spec.poison.options.fraction_of_training_set == 0.05
