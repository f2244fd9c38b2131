"""Clean-label poisoning (the paper's main setting): a share of the *target class's* training
images get the trigger and keep their labels. The paper's "5%" is half of class 7."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tradeoff.core.spec import option
from tradeoff.poisoning.base import POISONING_METHODS, choose


@dataclass
class CleanLabelOptions:
    fraction_of_target_class: float = option(0.5, doc="share of the target class's training images stamped",
                                             min=0, max=1)


@POISONING_METHODS.register("clean-label", options=CleanLabelOptions)
def clean_label(labels: torch.Tensor, poison_spec, g: torch.Generator, num_classes: int):
    """Stamp a share of the target class's training images; labels kept."""
    candidates = (labels == poison_spec.target).nonzero().flatten()
    count = round(poison_spec.options.fraction_of_target_class * len(candidates))
    return choose(candidates, count, g), labels.clone()
