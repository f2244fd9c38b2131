"""AutoAttack through pyautoattack: the metric against the package called directly, the spec key's
validation, the missing extra, and the evaluation attacks the cpu preset and the quickstart give."""

import dataclasses
import sys

import pytest
import torch
from torch import nn

from tradeoff.config.build import load_spec, section
from tradeoff.config.resolve import resolve
from tradeoff.core.errors import TradeoffError
from tradeoff.core.spec import AttackSpec, AutoAttackSpec, EvalSpec
from tradeoff.data import ImageSet
from tradeoff.evaluation.metrics import evaluate
from tradeoff.sweeps import grids
from tradeoff.sweeps.quickstart import quickstart_specs
from tradeoff.triggers import make_trigger

pyautoattack = pytest.importorskip("pyautoattack")


# AutoAttack's many tiny operations run about ten times slower on two threads of a busy CPU.
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_problem(n: int = 60):
    """A fixed random linear classifier on 1x6x6 images, labelled by its own clean predictions
    (clean accuracy 1, so the robustness is what the attacks leave)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 10)).eval()
    x = torch.rand(n, 1, 6, 6)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, ImageSet(x, y)


def test_autoattack_metric_equals_pyautoattack_run_directly():
    """evaluate's autoattack_robustness on a seeded subset of 40 of 60 images equals AutoAttack
    (APGD-CE + APGD-T, eps 0.05) called directly on the same 40 images with the same seed; the PGD
    robustness is still reported and the global random state is as without AutoAttack."""
    model, test = tiny_problem()
    trigger = make_trigger(section("trigger", size=1), (1, 6, 6))
    aa = AutoAttackSpec(images=40, attacks=["apgd-t", "apgd-ce"])  # run in the version's order
    spec = EvalSpec(attack=AttackSpec(eps=0.05, step_size=0.01, steps=10), autoattack=aa, batch_size=25)
    torch.manual_seed(1)
    m = evaluate(model, test, trigger, 7, spec, "cpu", show_progress=False, seed=3)
    after = torch.get_rng_state()
    torch.manual_seed(1)
    evaluate(model, test, trigger, 7, EvalSpec(attack=spec.attack, batch_size=25), "cpu", show_progress=False)
    assert torch.equal(torch.get_rng_state(), after)  # AutoAttack's own seeding is undone

    idx = torch.randperm(60, generator=torch.Generator().manual_seed(3))[:40].sort().values
    x, y = test.x[idx], test.y[idx]
    adversary = pyautoattack.AutoAttack(model, norm="Linf", eps=0.05, version="standard", seed=3, device="cpu")
    adversary.attacks_to_run = ["apgd-ce", "apgd-t"]
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=25)
    with torch.no_grad():
        expected = (model(x_adv).argmax(1) == y).float().mean().item()
    assert 0 < expected < 1  # the comparison says something: some images fall, some hold
    assert m["autoattack_robustness"] == expected
    assert m["autoattack_images"] == 40 and m["autoattack_version"] == "standard"
    assert m["autoattack_attacks"] == "apgd-ce, apgd-t" and m["autoattack_eps"] == 0.05
    assert m["autoattack_norm"] == "linf" and m["adversarial_robustness"] is not None


def test_autoattack_at_l2_uses_the_eval_attacks_norm():
    """At L2 the metric equals the package's L2 AutoAttack (APGD-CE only) on all 30 images."""
    model, test = tiny_problem(30)
    trigger = make_trigger(section("trigger", size=1), (1, 6, 6))
    spec = EvalSpec(attack=AttackSpec(norm="l2", eps=0.3, step_size=0.1, steps=5),
                    autoattack=AutoAttackSpec(images=100, attacks=["apgd-ce"]))
    m = evaluate(model, test, trigger, 7, spec, "cpu", show_progress=False, seed=0)
    adversary = pyautoattack.AutoAttack(model, norm="L2", eps=0.3, version="standard", seed=0, device="cpu")
    adversary.attacks_to_run = ["apgd-ce"]
    x_adv, _ = adversary.run_standard_evaluation(test.x, test.y, batch_size=500)
    with torch.no_grad():
        expected = (model(x_adv).argmax(1) == test.y).float().mean().item()
    assert m["autoattack_robustness"] == expected and m["autoattack_images"] == 30


@pytest.mark.parametrize("autoattack, message", [
    ({"version": "strongest"}, "spec key 'eval.autoattack.version' must be one of 'standard', 'plus', 'rand', "
                               "not 'strongest'."),
    ({"images": 0}, "eval.autoattack.images must be at least 1, not 0."),
    ({"attacks": ["fab"]}, "eval.autoattack.attacks: 'fab' is not an attack of version 'standard' "
                           "(apgd-ce, apgd-t, fab-t, square)."),
    ({"attacks": []}, "eval.autoattack.attacks is empty; leave it unset to run all of the version's attacks."),
    ({"imgs": 10}, "unknown spec key 'eval.autoattack.imgs' (did you mean 'eval.autoattack.images'?)."),
])
def test_autoattack_spec_mistakes_are_one_sentence(autoattack, message):
    """Each mistake in eval.autoattack is the exact sentence, raised while the spec is read."""
    with pytest.raises(TradeoffError) as e:
        load_spec(None, {"eval": {"autoattack": autoattack}})
    assert str(e.value) == message


def test_autoattack_key_defaults_and_leaves_digests_alone():
    """``eval.autoattack: {}`` is version standard on 1000 images; unset, it is None and the
    default spec's digest is the one version 0.2.0 gave it before the key existed (earlier run
    folders keep theirs); set, it changes the digest."""
    spec = load_spec(None, {"eval": {"autoattack": {}}})
    assert spec.eval.autoattack == AutoAttackSpec(version="standard", images=1000, attacks=None)
    plain = load_spec(None, {})
    assert plain.eval.autoattack is None
    assert plain.digest() == "2a25017eb7f6"  # computed with the code before eval.autoattack
    assert spec.digest() != plain.digest()


def test_missing_extra_is_one_sentence_before_training(monkeypatch):
    """Without pyautoattack (its import fails), a spec asking for AutoAttack is refused while
    being read, naming the extra; a spec without it still loads."""
    monkeypatch.setitem(sys.modules, "pyautoattack", None)  # `import pyautoattack` raises ImportError
    with pytest.raises(TradeoffError) as e:
        load_spec(None, {"eval": {"autoattack": {"images": 10}}})
    assert str(e.value) == ('eval.autoattack needs the pyautoattack package, which is not installed: '
                            'pip install "tradeoff[autoattack]".')
    assert load_spec(None, {}).eval.autoattack is None


def _cell_attack(preset: str, dataset: str) -> AttackSpec:
    g = grids.expand(grids.load_table("table1a"), preset, seeds=1, datasets=[dataset], only=["adv-training"])
    return g.cells[0].spec.eval.attack


def test_cpu_preset_and_quickstart_evaluation_attacks():
    """The evaluation attack each model gets, resolved: the cpu preset's per dataset (MNIST: 20
    margin steps, each image's first fooling iterate kept, CIFAR-10: 10, both towards each of the 9
    wrong classes with cosine steps from eps), the quickstart's (as CIFAR-10's, at eps 0.2), Table
    1(b)'s (MNIST cpu: the preset's at eps 0.4; paper: the original's margin PGD-20), the smoke
    preset's 2 protocol steps and the paper's PGD-10."""
    scheme = dict(steps=10, restarts=1, loss="margin", target_classes=9, step_schedule="cosine", random_start=True)
    mnist = AttackSpec(eps=0.3, step_size=0.3, **{**scheme, "steps": 20}, first_success=True)
    assert _cell_attack("cpu", "mnist") == mnist
    cifar = _cell_attack("cpu", "cifar10")
    assert cifar == AttackSpec(eps=8 / 255, step_size=cifar.step_size, **scheme)
    assert abs(cifar.step_size - 8 / 255) < 1e-9
    quick = resolve(quickstart_specs()[1]).eval.attack
    assert quick == AttackSpec(eps=0.2, step_size=0.2, **scheme)
    def table1b(preset):
        return grids.expand(grids.load_table("table1b"), preset, seeds=1, datasets=["mnist"]).cells[0].spec.eval.attack
    assert table1b("cpu") == dataclasses.replace(mnist, eps=0.4, step_size=0.4)
    assert table1b("paper") == AttackSpec(eps=0.4, step_size=0.1, steps=20, loss="margin")
    assert _cell_attack("smoke", "mnist") == AttackSpec(eps=0.3, step_size=0.05, steps=2)
    assert _cell_attack("paper", "mnist") == AttackSpec(eps=0.3, step_size=0.05, steps=10)
