"""Spectral signatures: scores against an independent eigen-decomposition, removal rules and
detection on synthetic representations where the answer is known."""

import numpy as np
import pytest
import torch
from torch import nn

from tradeoff.backdoor_defenses import parse_entry, run_backdoor_defense
from tradeoff.backdoor_defenses.common import representations
from tradeoff.backdoor_defenses.spectral import spectral_scores
from tradeoff.core.errors import TradeoffError
from tradeoff.core.spec import Spec
from tradeoff.data import ImageSet
from tradeoff.models import FeatureClassifier
from tradeoff.poisoning import BackdoorTarget, PoisonPlan
from tradeoff.records.handoff import PoisonedData, TrainedRun


def synthetic_run(reps: torch.Tensor, labels: torch.Tensor, poisoned: torch.Tensor, target: int = 0) -> TrainedRun:
    """A trained run whose model's features are the identity, so the defence sees ``reps`` exactly."""
    num_classes = int(labels.max()) + 1
    model = FeatureClassifier(nn.Sequential(nn.Flatten()), nn.Linear(reps.shape[1], num_classes))
    spec = Spec()
    spec.poison.target = target
    plan = PoisonPlan(poisoned.nonzero().flatten(), torch.zeros(int(poisoned.sum()), dtype=torch.long), labels,
                      poisoned)
    images = ImageSet(reps[:, :, None, None], labels)
    data = PoisonedData(train=images, test=images, plan=plan, trigger=None,
                        backdoor_target=BackdoorTarget(target, num_classes=num_classes), num_classes=num_classes,
                        shape=tuple(images.shape))
    return TrainedRun(spec, model, {}, data, torch.device("cpu"))


def defend(name: str, run: TrainedRun, **options) -> dict:
    """One backdoor defence through the registry, as a spec's ``backdoor_defenses`` entry runs it."""
    return run_backdoor_defense({"name": name, **options}, run, log=lambda m: None)


def planted(n_clean=300, n_poison=40, dim=32, shift=8.0, seed=0):
    """Class 0: clean Gaussian images plus poisons shifted along one direction; class 1: clean only."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randn(n_clean, dim, generator=g) + 2.0
    poison = torch.randn(n_poison, dim, generator=g) + 2.0
    poison[:, 3] += shift
    other = torch.randn(n_clean, dim, generator=g) - 2.0
    reps = torch.cat([clean, poison, other])
    labels = torch.cat([torch.zeros(n_clean + n_poison), torch.ones(n_clean)]).long()
    poisoned = torch.zeros(len(labels), dtype=torch.bool)
    poisoned[n_clean:n_clean + n_poison] = True
    return reps, labels, poisoned


def test_scores_match_top_eigenvector_of_covariance():
    """|projection| on the top eigenvector of the covariance (numpy eigh, an independent route to the
    top right-singular vector of the centred matrix), centred and uncentred."""
    reps, _, _ = planted()
    r = reps.double().numpy()
    m = r - r.mean(0)
    _, vecs = np.linalg.eigh(m.T @ m)
    v = vecs[:, -1]
    np.testing.assert_allclose(spectral_scores(reps, centred=True).numpy(), np.abs(m @ v), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(spectral_scores(reps, centred=False).numpy(), np.abs(r @ v), rtol=1e-8, atol=1e-8)


def test_representations_default_to_features_and_named_layer():
    """The default representation is model.features(x); a named layer gives that module's output."""
    torch.manual_seed(0)
    model = FeatureClassifier(nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU()), nn.Linear(6, 3))
    x = torch.rand(17, 3, 2, 2)
    images = ImageSet(x, torch.zeros(17, dtype=torch.long))
    assert torch.allclose(representations(model, images, batch_size=5), model.features(x))
    assert torch.allclose(representations(model, images, "features.1", batch_size=4), model.features[1](x.flatten(1)))
    with pytest.raises(TradeoffError, match="no layer"):
        representations(model, images, "features.9")


def test_textbook_and_paper_removal_rules_on_known_poisons():
    """Well-separated poisons: the textbook variant removes ceil(1.5 x 40) = 60 images including every
    poison; the paper variant removes exactly 40 + 1 and is reported as the oracle it is (it uses
    the true poison count); only the target class is examined."""
    reps, labels, poisoned = planted()
    out = defend("spectral", synthetic_run(reps, labels, poisoned), variant="textbook", retrain=False)
    assert out["spectral_removed"] == 60 and out["spectral_detection_rate"] == 1.0
    assert out["spectral_variant"] == "textbook"
    assert out["spectral_false_positive_rate"] == pytest.approx(20 / 300)
    assert out["spectral_deviation"] > 3
    out = defend("spectral", synthetic_run(reps, labels, poisoned), variant="paper", retrain=False)
    assert out["spectral_removed"] == 41 and out["spectral_detection_rate"] == 1.0
    assert out["spectral_variant"] == "paper (oracle: knows the poison count)"
    out = defend("spectral", synthetic_run(reps, labels, poisoned), variant="textbook",
                   classes="all", expected_poisons=10, retrain=False)
    assert out["spectral_removed"] == 30  # 15 from each class


def test_options_are_validated():
    """Unknown or out-of-range options are one clear TradeoffError, as spec validation reports them."""
    with pytest.raises(TradeoffError, match="did you mean .*variant'"):
        parse_entry({"name": "spectral", "variantt": "paper"})
    with pytest.raises(TradeoffError, match="variant"):
        parse_entry({"name": "spectral", "variant": "other"})
    with pytest.raises(TradeoffError, match="removal_factor"):
        parse_entry({"name": "spectral", "removal_factor": -1})
