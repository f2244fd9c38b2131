"""What every poisoning method shares: the plan it produces and the registry it joins.

A method is ``(labels, poison_spec, generator, num_classes) -> (chosen indices, labels after
poisoning)``, registered with the dataclass of its options. The poisoned set is fixed before training; the
ground-truth mask is kept for the backdoor defences.

A method whose options are :class:`PerturbationOptions` (label-consistent poisoning) also changes
its chosen images before the trigger is stamped: adversarially, against a surrogate model. The
plan is still drawn from the labels alone; the pipeline then fills ``PoisonPlan.images``
(:mod:`tradeoff.training.surrogate`), and the data set stamps those images instead of the originals.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch

from tradeoff.core.errors import TradeoffError
from tradeoff.core.registry import Registry
from tradeoff.core.spec import AttackSpec, option
from tradeoff.triggers import Trigger


@dataclass
class PoisonPlan:
    """Which images, where their trigger goes, and their (possibly new) labels."""

    indices: torch.Tensor  # (P,) sorted training-set indices
    corners: torch.Tensor  # (P,) corner index of each poisoned image's trigger
    labels: torch.Tensor  # (N,) training labels after poisoning
    mask: torch.Tensor  # (N,) bool, True where poisoned
    images: Optional[torch.Tensor] = None  # (P, C, H, W) the chosen images before stamping, if the method changed them
    per_batch: Optional[object] = None  # a BatchPoisoning of every training batch (WaNet), if the method has one


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


@dataclass(frozen=True)
class BackdoorTarget:
    """The label a triggered image should be classified as: ``label`` for every image
    (all-to-one), or with ``all_to_all`` its own label plus one, modulo the classes."""

    label: int
    all_to_all: bool = False
    num_classes: int = 0

    def of(self, y: torch.Tensor) -> torch.Tensor:
        """The target label of each image with true label ``y``."""
        if self.all_to_all:
            return (y + 1) % self.num_classes
        return torch.full_like(y, self.label)

    @property
    def single_label(self) -> Optional[int]:
        """The one class every triggered image is sent to; None for all-to-all, which has none."""
        return None if self.all_to_all else self.label

    @property
    def classes(self) -> list[int]:
        """The classes triggered images are sent to (and poisoned images relabelled as): the
        target, or with all-to-all every class (each one its predecessor's target)."""
        return list(range(self.num_classes)) if self.all_to_all else [self.label]

    def describe(self) -> str:
        """The target in a few words, for a log line."""
        return f"all-to-all (y + 1 mod {self.num_classes})" if self.all_to_all else str(self.label)


def is_all_to_all(poison_spec) -> bool:
    """Whether a spec's ``poison`` section asks for an all-to-all backdoor (its method's ``target_mode``)."""
    return getattr(poison_spec.options, "target_mode", "") == "all-to-all"


def backdoor_target(poison_spec, num_classes: int) -> BackdoorTarget:
    """The backdoor's target of a spec's ``poison`` section (all-to-all where its method says so)."""
    return BackdoorTarget(poison_spec.target, is_all_to_all(poison_spec), num_classes)


def perturbs_images(poison_spec) -> bool:
    """Whether the spec's poisoning method perturbs its chosen images before stamping."""
    return isinstance(poison_spec.options, PerturbationOptions)


POISONING_METHODS: Registry = Registry("poisoning method", plural="poisoning")

# method name -> (options, trigger, target) -> a BatchPoisoning or None: the per-batch step of a
# method that poisons every training batch afresh (WaNet), beside or instead of a fixed set.
BATCH_POISONING: dict = {}

# Checks of a spec's poisoning method against its trigger and dataset, run when the spec is
# built (before any step): each ``(poison_spec, trigger_kind, streamed) -> None`` raises one
# sentence for a pairing its method or trigger cannot run.
SPEC_CHECKS: list = []


def check_poisoning(poison_spec, trigger_kind: str, streamed: bool) -> None:
    """Every declared check of the poisoning method and trigger pairing (see ``SPEC_CHECKS``)."""
    poison_spec = dataclasses.replace(
        poison_spec, options=POISONING_METHODS.options_or_default(poison_spec.method, poison_spec.options))
    for check in SPEC_CHECKS:
        check(poison_spec, trigger_kind, streamed)


def choose(candidates: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` of ``candidates`` drawn without replacement, sorted."""
    pick = torch.randperm(len(candidates), generator=generator)[:count]
    return candidates[pick].sort().values


@POISONING_METHODS.register("none")
def no_poison(labels: torch.Tensor, poison_spec, g: torch.Generator, num_classes: int):
    """No poisoning: the clean training set."""
    return torch.zeros(0, dtype=torch.long), labels.clone()


def plan_poison(labels: torch.Tensor, poison_spec, trigger: Trigger, num_classes: int, seed: int) -> PoisonPlan:
    """The seeded poisoning plan of a spec's ``poison`` section for training ``labels``."""
    if poison_spec.target >= num_classes:
        raise TradeoffError(f"poison.target {poison_spec.target} is not a class of this dataset (0..{num_classes - 1}).")
    poison_spec = dataclasses.replace(
        poison_spec, options=POISONING_METHODS.options_or_default(poison_spec.method, poison_spec.options))
    g = torch.Generator().manual_seed(seed)
    indices, new_labels = POISONING_METHODS.get(poison_spec.method)(labels.cpu(), poison_spec, g, num_classes)
    corners = trigger.training_corners(len(indices), g)
    mask = torch.zeros(len(labels), dtype=torch.bool)
    mask[indices] = True
    per_batch = BATCH_POISONING.get(poison_spec.method, lambda *args: None)(poison_spec.options, trigger,
                                                                            poison_spec.target)
    return PoisonPlan(indices, corners, new_labels, mask, per_batch=per_batch)
