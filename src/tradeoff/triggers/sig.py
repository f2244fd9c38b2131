"""SIG (Barni et al. 2019, "A New Backdoor Attack in CNNs by Training Set Corruption Without
Label Poisoning"): a horizontal sinusoid *added* to the whole image and clipped,

    v(i, j) = delta * sin(2 pi j f / m),   x' = clip(x + v, 0, 1)

with j the column, m the image width and f the number of periods across it; every row and
channel gets the same signal. Used clean-label (a share of the target class's training images,
labels kept). The defaults are BackdoorBench's: delta 40/255, f 6.

Training and test signals may differ in amplitude (``test_delta``; the original stamps a
stronger one at test time in some settings). A signal has no placement, so the corner index
tells the two stamps apart, as for the blend: poisoned training images get corner 0
("top-left", built with ``delta``), evaluation stamps the evaluation corner ("bottom-right",
built with ``test_delta``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from tradeoff.core.spec import option
from tradeoff.triggers.base import CORNERS, TRIGGERS, Trigger

TRAINING_CORNER, EVAL_CORNER = "top-left", "bottom-right"


@dataclass
class SigOptions:
    delta: float = option(40 / 255, doc="amplitude of the training signal delta * sin(2 pi j f / m)", min=0, max=1)
    test_delta: Optional[float] = option(None, doc="amplitude of the test-time signal; unset: delta", min=0, max=1)
    frequency: float = option(6.0, doc="f: periods of the sinusoid across the image width", above=0)


def sig_signal(shape: tuple, delta: float, frequency: float) -> torch.Tensor:
    """v (C, H, W) with v[c, i, j] = delta * sin(2 pi j f / m), m = W."""
    c, h, w = shape
    columns = torch.arange(w, dtype=torch.float64)
    row = delta * torch.sin(2 * math.pi * columns * frequency / w)
    return row.float().expand(c, h, w).contiguous()


@TRIGGERS.register("sig", options=SigOptions)
class Sig(Trigger):
    """A horizontal sinusoid delta * sin(2 pi j f / m) added to the image and clipped (Barni et al. 2019)."""

    def build(self, shape, corner):
        delta = self.options.delta
        if corner == EVAL_CORNER and self.options.test_delta is not None:
            delta = self.options.test_delta
        zeros = torch.zeros(shape)
        return zeros, zeros.clone(), sig_signal(shape, delta, self.options.frequency)

    def eval_corner(self) -> str:
        return EVAL_CORNER

    def training_corners(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.full((n,), CORNERS.index(TRAINING_CORNER), dtype=torch.long)
