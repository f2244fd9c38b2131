"""Poisoning: which training images get the trigger, and whether their labels change.

Two attacks, two explicitly named rates:
- clean-label: ``fraction_of_target_class`` of the target class's images are stamped; labels kept.
- dirty-label (BadNets): ``fraction_of_training_set`` x N images, drawn from the *other* classes,
  are stamped and relabelled to the target.
The poisoned set is fixed before training; the ground-truth mask is kept for the defences.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tradeoff.errors import TradeoffError
from tradeoff.registry import Registry
from tradeoff.spec import PoisonSpec
from tradeoff.triggers import Trigger


@dataclass
class PoisonPlan:
    """Which images, where their trigger goes, and their (possibly new) labels."""

    indices: torch.Tensor  # (P,) sorted training-set indices
    corners: torch.Tensor  # (P,) corner index of each poisoned image's trigger
    labels: torch.Tensor  # (N,) training labels after poisoning
    mask: torch.Tensor  # (N,) bool, True where poisoned


ATTACKS: Registry = Registry("poisoning attack")


def _choose(candidates: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    pick = torch.randperm(len(candidates), generator=generator)[:count]
    return candidates[pick].sort().values


@ATTACKS.register("clean-label")
def _clean_label(labels: torch.Tensor, spec: PoisonSpec, g: torch.Generator):
    candidates = (labels == spec.target).nonzero().flatten()
    count = round(spec.fraction_of_target_class * len(candidates))
    return _choose(candidates, count, g), labels.clone()


@ATTACKS.register("dirty-label")
def _dirty_label(labels: torch.Tensor, spec: PoisonSpec, g: torch.Generator):
    candidates = (labels != spec.target).nonzero().flatten()
    count = round(spec.fraction_of_training_set * len(labels))
    if count > len(candidates):
        raise TradeoffError(
            f"poison.fraction_of_training_set {spec.fraction_of_training_set} asks for {count} images "
            f"but only {len(candidates)} are outside the target class."
        )
    chosen = _choose(candidates, count, g)
    new_labels = labels.clone()
    new_labels[chosen] = spec.target
    return chosen, new_labels


@ATTACKS.register("none")
def _no_poison(labels: torch.Tensor, spec: PoisonSpec, g: torch.Generator):
    return torch.zeros(0, dtype=torch.long), labels.clone()


def plan_poison(labels: torch.Tensor, spec: PoisonSpec, trigger: Trigger, num_classes: int,
                seed: int) -> PoisonPlan:
    if spec.target >= num_classes:
        raise TradeoffError(f"poison.target {spec.target} is not a class of this dataset (0..{num_classes - 1}).")
    g = torch.Generator().manual_seed(seed)
    indices, new_labels = ATTACKS.get(spec.attack)(labels.cpu(), spec, g)
    corners = trigger.training_corners(len(indices), g)
    mask = torch.zeros(len(labels), dtype=torch.bool)
    mask[indices] = True
    return PoisonPlan(indices, corners, new_labels, mask)


def poison_images(x: torch.Tensor, plan: PoisonPlan, trigger: Trigger) -> torch.Tensor:
    """A copy of the in-memory training images with the plan's images stamped (batched)."""
    out = x.clone()
    if len(plan.indices):
        idx = plan.indices.to(x.device)
        out[idx] = trigger.apply(x[idx], plan.corners)
    return out
