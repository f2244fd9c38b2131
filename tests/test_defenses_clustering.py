"""Activation clustering: the decision rules on synthetic representations with a known poisoned
sub-population, and the ICA + k-means split checked against the known membership."""

import numpy as np
import pytest
import torch

from test_defenses_spectral import defend, planted, synthetic_run
from tradeoff.backdoor_defenses.clustering import RULES, ClusteringOptions, reduce_and_cluster


def quiet(_message):
    pass


def test_ica_kmeans_separates_a_planted_subpopulation():
    """Two well-separated groups: the k-means split equals the true membership (up to naming)."""
    reps, labels, poisoned = planted(shift=8.0)
    cls = (labels == 0).numpy()
    clusters = reduce_and_cluster(reps.double().numpy()[cls], dims=2, seed=0).clusters
    truth = poisoned.numpy()[cls]
    agreement = max((clusters == truth).mean(), (clusters != truth).mean())
    assert agreement == 1.0


@pytest.mark.parametrize("rule", ["size", "silhouette", "oracle"])
def test_rules_remove_the_poisoned_cluster(rule):
    """On a well-separated 40-in-340 poisoned class every rule removes exactly the poisons."""
    reps, labels, poisoned = planted(shift=8.0)
    out = defend("activation-clustering", synthetic_run(reps, labels, poisoned),
                                                        rule=rule, retrain=False)
    assert out["clustering_detection_rate"] == 1.0 and out["clustering_false_positive_rate"] == 0.0
    assert out["clustering_rule"].startswith(rule)
    if rule == "oracle":
        assert "oracle" in out["clustering_rule"] and "knows" in out["clustering_rule"]


def test_rule_decisions_by_hand():
    """The rules' cluster decisions on hand-made assignments: size flags the cluster under the
    threshold only; silhouette also needs separated clusters; the oracle follows a known poison."""
    opts = ClusteringOptions(size_threshold=0.35, silhouette_threshold=0.1)
    clusters = np.array([0] * 70 + [1] * 30)
    separated = np.where(clusters[:, None] == 1, 10.0, 0.0) + np.random.default_rng(0).normal(size=(100, 2)) * 0.1
    mixed = np.random.default_rng(1).normal(size=(100, 2))
    assert RULES.get("size")(clusters, separated, None, opts).tolist() == [False, True]
    assert RULES.get("size")(np.array([0] * 60 + [1] * 40), separated, None, opts).tolist() == [False, False]
    assert RULES.get("silhouette")(clusters, separated, None, opts).tolist() == [False, True]
    assert RULES.get("silhouette")(clusters, mixed, None, opts).tolist() == [False, False]
    poisoned = np.zeros(100, dtype=bool)
    poisoned[[5, 80]] = True  # the lowest-index known poison (5) sits in cluster 0
    assert RULES.get("oracle")(clusters, separated, poisoned, opts).tolist() == [True, False]
    assert RULES.get("oracle")(clusters, separated, np.zeros(100, dtype=bool), opts).tolist() == [False, False]


def test_every_class_scope_examines_clean_classes_too():
    """classes=all examines every class: the false-positive rate is over the clean images of both."""
    reps, labels, poisoned = planted(shift=8.0)
    out = defend("activation-clustering", synthetic_run(reps, labels, poisoned),
                                                        rule="oracle", classes="all", retrain=False)
    assert out["clustering_detection_rate"] == 1.0
    assert out["clustering_false_positive_rate"] == 0.0  # the oracle flags nothing in a clean class
    assert torch.is_tensor(poisoned)
