"""What the filtering defences share: representations of the training set, the classes they
examine, detection metrics, and the optional retraining without the removed images."""

from __future__ import annotations

from typing import Literal

import torch

from tradeoff.adversarial_defenses import model_mode
from tradeoff.backdoor_defenses.retrain import retrain_without
from tradeoff.errors import TradeoffError
from tradeoff.handoff import TrainedRun


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


def examined_classes(scope: str, target: int, labels: torch.Tensor) -> list[int]:
    """The classes a filter looks at: the target class only (the paper) or every class present."""
    if scope == "target":
        return [target]
    return sorted(int(c) for c in labels.unique())


def detection_metrics(prefix: str, removed: torch.Tensor, poisoned: torch.Tensor, examined: torch.Tensor) -> dict:
    """detection rate = poisons removed / poisons; false-positive rate = clean images removed /
    clean images among those examined (the classes the filter looked at)."""
    removed, poisoned, examined = removed.cpu(), poisoned.cpu(), examined.cpu()
    n_poison = int(poisoned.sum())
    clean_examined = int((examined & ~poisoned).sum())
    return {
        f"{prefix}_removed": int(removed.sum()),
        f"{prefix}_poisons_removed": int((removed & poisoned).sum()),
        f"{prefix}_detection_rate": (int((removed & poisoned).sum()) / n_poison) if n_poison else None,
        f"{prefix}_false_positive_rate": (int((removed & ~poisoned).sum()) / clean_examined)
        if clean_examined else None,
    }


def retrain_metrics(prefix: str, run: TrainedRun, removed: torch.Tensor, log, show_progress: bool) -> dict:
    """The spec trained again without the removed images: the "with defence" success rate."""
    log(f"{prefix}: retraining without the {int(removed.sum())} removed images")
    metrics = retrain_without(run, removed, log, show_progress)
    return {
        f"{prefix}_backdoor_success_rate_before": run.metrics.get("backdoor_success_rate"),
        f"{prefix}_backdoor_success_rate_after": metrics["backdoor_success_rate"],
        f"{prefix}_accuracy_before": run.metrics.get("accuracy"),
        f"{prefix}_accuracy_after": metrics["accuracy"],
    }
