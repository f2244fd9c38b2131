"""The blended trigger (Chen et al. 2017, "Targeted Backdoor Attacks on Deep Learning Systems
Using Data Poisoning"): a full-image pattern P in [0, 1] mixed into the image,

    x' = (1 - alpha) x + alpha P

which is the stamping rule with mask = alpha everywhere and fill = P (x' stays in [0, 1], so the
clip changes nothing). Not the watermark, which *adds* amplitude * P and clips. P comes from the
same places as the watermark's: a user's file (``pattern_file``), else a generated pattern by
name (``random``, fixed by ``pattern_seed``, the default; ``picture``).

The test-time trigger may mix at its own ``test_alpha``. A blend has no placement, so the corner
index tells the two stamps apart: poisoned training images get corner 0 ("top-left", built with
``alpha``), evaluation stamps the evaluation corner ("bottom-right", built with ``test_alpha``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from tradeoff.core.spec import option
from tradeoff.triggers.base import CORNERS, TRIGGERS, Trigger
from tradeoff.triggers.watermark import fit_pattern, named_or_file_pattern

TRAINING_CORNER, EVAL_CORNER = "top-left", "bottom-right"


@dataclass
class BlendOptions:
    alpha: float = option(0.1, doc="x' = (1 - alpha) x + alpha * P on poisoned training images", min=0, max=1)
    test_alpha: Optional[float] = option(None, doc="alpha of the test-time trigger; unset: alpha", min=0, max=1)
    pattern: Optional[str] = option(None, doc="generated P by name (random, picture); unset: random",
                                    choices="watermark pattern")
    pattern_file: Optional[str] = option(None, doc=".npy or image file used as P (replaces the generated one)")
    pattern_seed: int = option(0, doc="seed of the random pattern")


@TRIGGERS.register("blend", options=BlendOptions)
class Blend(Trigger):
    """A full-image pattern P mixed in at alpha: x' = (1 - alpha) x + alpha P (Chen et al. 2017)."""

    def build(self, shape, corner):
        if getattr(self, "_base", None) is None:
            self._base = named_or_file_pattern(self.options, self.reference_shape)
        alpha = self.options.alpha
        if corner == EVAL_CORNER and self.options.test_alpha is not None:
            alpha = self.options.test_alpha
        return torch.full(shape, alpha), fit_pattern(self._base, shape), torch.zeros(shape)

    def eval_corner(self) -> str:
        return EVAL_CORNER

    def training_corners(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.full((n,), CORNERS.index(TRAINING_CORNER), dtype=torch.long)
