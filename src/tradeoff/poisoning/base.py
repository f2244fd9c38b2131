"""What every poisoning method shares: the plan it produces and the registry it joins.

A method is ``(labels, poison_spec, generator) -> (chosen indices, labels after poisoning)``,
registered with the dataclass of its options. The poisoned set is fixed before training; the
ground-truth mask is kept for the backdoor defences.

A method whose options are :class:`PerturbationOptions` (label-consistent poisoning) also changes
its chosen images before the trigger is stamped: adversarially, against a surrogate model. The
plan is still drawn from the labels alone; the pipeline then fills ``PoisonPlan.images``
(:mod:`tradeoff.surrogate`), and the data set stamps those images instead of the originals.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch

from tradeoff.errors import TradeoffError
from tradeoff.registry import Registry
from tradeoff.spec import AttackSpec, option
from tradeoff.triggers import Trigger


@dataclass
class PoisonPlan:
    """Which images, where their trigger goes, and their (possibly new) labels."""

    indices: torch.Tensor  # (P,) sorted training-set indices
    corners: torch.Tensor  # (P,) corner index of each poisoned image's trigger
    labels: torch.Tensor  # (N,) training labels after poisoning
    mask: torch.Tensor  # (N,) bool, True where poisoned
    images: Optional[torch.Tensor] = None  # (P, C, H, W) the chosen images before stamping, if the method changed them


@dataclass
class PerturbationOptions:
    """Options of a method that perturbs its chosen images against a surrogate model before the
    trigger is stamped: PGD within a budget, on the images' true labels, against a model trained
    briefly on the clean training set (standard training of the spec's model) or loaded."""

    perturbation: AttackSpec = option(factory=AttackSpec, doc="PGD on the surrogate before stamping; unset "
                                      "fields: the dataset's protocol (Linf 0.3 MNIST, 8/255 CIFAR-10)")
    surrogate_epochs: int = option(5, doc="standard training of the surrogate on the clean training set", min=1)
    surrogate_steps: Optional[int] = option(None, doc="the surrogate's optimiser steps; overrides surrogate_epochs",
                                            min=1)
    surrogate_checkpoint: Optional[str] = option(None, doc="weights of the spec's model to attack instead "
                                                 "(safetensors or a weights-only torch file); no training")


def perturbs_images(poison_spec) -> bool:
    """Whether the spec's poisoning method perturbs its chosen images before stamping."""
    return isinstance(poison_spec.options, PerturbationOptions)


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
