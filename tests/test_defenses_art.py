"""Spectral signatures and activation clustering against an independent implementation, IBM's
adversarial-robustness-toolbox (ART 1.20.1), on the same activations (a stub classifier hands ART
exactly the representations our defences read).

Where they differ, by design:
- ART scores *uncentred* representations (like the paper's variant) and removes by a quantile
  cutoff (score >= quantile(1 - 1.5 eps)); our textbook variant scores centred vectors and removes
  exactly ceil(1.5 x expected) images, so the removal counts can differ by one (interpolation).
- ART's k-means/FastICA are unseeded (global numpy state) and its KMeans uses one k-means++ start;
  ours are seeded with 10 starts. ART's 'relative-size' analysis raises under numpy 2 when a class
  has no cluster under the threshold, and its 'silhouette-scores' analysis fails on its empty
  poison list, so only classes that do contain a small cluster are compared.
"""

import numpy as np
import pytest
import torch

art_poison = pytest.importorskip("art.defences.detector.poison")

from test_defenses_spectral import defend, synthetic_run  # noqa: E402
from tradeoff.backdoor_defenses.spectral import spectral_scores  # noqa: E402


class StubClassifier:
    """What ART's poison filters ask of a classifier: layer names, class count, activations."""

    def __init__(self, activations: np.ndarray, nb_classes: int):
        self.activations, self.nb_classes, self.layer_names = activations, nb_classes, ["features"]

    def get_activations(self, x, layer=None, batch_size=128):
        return self.activations


def two_classes_with_subgroups(shift: float, seed: int = 0, n: int = 240, small: int = 60, dim: int = 24):
    """Two classes, each a Gaussian plus a shifted sub-group of ``small`` images; class 0's
    sub-group is the poison."""
    g = torch.Generator().manual_seed(seed)
    reps, labels, poisoned = [], [], []
    for c in (0, 1):
        block = torch.randn(n, dim, generator=g) + 3.0 * c + 1.0
        block[:small, c] += shift
        reps.append(block)
        labels.append(torch.full((n,), c))
        poisoned.append(torch.arange(n) < small if c == 0 else torch.zeros(n, dtype=torch.bool))
    return torch.cat(reps).abs(), torch.cat(labels).long(), torch.cat(poisoned)


def one_hot(labels: torch.Tensor) -> np.ndarray:
    return np.eye(int(labels.max()) + 1)[labels.numpy()]


def test_spectral_scores_and_removals_match_art():
    """ART's scores equal our paper-variant (uncentred) scores; its quantile cutoff removes the same
    images as our exact top-k, up to one image; both catch every poison when they stand out."""
    reps, labels, poisoned = two_classes_with_subgroups(shift=10.0)
    acts = reps.double().numpy()
    eps = 60 / 240
    detector = art_poison.SpectralSignatureDefense(StubClassifier(acts, 2), acts, one_hot(labels),
                                                  expected_pp_poison=eps, eps_multiplier=1.5)
    report, is_clean = detector.detect_poison()
    art_removed = np.array(is_clean) == 0
    for c in (0, 1):
        idx = (labels == c).numpy()
        ours = spectral_scores(reps[idx], centred=False).numpy()
        art_scores = art_poison.SpectralSignatureDefense.spectral_signature_scores(acts[idx])[:, 0]
        np.testing.assert_allclose(ours, art_scores, rtol=1e-6)
        k = int(np.ceil(1.5 * eps * idx.sum()))
        top = np.zeros(idx.sum(), dtype=bool)
        top[np.argsort(-ours)[:k]] = True
        assert (top != art_removed[idx]).sum() <= 1
    out = defend("spectral", synthetic_run(reps, labels, poisoned),
                                           variant="textbook", expected_poisons=60, retrain=False)
    assert out["spectral_detection_rate"] == 1.0
    assert art_removed[poisoned.numpy()].all()


@pytest.mark.parametrize("shift,min_agreement", [(12.0, 1.0), (5.0, 0.95)])
def test_activation_clustering_matches_art_relative_size(shift, min_agreement):
    """FastICA to 2 dims + 2-means + relative-size rule (threshold 0.35): ART and ours flag the same
    images (all of them when the sub-groups are far apart, >= 95% agreement when closer)."""
    reps, labels, poisoned = two_classes_with_subgroups(shift=shift)
    acts = reps.double().numpy()
    np.random.seed(0)  # ART's FastICA and KMeans draw from numpy's global state
    detector = art_poison.ActivationDefence(StubClassifier(acts, 2), acts, one_hot(labels))
    _, is_clean = detector.detect_poison(nb_clusters=2, nb_dims=2, reduce="FastICA", cluster_analysis="relative-size")
    art_removed = np.array(is_clean) == 0
    outcome = synthetic_run(reps, labels, poisoned)
    out = defend("activation-clustering", outcome, rule="size", classes="all",
                                                        retrain=False)
    ours = outcome.artifacts["clustering.safetensors"]["removed"].bool().numpy()
    assert (ours == art_removed).mean() >= min_agreement
    if min_agreement == 1.0:
        assert out["clustering_detection_rate"] == 1.0
