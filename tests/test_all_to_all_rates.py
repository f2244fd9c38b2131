"""An all-to-all backdoor (image y sent to (y + 1) mod C) measured the same way everywhere: the
learning curve's points, the backdoor defences' before/after measurements and the trigger
saliency use each image's own target, checked against brute-force per-image loops on the same
model and images; Neural Cleanse's one-target-class options are refused for it in one sentence,
and its per-label detection is judged with every label backdoored."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

from tradeoff.backdoor_defenses import run_backdoor_defense
from tradeoff.config.build import load_spec, section
from tradeoff.core.errors import TradeoffError
from tradeoff.data.imageset import ImageSet
from tradeoff.evaluation.saliency import trigger_saliency
from tradeoff.pipeline.experiment import run_experiment
from tradeoff.poisoning import BackdoorTarget
from tradeoff.triggers import make_trigger

CLASSES = 10
# digits (8x8, 10 classes), 30% of the training set relabelled y -> y + 1 under a 3x3 sticker
# (learned to about 85% in 6 epochs of Adam); 6 held-out clean images a class for the defences;
# a curve point every 50 steps on 150 of the 200 test images
ALL_TO_ALL = {
    "name": "a2a", "data": {"dataset": "digits", "holdout_per_class": 6, "test_subset": 200},
    "model": {"name": "small-cnn"}, "trigger": {"kind": "sticker", "size": 3},
    "poison": {"method": "dirty-label", "target": 3, "fraction_of_training_set": 0.3, "target_mode": "all-to-all"},
    "train": {"epochs": 6, "batch_size": 50, "optimizer": "adam", "lr": 0.005, "device": "cpu"},
    "eval": {"adversarial": False, "every_steps": 50, "curve_images": 150, "masking_checks": False},
    "backdoor_defenses": [{"name": "fine-tuning", "tune_epochs": 1},
                          {"name": "neural-cleanse", "epochs": 1, "reverse_images": 40, "unlearn_epochs": 0}],
}


def brute_force_rates(model, images, trigger, goal_of) -> dict:
    """The paper's success rate (among images whose clean prediction is not their target, the share
    predicted as it once stamped), overall and per source class, one image at a time in Python."""
    hits, totals = [0] * CLASSES, [0] * CLASSES
    model.eval()
    with torch.no_grad():
        for x, label in images.loader(1):  # one image at a time
            y = int(label)
            goal = goal_of(y)
            clean = int(model(x).argmax(1))
            stamped = int(model(trigger.apply(x)).argmax(1))
            if clean != goal:
                totals[y] += 1
                hits[y] += int(stamped == goal)
    return {"backdoor_success_rate": sum(hits) / max(sum(totals), 1),
            **{f"backdoor_success_rate_source_{c}": hits[c] / max(totals[c], 1) for c in range(CLASSES)}}


def each_own(y: int) -> int:
    return (y + 1) % CLASSES


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("all-to-all")
    trained = run_experiment(load_spec(None, ALL_TO_ALL), out, show_progress=False)
    trained.curve_file = out / "a2a" / "curve.csv"
    return trained


def test_the_curve_uses_each_images_own_target(run):
    """The curve's last point (the final model, on the curve's seeded 150 test images) is the
    all-to-all success rate a per-image loop computes on that model and those images, and not
    the all-to-one rate towards poison.target that the curve measured before."""
    with open(run.curve_file, newline="") as fh:
        last = list(csv.DictReader(fh))[-1]
    subset = run.data.test.subset(150, run.spec.seed)
    expected = brute_force_rates(run.model, subset, run.data.trigger, each_own)
    assert float(last["backdoor_success_rate"]) == pytest.approx(expected["backdoor_success_rate"], abs=1e-12)
    towards_three = brute_force_rates(run.model, subset, run.data.trigger, lambda y: 3)
    assert towards_three["backdoor_success_rate"] != pytest.approx(expected["backdoor_success_rate"], abs=0.05)
    assert expected["backdoor_success_rate"] > 0.5  # the backdoor was learned: the check has teeth


def test_final_evaluation_is_the_brute_force_loop(run):
    """The run's own evaluation on the whole test set, overall and per source class, against the
    per-image loop."""
    expected = brute_force_rates(run.model, run.data.test, run.data.trigger, each_own)
    for key, value in expected.items():
        assert run.metrics[key] == pytest.approx(value, abs=1e-12), key


def test_defences_measure_before_as_the_final_evaluation(run):
    """A purifier's (fine-tuning) and Neural Cleanse's before-measurements on the whole test set
    equal the run's final evaluation (accuracy, success rate, robust accuracy): the same
    per-image targets. Neural Cleanse without unlearning leaves the model as it was (after =
    before, DER 0.5)."""
    for prefix in ("fine_tuning", "cleanse"):
        assert run.metrics.get(f"{prefix}_error") is None
        for name in ("accuracy", "backdoor_success_rate", "backdoor_robust_accuracy"):
            assert run.metrics[f"{prefix}_{name}_before"] == run.metrics[name], (prefix, name)
    assert run.metrics["cleanse_backdoor_success_rate_after"] == run.metrics["backdoor_success_rate"]
    assert run.metrics["cleanse_der"] == 0.5


def test_neural_cleanse_under_all_to_all(run):
    """Every label is reversed and counts as backdoored (each is its predecessor's target): no
    false flag, no clean label for a false-positive rate or an AUROC; the one-target numbers are None."""
    m = run.metrics
    assert m["cleanse_labels"] == "all"
    for key in ("cleanse_target_mask_l1", "cleanse_target_reversed_success", "cleanse_anomaly_index",
                "cleanse_target_flagged", "cleanse_false_positive_rate", "cleanse_auroc"):
        assert m[key] is None, key
    assert m["cleanse_false_flags"] == 0
    assert m["cleanse_precision"] == (1.0 if m["cleanse_flagged_labels"] else None)


@pytest.mark.parametrize("option", [{"labels": "target"}, {"unlearn": "target"}])
def test_neural_cleanse_target_options_are_refused_for_all_to_all(option, run):
    """``labels: target`` and ``unlearn: target`` name one target class: one sentence when the spec
    is built, and again when the entry is run on an all-to-all run from Python."""
    raw = {**ALL_TO_ALL, "backdoor_defenses": [{"name": "neural-cleanse", **option}]}
    with pytest.raises(TradeoffError, match=f"backdoor_defenses.neural-cleanse.{next(iter(option))}: target"):
        load_spec(None, raw)
    with pytest.raises(TradeoffError, match="all-to-all"):
        run_backdoor_defense({"name": "neural-cleanse", **option}, run, log=lambda m: None)
    one = {**raw, "poison": {**ALL_TO_ALL["poison"], "target_mode": "all-to-one"}}
    assert load_spec(None, one).backdoor_defenses[0].options.labels == option.get("labels", "all")


def test_saliency_uses_each_images_own_target_logit():
    """For a linear model d logit_t / d x is the weight row w_t: with an all-to-all target every
    image is measured (no label is its own target) on its own row w_(y+1 mod 3), the share
    sum |w| on the 1-pixel sticker / sum |w|, averaged by hand."""
    shape = (1, 4, 4)
    torch.manual_seed(0)
    linear = nn.Linear(16, 3)
    model = nn.Sequential(nn.Flatten(), linear).eval()
    y = torch.arange(12) % 3
    data = ImageSet(torch.rand(12, *shape), y)
    trigger = make_trigger(section("trigger", size=1), shape)
    s = trigger_saliency(model, data, trigger, BackdoorTarget(0, True, 3), shape, "cpu", batch_size=5)
    w = linear.weight.detach().abs()
    by_hand = sum(float(w[(c + 1) % 3, 15] / w[(c + 1) % 3].sum()) for c in y.tolist()) / 12
    assert s.images == 12 and s.share == pytest.approx(by_hand, abs=1e-6)
    assert torch.allclose(s.tensors["abs_gradients"][0].flatten(), w[1])  # image 0 (label 0): row 1
