"""End-to-end runs: the offline quickstart's specs and, when TRADEOFF_DATA is set, real MNIST."""

from pathlib import Path

import pytest

from tradeoff.config.build import load_spec
from tradeoff.pipeline.experiment import run_experiment
from tradeoff.sweeps.quickstart import quickstart_specs

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "mnist-cpu"


def test_quickstart_specs_run_offline_on_builtin_data():
    """The quickstart's standard spec (shortened) trains on scikit-learn's digits without any file."""
    spec = quickstart_specs()[0]
    spec.train.epochs = 3
    run = run_experiment(spec, show_progress=False)
    assert run.metrics["accuracy"] > 0.8 and run.metrics["collapsed"] is False
    sevens = int((run.data.train.targets == 7).sum())
    assert run.metrics["poisoned_images"] == round(0.5 * sevens)  # half of class 7, labels kept


@pytest.mark.slow
def test_real_mnist_standard_and_pgd(mnist_root):
    """On real MNIST (the training images there, 2,000 test images, 3 epochs), the standard model
    learns the task and has no robustness, the PGD model gains robustness."""
    overrides = [f"data.root={mnist_root}", "data.test_subset=2000",
                 "train.epochs=3", "eval.attack.steps=5"]
    std = run_experiment(load_spec(CONFIGS / "standard.yaml", overrides), show_progress=False).metrics
    adv = run_experiment(load_spec(CONFIGS / "pgd.yaml", overrides + ["adversarial_defense.attack.steps=5"]),
                         show_progress=False).metrics
    assert std["accuracy"] > 0.9 and std["adversarial_robustness"] < 0.1
    assert adv["adversarial_robustness"] > std["adversarial_robustness"] + 0.1


def test_quickstart_paired_change_over_seeds_by_hand():
    """The quickstart's summary: the pgd - standard difference per seed, its mean, sample std and
    95% t interval, against a hand computation (t_{0.975, 2} = 4.302653 from tables)."""
    from types import SimpleNamespace

    from tradeoff.sweeps.quickstart import paired_change

    runs = [SimpleNamespace(metrics={"backdoor_success_rate": v}) for v in (0.1, 0.2, 0.0, 0.3, 0.2, 0.4)]
    mean, ci = paired_change(runs)  # differences 0.1, 0.3, 0.2
    assert mean == pytest.approx(0.2) and ci.std == pytest.approx(0.1) and ci.method == "t"
    half = 4.302653 * 0.1 / 3 ** 0.5
    assert ci.low == pytest.approx(0.2 - half, abs=1e-6) and ci.high == pytest.approx(0.2 + half, abs=1e-6)
    assert paired_change(runs[:2])[1] is None
