"""Narcissus (Zeng et al. 2023): the trigger optimisation's objective decreasing and its delta
within the L-inf bound, the budget rounded up to whole images (at least one) and drawn from the
target class, the POOD digits resized to the dataset's shape, the magnified test-time stamp by
hand, the trigger kept in the run folder and reused by `tradeoff defend` and on resume, and bad
pairings refused when the spec is validated."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tradeoff.config.build import load_spec
from tradeoff.config.resolve import resolve
from tradeoff.core.errors import TradeoffError
from tradeoff.models import build_model
from tradeoff.pipeline.defend import load_trained_run
from tradeoff.pipeline.experiment import run_experiment
from tradeoff.poisoning import plan_poison
from tradeoff.poisoning.narcissus import digits_like, optimise_trigger, poison_count
from tradeoff.sweeps import grids
from tradeoff.training import narcissus as narcissus_step
from tradeoff.triggers import CORNERS, make_trigger

CPU = torch.device("cpu")


def test_the_objective_decreases_and_the_trigger_stays_in_the_bound():
    """Against a fixed random model (linear, and the small CNN): the mean cross-entropy towards
    the target class falls from pass to pass, and every entry of delta lies in [-eps, eps]."""
    torch.manual_seed(0)
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 11))
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    eps = 16 / 255
    delta, losses = optimise_trigger(linear, x, 10, rounds=40, lr=0.05, eps=eps, batch_size=64,
                                     generator=torch.Generator().manual_seed(2))
    assert losses[-1] < losses[0] - 0.1 and all(b <= a + 1e-6 for a, b in zip(losses, losses[1:]))
    cnn = build_model("small-cnn", (1, 28, 28), 11, 1.0)
    _, cnn_losses = optimise_trigger(cnn, x, 10, rounds=10, lr=0.01, eps=eps, batch_size=64,
                                     generator=torch.Generator().manual_seed(2))
    assert cnn_losses[-1] < cnn_losses[0]
    assert float(delta.abs().max()) <= eps + 1e-7 and float(delta.abs().max()) > eps - 1e-6  # the bound binds
    assert delta.shape == (1, 28, 28)


@pytest.mark.parametrize("n,fraction,count", [(60000, 0.0005, 30), (5000, 0.0005, 3), (100, 0.0005, 1),
                                              (1000, 0.001, 1), (50000, 0.0005, 25)])
def test_the_budget_is_rounded_up_to_at_least_one_image(n, fraction, count):
    assert poison_count(n, fraction) == count


def test_the_plan_draws_the_budget_from_the_target_class_and_keeps_labels():
    spec = resolve(load_spec(None, {"poison": {"method": "narcissus", "target": 3}, "trigger": {"kind": "narcissus"}}))
    labels = torch.arange(5000) % 10
    trigger = make_trigger(spec.trigger, (1, 28, 28))
    plan = plan_poison(labels, spec.poison, trigger, 10, seed=0)
    assert len(plan.indices) == 3 and bool((labels[plan.indices] == 3).all()) and torch.equal(plan.labels, labels)
    with pytest.raises(TradeoffError, match="the target class has 500"):
        plan_poison(labels, load_spec(None, {"poison": {"method": "narcissus", "target": 3,
                                                        "fraction_of_training_set": 0.2},
                                             "trigger": {"kind": "narcissus"}}).poison, trigger, 10, seed=0)


def test_the_stamps_add_delta_for_training_and_three_times_it_at_test():
    trigger = make_trigger(load_spec(None, {"poison": {"method": "narcissus"}, "trigger": {"kind": "narcissus"}}).trigger,
                           (1, 4, 4))
    delta = torch.linspace(-0.06, 0.06, 16).reshape(1, 4, 4)
    trigger = trigger.with_pattern(delta)
    x = torch.full((2, 1, 4, 4), 0.5)
    trained = trigger.apply(x, torch.full((2,), CORNERS.index("top-left")))
    assert torch.allclose(trained, (x + delta).clamp(0, 1))
    assert torch.allclose(trigger.apply(x), (x + 3 * delta).clamp(0, 1))


def test_pood_digits_fit_the_datasets_shape():
    x, y = digits_like((3, 32, 32))
    assert x.shape == (1797, 3, 32, 32) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert sorted(y.unique().tolist()) == list(range(10))


def _spec():
    raw = {"data": {"dataset": "digits"}, "model": {"name": "small-cnn"},
           "train": {"epochs": 1, "batch_size": 100, "device": "cpu"},
           "eval": {"adversarial": False, "masking_checks": False, "saliency": False},
           "poison": {"method": "narcissus", "target": 7, "fraction_of_training_set": 0.01, "surrogate_epochs": 1,
                      "warmup_epochs": 1, "rounds": 2, "ood_images": 300},
           "trigger": {"kind": "narcissus"}}
    return resolve(load_spec(None, raw))


def test_the_saved_trigger_is_reused_by_defend_and_on_resume(tmp_path, one_thread, monkeypatch):
    spec = _spec()
    run = run_experiment(spec, tmp_path, show_progress=False, run_name="narcissus")
    folder = tmp_path / "narcissus"
    saved = load_file(str(folder / "poison.safetensors"))
    assert torch.equal(saved["trigger"], run.data.trigger.pattern)
    assert float(saved["trigger"].abs().max()) <= 16 / 255 + 1e-7
    count = poison_count(len(run.data.train), 0.01)
    assert run.metrics["poisoned_images"] == count
    assert f"narcissus: {count} poisoned images (1% of {len(run.data.train)}" in (folder / "log.txt").read_text()

    def refuse(*args, **kwargs):
        raise AssertionError("the trigger was optimised again")

    monkeypatch.setattr(narcissus_step, "optimise_trigger", refuse)
    assert torch.equal(load_trained_run(folder).data.trigger.pattern, saved["trigger"])
    mine = torch.full_like(saved["trigger"], 0.01)
    save_file({**saved, "trigger": mine}, str(folder / "poison.safetensors"))
    (folder / "unfinished.json").write_text(json.dumps({"stage": "training"}) + "\n")
    resumed = run_experiment(spec, tmp_path, show_progress=False, run_name="narcissus", resume=True)
    assert torch.equal(resumed.data.trigger.pattern, mine)
    assert "the trigger read from the run folder" in (folder / "log.txt").read_text()


@pytest.mark.parametrize("raw,words", [
    ({"poison": {"method": "narcissus"}}, "set trigger.kind to narcissus"),
    ({"poison": {"method": "clean-label"}, "trigger": {"kind": "narcissus"}}, "optimised by poison.method narcissus"),
    ({"poison": {"method": "narcissus", "ood_dataset": "imagenet"}, "trigger": {"kind": "narcissus"}},
     "not an in-memory dataset"),
    ({"poison": {"method": "narcissus", "fraction_of_training_set": 0}, "trigger": {"kind": "narcissus"}},
     "fraction_of_training_set"),
    ({"data": {"dataset": "imagefolder"}, "poison": {"method": "narcissus"}, "trigger": {"kind": "narcissus"}},
     "streamed"),
])
def test_bad_narcissus_specs_are_one_sentence_at_validation(raw, words):
    with pytest.raises(TradeoffError, match=words):
        load_spec(None, raw)


@pytest.mark.parametrize("preset,epochs,rounds", [("smoke", 1, 2), ("cpu", 20, 100), ("paper", 200, 1000)])
def test_beyond_attacks_has_wanet_and_narcissus_under_three_trainings(preset, epochs, rounds):
    """WaNet and Narcissus each under standard, PGD and TRADES training (the adversarial cells
    naming the standard one as their twin), Narcissus's surrogate and rounds as the preset names
    them (presets.yaml, components) and the original's elsewhere."""
    grid = grids.expand(grids.load_table("beyond-attacks"), preset, seeds=1, datasets=["mnist"])
    assert not [c.error for c in grid.cells if c.error]
    cells = {c.slug: c for c in grid.cells}
    for attack in ("wanet", "narcissus"):
        objectives = {d: cells[f"{attack}-{d}"].spec.adversarial_defense.objective
                      for d in ("standard", "adv-training", "trades")}
        assert objectives == {"standard": "none", "adv-training": "pgd", "trades": "trades"}
        for d in ("adv-training", "trades"):
            assert cells[f"{attack}-{d}"].twin == cells[f"{attack}-standard"].setting
        spec = cells[f"{attack}-standard"].spec
        assert spec.poison.method == attack and spec.trigger.kind == attack and spec.poison.target == 7
    options = cells["narcissus-standard"].spec.poison.options
    assert (options.surrogate_epochs, options.rounds, options.fraction_of_training_set) == (epochs, rounds, 0.0005)
