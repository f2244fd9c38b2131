"""Narcissus's trigger (Zeng et al., CCS 2023, "Narcissus: A Practical Clean-Label Backdoor
Attack with Limited Information"): an additive pattern delta, optimised against a surrogate
(:mod:`tradeoff.poisoning.narcissus`), within an L-inf bound. In the stamping rule it is
``add`` alone (mask 0): poisoned training images get ``x + delta``, test images
``x + magnification * delta`` (the original's test-time magnification, 3), each clipped to [0, 1].

Until the poisoning step has optimised it (or read it from a run folder), the pattern is zero.
As the blend does, the trigger tells its two stamps apart by the corner index: training images
get corner 0 ("top-left"), evaluation stamps "bottom-right".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tradeoff.core.errors import TradeoffError
from tradeoff.core.spec import option
from tradeoff.triggers.base import CORNERS, TRIGGERS, Trigger

TRAINING_CORNER, EVAL_CORNER = "top-left", "bottom-right"


@dataclass
class OptimisedTriggerOptions:
    magnification: float = option(3.0, doc="the test-time trigger is magnification * delta (the original's 3)",
                                   min=0)


@TRIGGERS.register("narcissus", options=OptimisedTriggerOptions)
class OptimisedTrigger(Trigger):
    """An additive pattern optimised against a surrogate (Narcissus), magnified at test time."""

    def __init__(self, options, reference_shape: tuple, pattern: torch.Tensor | None = None):
        self.pattern = torch.zeros(tuple(reference_shape)) if pattern is None else pattern.detach().float().cpu()
        if tuple(self.pattern.shape) != tuple(reference_shape):
            raise TradeoffError(f"a narcissus trigger of shape {tuple(self.pattern.shape)} does not fit images of "
                                f"shape {tuple(reference_shape)}.")
        super().__init__(options, reference_shape)

    def with_pattern(self, pattern: torch.Tensor) -> "OptimisedTrigger":
        """The same trigger with ``pattern`` (C, H, W) as its delta."""
        return OptimisedTrigger(self.options, self.reference_shape, pattern)

    def saved_tensors(self) -> dict:
        return {"trigger": self.pattern}

    def build(self, shape, corner):
        if tuple(shape) != self.reference_shape:
            raise TradeoffError(f"the narcissus trigger was optimised for images of shape {self.reference_shape}, "
                                f"not {tuple(shape)}.")
        scale = self.options.magnification if corner == EVAL_CORNER else 1.0
        return torch.zeros(shape), torch.zeros(shape), scale * self.pattern

    def eval_corner(self) -> str:
        return EVAL_CORNER

    def training_corners(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.full((n,), CORNERS.index(TRAINING_CORNER), dtype=torch.long)
