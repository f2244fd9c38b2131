"""What every poisoning method shares: the plan it produces and the registry it joins.

A method is ``(labels, poison_spec, generator) -> (chosen indices, labels after poisoning)``,
registered with the dataclass of its options. The poisoned set is fixed before training; the
ground-truth mask is kept for the backdoor defences.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from tradeoff.errors import TradeoffError
from tradeoff.registry import Registry
from tradeoff.triggers import Trigger


@dataclass
class PoisonPlan:
    """Which images, where their trigger goes, and their (possibly new) labels."""

    indices: torch.Tensor  # (P,) sorted training-set indices
    corners: torch.Tensor  # (P,) corner index of each poisoned image's trigger
    labels: torch.Tensor  # (N,) training labels after poisoning
    mask: torch.Tensor  # (N,) bool, True where poisoned


POISONING_METHODS: Registry = Registry("poisoning method", plural="poisoning")


def choose(candidates: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` of ``candidates`` drawn without replacement, sorted."""
    pick = torch.randperm(len(candidates), generator=generator)[:count]
    return candidates[pick].sort().values


@POISONING_METHODS.register("none")
def no_poison(labels: torch.Tensor, poison_spec, g: torch.Generator):
    """No poisoning: the clean training set."""
    return torch.zeros(0, dtype=torch.long), labels.clone()


def plan_poison(labels: torch.Tensor, poison_spec, trigger: Trigger, num_classes: int, seed: int) -> PoisonPlan:
    """The seeded poisoning plan of a spec's ``poison`` section for training ``labels``."""
    if poison_spec.target >= num_classes:
        raise TradeoffError(f"poison.target {poison_spec.target} is not a class of this dataset (0..{num_classes - 1}).")
    poison_spec = dataclasses.replace(
        poison_spec, options=POISONING_METHODS.options_or_default(poison_spec.method, poison_spec.options))
    g = torch.Generator().manual_seed(seed)
    indices, new_labels = POISONING_METHODS.get(poison_spec.method)(labels.cpu(), poison_spec, g)
    corners = trigger.training_corners(len(indices), g)
    mask = torch.zeros(len(labels), dtype=torch.bool)
    mask[indices] = True
    return PoisonPlan(indices, corners, new_labels, mask)
