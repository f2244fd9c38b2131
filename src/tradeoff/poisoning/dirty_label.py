"""Dirty-label poisoning (BadNets): a share of the *whole* training set, drawn from the other
classes, gets the trigger and is relabelled to the target."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tradeoff.errors import TradeoffError
from tradeoff.poisoning.base import POISONING_METHODS, choose
from tradeoff.spec import option


@dataclass
class DirtyLabelOptions:
    fraction_of_training_set: float = option(0.05, doc="share of the whole training set stamped and relabelled",
                                             min=0, max=1)


@POISONING_METHODS.register("dirty-label", options=DirtyLabelOptions)
def dirty_label(labels: torch.Tensor, poison_spec, g: torch.Generator):
    """Stamp images of other classes and relabel them to the target (BadNets)."""
    fraction = poison_spec.options.fraction_of_training_set
    candidates = (labels != poison_spec.target).nonzero().flatten()
    count = round(fraction * len(labels))
    if count > len(candidates):
        raise TradeoffError(
            f"poison.fraction_of_training_set {fraction} asks for {count} images "
            f"but only {len(candidates)} are outside the target class."
        )
    chosen = choose(candidates, count, g)
    new_labels = labels.clone()
    new_labels[chosen] = poison_spec.target
    return chosen, new_labels
