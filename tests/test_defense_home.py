"""The home of post-training defences: the worked example of ARCHITECTURE.md (a purification
defence is one module and one registration), the shared fine-tune loop against a hand-written
SGD loop, attack budgets in a defence's options filled from the dataset's protocol, the defender's
clean data, and backdoor-defence entries parsed once into their options."""

from __future__ import annotations

import ast
import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tradeoff
from tradeoff.attacks.pgd import perturb
from tradeoff.backdoor_defenses import BACKDOOR_DEFENSES, try_backdoor_defense
from tradeoff.backdoor_defenses.defender import describe_holdout, holdout_images
from tradeoff.backdoor_defenses.finetune import FineTuneOptions, Tuning, fine_tune
from tradeoff.backdoor_defenses.measure import before_after_metrics
from tradeoff.cli import main
from tradeoff.config.build import load_spec
from tradeoff.config.resolve import resolve, resolve_attack
from tradeoff.core.errors import TradeoffError
from tradeoff.core.spec import AttackSpec, BackdoorDefenseSpec, option
from tradeoff.data import DATASETS, ImageSet
from tradeoff.models.mode import model_mode
from tradeoff.pipeline.experiment import run_experiment
from tradeoff.records.handoff import TrainedRun


@dataclass
class HeadTuneOptions(FineTuneOptions):  # tune_epochs, tune_lr, ... come with it
    metric_prefix: ClassVar[str] = "head_tune"
    attack: AttackSpec = option(factory=AttackSpec, doc="the adversarial examples it tunes on; unset: the "
                                                       "dataset's protocol")


def head_tune(run, options, log, show_progress) -> dict:
    """Fine-tune the linear classifier on adversarial examples of the defender's clean images."""
    clean = holdout_images(run, "head-tune")

    def adversarial_loss(model, x, y):
        with model_mode(model, False):
            x = perturb(model, x, y, options.attack)
        return F.cross_entropy(model(x), y)

    tuned = fine_tune(run.model, clean, adversarial_loss, Tuning.of(options), run.spec.seed, show_progress,
                      parameters=lambda model: model.classifier.parameters())
    run.add_artifact("head_tune_model.safetensors", tuned.state_dict())
    before, after = run.evaluation.measure(run.model), run.evaluation.measure(tuned)
    return {"head_tune_clean_data": describe_holdout(clean), **before_after_metrics("head_tune", before, after)}


@pytest.fixture
def head_tune_registered():
    BACKDOOR_DEFENSES.register("head-tune", options=HeadTuneOptions)(head_tune)
    yield
    BACKDOOR_DEFENSES.unregister("head-tune")


def test_a_new_purification_defense_is_one_function_and_one_registration(head_tune_registered, mnist_root,
                                                                         one_thread, capsys):
    """The worked example end to end on real MNIST: parsed once into its options when the spec is
    built, its attack budget filled from MNIST's protocol by resolve (against ``resolve_attack``),
    tuned on the held-out images only (the features untouched), measured before and after (before
    = the pipeline's own clean accuracy on the same test set), refused in one sentence without a
    holdout, bad options refused before training, listed with its options."""
    spec = load_spec(None, {
        "data": {"root": mnist_root, "train_subset": 600, "test_subset": 200, "holdout_per_class": 4},
        "poison": {"method": "dirty-label", "fraction_of_training_set": 0.05},
        "model": {"name": "small-cnn"}, "train": {"steps": 10, "batch_size": 50},
        "eval": {"adversarial": False, "masking_checks": False, "saliency": False},
        "backdoor_defenses": [{"name": "head-tune", "tune_epochs": 2, "tune_batch_size": 20,
                               "attack": {"steps": 2}}]})
    entry = spec.backdoor_defenses[0]
    assert isinstance(entry, BackdoorDefenseSpec) and isinstance(entry.options, HeadTuneOptions)
    assert entry.options.attack.eps is None and entry.to_dict() == {
        "name": "head-tune", "tune_epochs": 2, "tune_batch_size": 20, "attack": dataclasses.asdict(entry.options.attack)}
    protocol = DATASETS.get("mnist").protocol
    assert resolve(spec).backdoor_defenses[0].options.attack == resolve_attack(AttackSpec(steps=2), protocol)

    run = run_experiment(spec, show_progress=False)
    m = run.metrics
    assert "head_tune_error" not in m, m.get("head_tune_error")
    assert m["head_tune_clean_data"] == "40 held-out training images"
    assert m["head_tune_accuracy_before"] == m["accuracy"]
    assert m["head_tune_accuracy_after"] is not None and m["head_tune_der"] is not None
    tuned, original = run.artifacts["head_tune_model.safetensors"], run.model.state_dict()
    changed = {k for k in original if not torch.equal(tuned[k].cpu(), original[k].cpu())}
    assert changed and all(k.startswith("classifier.") for k in changed)

    without = TrainedRun(run.spec, run.model, run.metrics, dataclasses.replace(run.data, holdout=None), run.device)
    error = try_backdoor_defense(run.spec.backdoor_defenses[0], without, log=lambda _: None)["head_tune_error"]
    assert "data.holdout_per_class" in error and error.endswith(".")
    with pytest.raises(TradeoffError, match="backdoor_defenses.head-tune.tune_lr must be greater than 0"):
        load_spec(None, {"backdoor_defenses": [{"name": "head-tune", "tune_lr": 0}]})
    assert main(["list", "backdoor-defenses"]) == 0
    listed = capsys.readouterr().out
    assert "head-tune" in listed and "tune_epochs = 10" in listed


def test_fine_tune_equals_a_hand_written_sgd_loop():
    """fine_tune's copy, after 2 epochs of SGD with momentum and weight decay on a loss given per
    batch, equals the same loop written out (same seeded batches); the original model is
    untouched and the copy comes back in eval mode."""
    g = torch.Generator().manual_seed(0)
    images = ImageSet(torch.rand(30, 1, 4, 4, generator=g), torch.randint(0, 3, (30,), generator=g))
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Dropout(0.0), nn.Linear(8, 3)).eval()
    start = copy.deepcopy(model.state_dict())
    tuning = Tuning(epochs=2, batch_size=8, lr=0.1, momentum=0.9, weight_decay=1e-3)

    def loss(m, x, y):
        return F.cross_entropy(m(x), y) + 0.01 * m(x).pow(2).mean()

    tuned = fine_tune(model, images, loss, tuning, seed=5)
    reference = copy.deepcopy(model).train()
    sgd = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    batches = images.batches(8, 5, torch.device("cpu"))
    for epoch in range(2):
        for x, y in batches.epoch(epoch):
            sgd.zero_grad()
            loss(reference, x, y).backward()
            sgd.step()
    for a, b in zip(tuned.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    assert not tuned.training and not model.training
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())


def test_fine_tune_optimises_only_the_chosen_parameters():
    """With ``parameters``, the other parameters keep their values exactly."""
    images = ImageSet(torch.rand(12, 1, 2, 2), torch.randint(0, 2, (12,)))
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Linear(4, 2))
    tuned = fine_tune(model, images, lambda m, x, y: F.cross_entropy(m(x), y), Tuning(1, 4, 0.5), seed=0,
                      parameters=lambda m: m[2].parameters())
    assert torch.equal(tuned[1].weight, model[1].weight) and not torch.equal(tuned[2].weight, model[2].weight)


def test_entries_are_parsed_once_and_write_back_as_written():
    """A spec's entries are typed (options dataclass, prefix), their plain data is what was written
    (so digests stay as they were), an entry built in Python writes its changed options, and the
    spec reads back equal."""
    written = [{"name": "spectral", "variant": "textbook", "retrain": False, "prefix": "spectral_textbook"},
               {"name": "neural-cleanse", "labels": "target"}]
    spec = load_spec(None, {"data": {"holdout_per_class": 5}, "backdoor_defenses": written})
    first, second = spec.backdoor_defenses
    assert first.options.variant == "textbook" and first.metric_prefix == "spectral_textbook"
    assert second.metric_prefix == "cleanse" and second.prefix is None
    assert spec.to_dict()["backdoor_defenses"] == [
        {"name": "spectral", "prefix": "spectral_textbook", "variant": "textbook", "retrain": False},
        {"name": "neural-cleanse", "labels": "target"}]
    assert load_spec(None, spec.to_dict()) == spec
    built = BackdoorDefenseSpec("neural-cleanse", options=dataclasses.replace(second.options, epochs=3))
    assert built.to_dict() == {"name": "neural-cleanse", "labels": "target", "epochs": 3}


SHARED = {"base", "common", "defender", "finetune", "measure", "retrain", "sealed"}  # what a defence may import


def _modules(package: str):
    return sorted((Path(tradeoff.__file__).parent / package).glob("*.py"))


def test_a_defense_imports_shared_modules_only_never_a_sibling_defense():
    """Every defence module of backdoor_defenses/ imports, from its own package, only the shared
    modules (read from the source's import statements)."""
    for path in _modules("backdoor_defenses"):
        if path.stem in SHARED or path.stem == "__init__":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tradeoff.backdoor_defenses"):
                assert node.module.split(".")[-1] in SHARED, f"{path.name} imports {node.module}"
