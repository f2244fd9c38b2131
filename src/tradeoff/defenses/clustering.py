"""Activation clustering (Chen et al. 2018).

For each examined class: the representations of the training images carrying that label,
reduced to ``dims`` (2 or 3) components by FastICA, then split in two by k-means (scikit-learn,
seeded by the spec's seed). Which cluster is removed is a named decision rule:

- ``oracle`` (the study's code, the default): the cluster that holds a known poisoned image (the
  lowest-index poisoned image of the class). It uses the ground truth, and every metric and log
  line it produces says so (``clustering_rule: oracle (...)``).
- ``size`` (textbook): the smaller cluster when its share of the class is under ``size_threshold``.
- ``silhouette`` (textbook, as the reference library ART implements it): the smaller cluster when
  its share is under ``size_threshold`` *and* the clustering's silhouette score is above
  ``silhouette_threshold`` (two well-separated groups).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from tradeoff.defenses import register_defense
from tradeoff.defenses.common import (add_artifact, check_choice, check_range, detection_metrics, examined_classes,
                                      representations, retrain_metrics, training_set)
from tradeoff.registry import Registry

RULES: Registry = Registry("activation-clustering rule")
RULE_LABELS = {"oracle": "oracle (paper; knows a poisoned image)", "size": "size (textbook)",
               "silhouette": "silhouette (textbook)"}


@dataclass
class ClusteringOptions:
    rule: str = "oracle"  # oracle | size | silhouette
    dims: int = 2  # ICA components (the protocol: 2 or 3)
    classes: str = "target"  # target | all
    size_threshold: float = 0.35
    silhouette_threshold: float = 0.1
    layer: Optional[str] = None  # default: the output of model.features
    retrain: bool = True
    batch_size: int = 500

    def check(self):
        check_choice(self.rule, tuple(RULE_LABELS), "backdoor_defenses.activation-clustering.rule")
        check_choice(self.classes, ("target", "all"), "backdoor_defenses.activation-clustering.classes")
        check_range(self.dims >= 1, "backdoor_defenses.activation-clustering.dims must be at least 1.")
        check_range(0 < self.size_threshold <= 0.5,
                    "backdoor_defenses.activation-clustering.size_threshold must be in (0, 0.5].")
        check_range(-1 <= self.silhouette_threshold <= 1,
                    "backdoor_defenses.activation-clustering.silhouette_threshold must be in [-1, 1].")
        check_range(self.batch_size >= 1, "backdoor_defenses.activation-clustering.batch_size must be at least 1.")


def reduce_and_cluster(reps: np.ndarray, dims: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(FastICA-reduced representations (n, dims), k-means cluster of each row (n,) in {0, 1})."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import FastICA

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FastICA convergence warnings: the split is what matters
        reduced = FastICA(n_components=dims, max_iter=1000, tol=0.005, whiten="unit-variance",
                          random_state=seed).fit_transform(reps)
    clusters = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(reduced)
    return reduced, clusters


def shares(clusters: np.ndarray) -> np.ndarray:
    return np.bincount(clusters, minlength=2) / len(clusters)


@RULES.register("oracle")
def _oracle(clusters, reduced, poisoned, opts) -> np.ndarray:
    flagged = np.zeros(2, dtype=bool)
    known = np.flatnonzero(poisoned)
    if len(known):
        flagged[clusters[known[0]]] = True
    return flagged


@RULES.register("size")
def _size(clusters, reduced, poisoned, opts) -> np.ndarray:
    return shares(clusters) < opts.size_threshold


def silhouette(reduced: np.ndarray, clusters: np.ndarray) -> float:
    from sklearn.metrics import silhouette_score

    if len(np.unique(clusters)) < 2:
        return -1.0
    return float(silhouette_score(reduced, clusters))


@RULES.register("silhouette")
def _silhouette(clusters, reduced, poisoned, opts) -> np.ndarray:
    if silhouette(reduced, clusters) <= opts.silhouette_threshold:
        return np.zeros(2, dtype=bool)
    return shares(clusters) < opts.size_threshold


@register_defense("activation-clustering", ClusteringOptions)
def clustering_defense(outcome, opts: ClusteringOptions, log, show_progress) -> dict:
    x, y, poisoned = training_set(outcome, "activation-clustering")
    target = outcome.spec.poison.target
    rule = RULES.get(opts.rule)
    reps = representations(outcome.model, x, opts.layer, opts.batch_size).double().cpu().numpy()
    y_cpu, poisoned_cpu = y.cpu(), poisoned.cpu()
    removed = torch.zeros(len(y_cpu), dtype=torch.bool)
    examined = torch.zeros(len(y_cpu), dtype=torch.bool)
    assignment = torch.full((len(y_cpu),), -1, dtype=torch.int8)
    target_info: dict = {}
    for c in examined_classes(opts.classes, target, y_cpu):
        idx = (y_cpu == c).nonzero().flatten()
        if len(idx) <= opts.dims + 1:
            continue
        reduced, clusters = reduce_and_cluster(reps[idx.numpy()], opts.dims, outcome.spec.seed)
        flagged = rule(clusters, reduced, poisoned_cpu[idx].numpy(), opts)
        removed[idx] = torch.from_numpy(flagged[clusters])
        examined[idx] = True
        assignment[idx] = torch.from_numpy(clusters.astype(np.int8))
        if c == target:
            target_info = {"clustering_smaller_share": float(shares(clusters).min()),
                           "clustering_silhouette": silhouette(reduced, clusters)}
    metrics = {"clustering_rule": RULE_LABELS[opts.rule], "clustering_classes": opts.classes,
               "clustering_dims": opts.dims, **detection_metrics("clustering", removed, poisoned_cpu, examined),
               **target_info}
    log("activation clustering: " + ", ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
    add_artifact(outcome, "clustering.safetensors", {"removed": removed.to(torch.uint8), "cluster": assignment})
    if opts.retrain:
        metrics.update(retrain_metrics("clustering", outcome, removed, log, show_progress))
    return metrics
