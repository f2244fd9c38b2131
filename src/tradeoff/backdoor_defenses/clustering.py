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

The score behind ``clustering_auroc``: each image's margin towards the suspect cluster of its class,
|x - centre of the other cluster| - |x - centre of the suspect cluster| in the reduced space, where
the suspect cluster is the one the rule flagged (the smaller one when it flagged none). Positive
inside the suspect cluster, growing with depth; rule-independent except for that orientation.

Degenerate representations (a robust model's target class can have constant columns, all-zero
ReLU features or rank below ``dims``) make FastICA's whitening divide by zero. Constant columns are
dropped first; when the rank (singular values above 1e-5 of the largest) is below ``dims``, or
FastICA fails or returns non-finite values, the top principal components (as many as the rank
allows, at most ``dims``) are clustered instead; a class whose images all have the same
representation is one cluster and nothing is removed from it. ``clustering_fallback`` says which happened in the target
class (empty when FastICA ran).

An all-to-all backdoor has no one target class: ``classes: target`` then examines every class (the
poisons were relabelled into each), and the target class's ``clustering_smaller_share``,
``clustering_silhouette`` and ``clustering_fallback`` are left out.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np
import torch

from tradeoff.backdoor_defenses.base import BACKDOOR_DEFENSES
from tradeoff.backdoor_defenses.common import (
    Scope,
    detection_metrics,
    examined_classes,
    representations,
    retrain_metrics,
    training_set,
)
from tradeoff.core.registry import Registry
from tradeoff.core.spec import option
from tradeoff.records.handoff import TrainedRun

RULES: Registry = Registry("activation-clustering rule", listed=False)
RULE_LABELS = {"oracle": "oracle (paper; knows a poisoned image)", "size": "size (textbook)",
               "silhouette": "silhouette (textbook)"}


@dataclass
class ClusteringOptions:
    metric_prefix: ClassVar[str] = "clustering"
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


@dataclass
class Clustering:
    """One class's activation clustering: the reduced representations, each row's cluster, and
    how the reduction was done when FastICA could not be used (empty when it was)."""

    reduced: np.ndarray  # (n, k) with k <= dims
    clusters: np.ndarray  # (n,) in {0, 1}
    fallback: str = ""


# Singular values below this share of the largest count as zero: the representations come from
# float32 activations (relative precision ~1e-7), so smaller directions are rounding noise that
# FastICA's whitening would blow up to unit variance.
RANK_TOLERANCE = 1e-5


def principal_components(reps: np.ndarray, dims: int) -> np.ndarray:
    """The centred rows projected on their top principal directions: at most ``dims``, only those
    with a singular value above :data:`RANK_TOLERANCE` of the largest ((n, 0) for identical rows)."""
    centred = reps - reps.mean(0, keepdims=True)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    k = min(dims, rank_of(s))
    return u[:, :k] * s[:k]


def rank_of(singular_values: np.ndarray) -> int:
    s = singular_values
    return int((s > RANK_TOLERANCE * s[0]).sum()) if len(s) and s[0] > 0 else 0


def reduce_and_cluster(reps: np.ndarray, dims: int, seed: int) -> Clustering:
    """FastICA to ``dims`` components, then 2-means; degenerate representations fall back to
    principal components (see the module's docstring)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import FastICA

    n = len(reps)
    reps = reps[:, np.ptp(reps, axis=0) > 0]  # constant columns carry nothing and break whitening
    rank = rank_of(np.linalg.svd(reps - reps.mean(0, keepdims=True), compute_uv=False)) if reps.shape[1] else 0
    one_cluster = Clustering(np.zeros((n, 0)), np.zeros(n, dtype=np.int64), "identical representations: one cluster")
    if rank == 0:
        return one_cluster
    fallback = ""
    if rank < dims:
        reduced = principal_components(reps, dims)
        fallback = f"principal components ({rank}): rank {rank} is below the {dims} ICA components"
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # FastICA convergence warnings: the split is what matters
                reduced = FastICA(n_components=dims, max_iter=1000, tol=0.005, whiten="unit-variance",
                                  random_state=seed).fit_transform(reps)
            if not np.isfinite(reduced).all():
                raise ValueError("non-finite components")
        except Exception as e:  # noqa: BLE001  any failure of the reduction has the same fallback
            reduced = principal_components(reps, dims)
            reason = str(e).splitlines()[0] if str(e) else e.__class__.__name__
            fallback = f"principal components ({reduced.shape[1]}): FastICA failed ({reason})"
    if len(np.unique(reduced, axis=0)) < 2:
        return one_cluster
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fewer distinct points than clusters on near-constant inputs
        clusters = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(reduced)
    return Clustering(reduced, clusters, fallback)


def suspicion(reduced: np.ndarray, clusters: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """Each row's margin towards the suspect cluster (the flagged one, else the smaller one):
    distance to the other cluster's centre minus distance to the suspect cluster's centre."""
    counts = np.bincount(clusters, minlength=2)
    if counts.min() == 0 or reduced.shape[1] == 0:
        return np.zeros(len(clusters))
    suspect = int(np.flatnonzero(flagged)[0]) if flagged.sum() == 1 else int(counts.argmin())
    centres = [reduced[clusters == k].mean(0) for k in (0, 1)]
    return (np.linalg.norm(reduced - centres[1 - suspect], axis=1)
            - np.linalg.norm(reduced - centres[suspect], axis=1))


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

    if len(np.unique(clusters)) < 2 or reduced.shape[1] == 0 or len(np.unique(reduced, axis=0)) < 3:
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
    target = run.data.backdoor_target
    rule = RULES.get(opts.rule)
    removed = torch.zeros(len(y), dtype=torch.bool)
    examined = torch.zeros(len(y), dtype=torch.bool)
    assignment = torch.full((len(y),), -1, dtype=torch.int8)
    scores = torch.full((len(y),), float("nan"), dtype=torch.float64)
    target_info: dict = {}
    for c in examined_classes(opts.classes, target, y):  # one class's representations in memory at a time
        idx = (y == c).nonzero().flatten()
        if len(idx) <= opts.dims + 1:
            continue
        reps = representations(run.model, images.take(idx), opts.layer, opts.batch_size, run.device)
        split = reduce_and_cluster(reps.double().numpy(), opts.dims, run.spec.seed)
        flagged = rule(split.clusters, split.reduced, poisoned[idx].numpy(), opts)
        if split.fallback.startswith("identical"):
            flagged[:] = False  # one cluster: nothing to tell apart
        removed[idx] = torch.from_numpy(flagged[split.clusters])
        examined[idx] = True
        assignment[idx] = torch.from_numpy(split.clusters.astype(np.int8))
        scores[idx] = torch.from_numpy(suspicion(split.reduced, split.clusters, flagged))
        if split.fallback:
            log(f"activation clustering: class {c}: {split.fallback}")
        if c == target.single_label:
            target_info = {"clustering_smaller_share": float(shares(split.clusters).min()),
                           "clustering_silhouette": silhouette(split.reduced, split.clusters),
                           "clustering_fallback": split.fallback}
    metrics = {"clustering_rule": RULE_LABELS[opts.rule], "clustering_classes": opts.classes,
               "clustering_dims": opts.dims, **detection_metrics("clustering", removed, poisoned, examined, scores),
               **target_info}
    log("activation clustering: " + ", ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
    run.add_artifact("clustering.safetensors", {"removed": removed.to(torch.uint8), "cluster": assignment})
    if opts.retrain:
        metrics.update(retrain_metrics("clustering", run, removed, log, show_progress))
    return metrics
