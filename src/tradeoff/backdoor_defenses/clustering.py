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

from tradeoff.backdoor_defenses.base import BACKDOOR_DEFENSES
from tradeoff.backdoor_defenses.common import (Scope, detection_metrics, examined_classes, representations,
                                               retrain_metrics, training_set)
from tradeoff.handoff import TrainedRun
from tradeoff.registry import Registry
from tradeoff.spec import option

RULES: Registry = Registry("activation-clustering rule", listed=False)
RULE_LABELS = {"oracle": "oracle (paper; knows a poisoned image)", "size": "size (textbook)",
               "silhouette": "silhouette (textbook)"}


@dataclass
class ClusteringOptions:
    rule: str = option("oracle", doc="which cluster is poisoned; oracle is the paper's (knows a poison)",
                       choices="activation-clustering rule")
    dims: int = option(2, doc="ICA components (the protocol: 2 or 3)", min=1)
    classes: Scope = option("target", doc="examine the target class or every class")
    size_threshold: float = option(0.35, doc="size rule: flag the smaller cluster below this share",
                                   above=0, max=0.5)
    silhouette_threshold: float = option(0.1, doc="silhouette rule: clusters must separate above this",
                                         min=-1, max=1)
    layer: Optional[str] = option(None, doc="module name to read; default: the model's representation layer")
    retrain: bool = option(True, doc="train the spec again without the removed images")
    batch_size: int = option(500, doc="representation batch", min=1)


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
def oracle_rule(clusters, reduced, poisoned, opts) -> np.ndarray:
    flagged = np.zeros(2, dtype=bool)
    known = np.flatnonzero(poisoned)
    if len(known):
        flagged[clusters[known[0]]] = True
    return flagged


@RULES.register("size")
def size_rule(clusters, reduced, poisoned, opts) -> np.ndarray:
    return shares(clusters) < opts.size_threshold


def silhouette(reduced: np.ndarray, clusters: np.ndarray) -> float:
    from sklearn.metrics import silhouette_score

    if len(np.unique(clusters)) < 2:
        return -1.0
    return float(silhouette_score(reduced, clusters))


@RULES.register("silhouette")
def silhouette_rule(clusters, reduced, poisoned, opts) -> np.ndarray:
    if silhouette(reduced, clusters) <= opts.silhouette_threshold:
        return np.zeros(2, dtype=bool)
    return shares(clusters) < opts.size_threshold


@BACKDOOR_DEFENSES.register("activation-clustering", options=ClusteringOptions)
def clustering_defense(run: TrainedRun, opts: ClusteringOptions, log, show_progress) -> dict:
    """Activation clustering (Chen et al. 2018): ICA then 2-means of each class's activations."""
    images, y, poisoned = training_set(run)
    target = run.data.target
    rule = RULES.get(opts.rule)
    removed = torch.zeros(len(y), dtype=torch.bool)
    examined = torch.zeros(len(y), dtype=torch.bool)
    assignment = torch.full((len(y),), -1, dtype=torch.int8)
    target_info: dict = {}
    for c in examined_classes(opts.classes, target, y):  # one class's representations in memory at a time
        idx = (y == c).nonzero().flatten()
        if len(idx) <= opts.dims + 1:
            continue
        reps = representations(run.model, images.take(idx), opts.layer, opts.batch_size, run.device)
        reduced, clusters = reduce_and_cluster(reps.double().numpy(), opts.dims, run.spec.seed)
        flagged = rule(clusters, reduced, poisoned[idx].numpy(), opts)
        removed[idx] = torch.from_numpy(flagged[clusters])
        examined[idx] = True
        assignment[idx] = torch.from_numpy(clusters.astype(np.int8))
        if c == target:
            target_info = {"clustering_smaller_share": float(shares(clusters).min()),
                           "clustering_silhouette": silhouette(reduced, clusters)}
    metrics = {"clustering_rule": RULE_LABELS[opts.rule], "clustering_classes": opts.classes,
               "clustering_dims": opts.dims, **detection_metrics("clustering", removed, poisoned, examined),
               **target_info}
    log("activation clustering: " + ", ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
    run.add_artifact("clustering.safetensors", {"removed": removed.to(torch.uint8), "cluster": assignment})
    if opts.retrain:
        metrics.update(retrain_metrics("clustering", run, removed, log, show_progress))
    return metrics
