"""What the filtering defences share: representations of the training set, the classes they
examine, detection metrics, and the optional retraining without the removed images."""

from __future__ import annotations

from typing import Literal

import torch

from tradeoff.backdoor_defenses.measure import before_after_metrics
from tradeoff.backdoor_defenses.retrain import retrain_without
from tradeoff.core.errors import TradeoffError
from tradeoff.models.mode import model_mode
from tradeoff.poisoning import BackdoorTarget
from tradeoff.records.handoff import TrainedRun


def training_set(run: TrainedRun):
    """(the poisoned training set as the model was trained on it, in memory or streamed; its
    training labels on the CPU; the ground-truth poison mask on the CPU)."""
    train = run.data.train
    return train, train.labels.cpu(), run.data.poison_mask.cpu()


def representation_module(model, layer: str | None):
    """The module whose output the filtering defences read: ``layer`` (a name from
    ``model.named_modules()``), else the model's ``representation_layer`` (the layer the
    original's code reads, where the model names one), else its ``features`` part."""
    modules = dict(model.named_modules())
    name = layer if layer is not None else getattr(model, "representation_layer", None)
    if name is None:
        if getattr(model, "features", None) is None:
            raise TradeoffError("the model has no 'features' part; name a layer with the defence's 'layer' option.")
        return model.features
    if name not in modules:
        names = ", ".join(n for n in modules if n)
        raise TradeoffError(f"the model has no layer {name!r}; its layers are: {names}.")
    return modules[name]


def representations(model, images, layer: str | None = None, batch_size: int = 500, device=None) -> torch.Tensor:
    """(N, D) float32 CPU activations of the image set ``images`` (in memory or streamed, read
    batch by batch without augmentation), flattened: see :func:`representation_module`."""
    module = representation_module(model, layer)
    device = device if device is not None else next(model.parameters()).device
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out.detach().flatten(1).float().cpu()))
    try:
        with model_mode(model, False), torch.no_grad():
            for xb, _ in images.unaugmented().loader(batch_size, device):
                model(xb)
    finally:
        handle.remove()
    return torch.cat(captured) if captured else torch.zeros(0, 0)


Scope = Literal["target", "all"]  # the classes a filter examines


def examined_classes(scope: str, target: BackdoorTarget, labels: torch.Tensor) -> list[int]:
    """The classes a filter looks at: the target class only (the paper) or every class present.
    With an all-to-all backdoor the poisons were relabelled into every class, each one its
    predecessor's target, so ``target`` examines every class too."""
    if scope == "target":
        return target.classes
    return sorted(int(c) for c in labels.unique())


def auroc(scores: torch.Tensor, poisoned: torch.Tensor, examined: torch.Tensor) -> float | None:
    """Area under the ROC curve of the per-image ``scores`` (higher = more suspect) against the
    ground-truth poison mask, over the examined images (scikit-learn's ``roc_auc_score``); None
    when the examined images are all poisoned or all clean."""
    from sklearn.metrics import roc_auc_score

    examined = examined.cpu()
    truth = poisoned.cpu()[examined].numpy()
    if truth.all() or not truth.any():
        return None
    return float(roc_auc_score(truth, scores.cpu()[examined].double().numpy()))


def detection_metrics(prefix: str, removed: torch.Tensor, poisoned: torch.Tensor, examined: torch.Tensor,
                      scores: torch.Tensor | None = None) -> dict:
    """What a filter removed, against the ground truth, among the images it examined (the classes
    it looked at):

    - ``_removed``, ``_poisons_removed``, ``_clean_removed``: counts;
    - ``_detection_rate``: the true-positive rate, poisons removed / poisons (None without poisons);
    - ``_false_positive_rate``: clean images removed / clean images examined (None without any);
    - ``_precision``: poisons removed / images removed (None when nothing was removed);
    - ``_auroc``: of ``scores`` (higher = more suspect), see :func:`auroc`.

    On a model trained without poison every removal is a false positive: the detection rate and
    AUROC are None there, the precision 0 (None when nothing was removed), the counts and the
    false-positive rate measure what the filter removes when there is nothing to find."""
    removed, poisoned, examined = removed.cpu(), poisoned.cpu(), examined.cpu()
    n_poison = int(poisoned.sum())
    clean_examined = int((examined & ~poisoned).sum())
    hits, false_hits, n_removed = int((removed & poisoned).sum()), int((removed & ~poisoned).sum()), int(removed.sum())
    return {
        f"{prefix}_examined": int(examined.sum()),
        f"{prefix}_removed": n_removed,
        f"{prefix}_poisons_removed": hits,
        f"{prefix}_clean_removed": false_hits,
        f"{prefix}_detection_rate": hits / n_poison if n_poison else None,
        f"{prefix}_false_positive_rate": false_hits / clean_examined if clean_examined else None,
        f"{prefix}_precision": hits / n_removed if n_removed else None,
        f"{prefix}_auroc": auroc(scores, poisoned, examined) if scores is not None else None,
    }


def retrain_metrics(prefix: str, run: TrainedRun, removed: torch.Tensor, log, show_progress: bool) -> dict:
    """The spec trained again without the removed images: the "with defence" success rate, and the
    defence effectiveness rating against the model trained on everything."""
    log(f"{prefix}: retraining without the {int(removed.sum())} removed images")
    return before_after_metrics(prefix, run.metrics, retrain_without(run, removed, log, show_progress))
