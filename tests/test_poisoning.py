"""Exact poison counts and labels for both poisoning methods."""

import pytest
import torch

from tradeoff.config.build import section
from tradeoff.core.errors import TradeoffError
from tradeoff.data import ImageSet
from tradeoff.poisoning import plan_poison
from tradeoff.triggers import make_trigger

LABELS = torch.arange(10).repeat_interleave(100)  # 1,000 images, 100 per class
TRIGGER = make_trigger(section("trigger", size=2), (1, 8, 8))


def test_clean_label_stamps_a_fraction_of_the_target_class_and_keeps_labels():
    plan = plan_poison(LABELS, section("poison", method="clean-label", target=7, fraction_of_target_class=0.5), TRIGGER, 10, 0)
    assert len(plan.indices) == 50
    assert (LABELS[plan.indices] == 7).all()
    assert torch.equal(plan.labels, LABELS)
    assert plan.mask.sum() == 50 and plan.mask[plan.indices].all()


def test_dirty_label_draws_from_other_classes_and_relabels():
    plan = plan_poison(LABELS, section("poison", method="dirty-label", target=7, fraction_of_training_set=0.05), TRIGGER, 10, 0)
    assert len(plan.indices) == 50  # 5% of the whole training set
    assert (LABELS[plan.indices] != 7).all()
    assert (plan.labels[plan.indices] == 7).all()
    untouched = ~plan.mask
    assert torch.equal(plan.labels[untouched], LABELS[untouched])


def test_poisoning_is_fixed_by_the_seed_and_stamps_only_the_chosen_images():
    spec = section("poison", fraction_of_target_class=0.3)
    a, b = plan_poison(LABELS, spec, TRIGGER, 10, 5), plan_poison(LABELS, spec, TRIGGER, 10, 5)
    assert torch.equal(a.indices, b.indices)
    x = torch.zeros(1000, 1, 8, 8)
    out = ImageSet(x, LABELS).poisoned(a, TRIGGER, "cpu").x
    changed = (out != x).flatten(1).any(1)
    assert torch.equal(changed, a.mask)


def test_no_poison_and_impossible_requests():
    assert len(plan_poison(LABELS, section("poison", method="none"), TRIGGER, 10, 0).indices) == 0
    with pytest.raises(TradeoffError, match="outside the target class"):
        plan_poison(LABELS, section("poison", method="dirty-label", fraction_of_training_set=0.95), TRIGGER, 10, 0)
    with pytest.raises(TradeoffError, match="not a class"):
        plan_poison(LABELS, section("poison", target=12), TRIGGER, 10, 0)
