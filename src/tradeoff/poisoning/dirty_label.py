"""Dirty-label poisoning (BadNets): a share of the *whole* training set gets the trigger and is
relabelled.

- ``all-to-one`` (the default): the images are drawn from the classes other than the target and
  relabelled to it.
- ``all-to-all`` (BadNets' second setting): the images are drawn from every class and image y is
  relabelled (y + 1) mod C; the backdoor's success is measured against each test image's own
  target, over every source class and per class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from tradeoff.core.errors import TradeoffError
from tradeoff.core.spec import option
from tradeoff.poisoning.base import POISONING_METHODS, choose


@dataclass
class DirtyLabelOptions:
    fraction_of_training_set: float = option(0.05, doc="share of the whole training set stamped and relabelled",
                                             min=0, max=1)
    target_mode: Literal["all-to-one", "all-to-all"] = option(
        "all-to-one", doc="all-to-one: relabel to poison.target; all-to-all: relabel y to (y + 1) mod classes")


@POISONING_METHODS.register("dirty-label", options=DirtyLabelOptions)
def dirty_label(labels: torch.Tensor, poison_spec, g: torch.Generator, num_classes: int):
    """Stamp images and relabel them: of other classes to the target (BadNets' all-to-one), or
    of every class y to (y + 1) mod C (all-to-all)."""
    fraction = poison_spec.options.fraction_of_training_set
    all_to_all = poison_spec.options.target_mode == "all-to-all"
    candidates = torch.arange(len(labels)) if all_to_all else (labels != poison_spec.target).nonzero().flatten()
    count = round(fraction * len(labels))
    if count > len(candidates):
        raise TradeoffError(
            f"poison.fraction_of_training_set {fraction} asks for {count} images "
            f"but only {len(candidates)} are outside the target class."
        )
    chosen = choose(candidates, count, g)
    new_labels = labels.clone()
    new_labels[chosen] = (labels[chosen] + 1) % num_classes if all_to_all else poison_spec.target
    return chosen, new_labels
