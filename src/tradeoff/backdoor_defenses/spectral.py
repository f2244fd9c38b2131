"""Spectral signatures (Tran et al. 2018).

For each examined class: the representations R (n x d) of the training images carrying that
label, the top right-singular vector v of the centred matrix R - mean(R), and an outlier score
per image. Two named variants:

- ``paper`` (the study's code, the default): score = |R v| on the *uncentred* representations,
  and exactly (number of poisons in the class + 1) images are removed (it knows the count).
- ``textbook`` (Tran et al.): score = |(R - mean) v|, and ``removal_factor`` x the expected poison
  count (default 1.5 x the number of images the spec poisons) are removed from each class.

``centred`` overrides the scoring alone: ``variant: textbook, centred: false`` is the removal rule
of the textbook with the uncentred scores of the paper, which is also what ART implements. The
centred |projection| is symmetric around the class mean, so when poisons are a large share of the
class (a third at 5% dirty-label on MNIST) clean images on the far side score high too.

``spectral_deviation`` (our definition of Supplement 5's "deviation", which the paper does not
define precisely): in the target class, (mean score of poisoned - mean score of clean images) /
standard deviation of the clean images' scores. It uses the ground truth and is a diagnostic.
An all-to-all backdoor has no one target class: ``classes: target`` then examines every class (the
poisons were relabelled into each) and ``spectral_deviation`` is None.
``spectral_auroc`` ranks the examined images by the variant's score against the ground truth.

Degenerate representations (constant or all-zero columns, rank 1, a whole class identical) need no
special case: the SVD of a zero matrix is defined, every score is then 0 and the removal picks
ties by index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal, Optional

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
from tradeoff.core.spec import option
from tradeoff.records.handoff import TrainedRun

# As reported in metrics.json, summary.csv and the report: the paper's removal count uses the
# true number of poisons, which a defender does not know.
VARIANT_LABELS = {"paper": "paper (oracle: knows the poison count)", "textbook": "textbook"}


@dataclass
class SpectralOptions:
    metric_prefix: ClassVar[str] = "spectral"
    variant: Literal["paper", "textbook"] = option("paper", doc="paper: remove poisons + 1 by uncentred scores")
    classes: Scope = option("target", doc="examine the target class or every class")
    layer: Optional[str] = option(None, doc="module name to read; default: the model's representation layer")
    centred: Optional[bool] = option(None, doc="score centred vectors; default: the variant's (textbook yes)")
    removal_factor: float = option(1.5, doc="textbook: remove this many times the expected poison count", above=0)
    expected_poisons: Optional[int] = option(None, doc="textbook: default = the number of images the spec poisons",
                                             min=0)
    retrain: bool = option(True, doc="train the spec again without the removed images")
    batch_size: int = option(500, doc="representation batch", min=1)


def spectral_scores(reps: torch.Tensor, centred: bool) -> torch.Tensor:
    """Outlier scores (float64) of the rows of ``reps`` along the top singular direction of the
    centred matrix; ``centred`` picks whether the projected vectors are centred too."""
    r = reps.double()
    m = r - r.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(m, full_matrices=False)
    return ((m if centred else r) @ vh[0]).abs()


def removal_count(opts: SpectralOptions, n_class: int, poisons_in_class: int, planted: int) -> int:
    if opts.variant == "paper":
        k = poisons_in_class + 1
    else:
        expected = planted if opts.expected_poisons is None else opts.expected_poisons
        k = math.ceil(opts.removal_factor * expected)
    return min(k, n_class)


def separation(scores: torch.Tensor, poisoned: torch.Tensor) -> float | None:
    """(mean poisoned score - mean clean score) / std of clean scores."""
    if poisoned.sum() == 0 or (~poisoned).sum() < 2:
        return None
    clean = scores[~poisoned]
    return float((scores[poisoned].mean() - clean.mean()) / clean.std().clamp_min(1e-12))


@BACKDOOR_DEFENSES.register("spectral", options=SpectralOptions)
def spectral_defense(run: TrainedRun, opts: SpectralOptions, log, show_progress) -> dict:
    """Spectral signatures (Tran et al. 2018): outliers along the top singular direction."""
    images, y, poisoned = training_set(run)
    target = run.data.backdoor_target
    planted = int(poisoned.sum())
    centred = opts.variant == "textbook" if opts.centred is None else opts.centred
    removed = torch.zeros_like(poisoned)
    examined = torch.zeros_like(poisoned)
    scores_all = torch.full((len(y),), float("nan"), dtype=torch.float64)
    deviation = None
    for c in examined_classes(opts.classes, target, y):  # one class's representations in memory at a time
        idx = (y == c).nonzero().flatten()
        if len(idx) < 2:
            continue
        reps = representations(run.model, images.take(idx), opts.layer, opts.batch_size, run.device)
        scores = spectral_scores(reps, centred=centred)
        scores_all[idx] = scores
        examined[idx] = True
        k = removal_count(opts, len(idx), int(poisoned[idx].sum()), planted)
        removed[idx[scores.topk(k).indices]] = True
        if c == target.single_label:
            deviation = separation(scores, poisoned[idx])
    metrics = {"spectral_variant": VARIANT_LABELS[opts.variant], "spectral_centred": centred, "spectral_classes": opts.classes,
               **detection_metrics("spectral", removed, poisoned, examined, scores_all), "spectral_deviation": deviation}
    log("spectral signatures (" + VARIANT_LABELS[opts.variant] + "): " + ", ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
    run.add_artifact("spectral.safetensors", {"scores": scores_all, "removed": removed.to(torch.uint8)})
    if opts.retrain:
        metrics.update(retrain_metrics("spectral", run, removed, log, show_progress))
    return metrics
