"""The sticker: a local patch of a 0/1 pattern that overwrites the pixels under it (the paper's
local trigger: MNIST's white square, CIFAR's "X")."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tradeoff.core.registry import Registry
from tradeoff.core.spec import option
from tradeoff.triggers.base import TRIGGERS, PatchTrigger, PlacementOptions

STICKER_PATTERNS: Registry = Registry("sticker pattern", listed=False)
STICKER_PATTERNS.register("square", description="all ones (MNIST's white square)")(
    lambda i, size: torch.ones(size, size))
STICKER_PATTERNS.register("x", description="ones on both diagonals (CIFAR's X: [[1,0,1],[0,1,0],[1,0,1]])")(
    lambda i, size: ((i[:, None] == i[None, :]) | (i[:, None] + i[None, :] == size - 1)).float())
STICKER_PATTERNS.register("checkerboard", description="alternating ones and zeros")(
    lambda i, size: ((i[:, None] + i[None, :]) % 2 == 0).float())


def sticker_pattern(name: str, size: int) -> torch.Tensor:
    """A (size, size) pattern of 0/1 values."""
    return STICKER_PATTERNS.get(name)(torch.arange(size), size)


@dataclass
class StickerOptions(PlacementOptions):
    pattern: str = option("square", doc="the patch's 0/1 pattern", choices="sticker pattern")


@TRIGGERS.register("sticker", options=StickerOptions)
class Sticker(PatchTrigger):
    """A local patch of a 0/1 pattern that overwrites the pixels under it (all channels)."""

    def build(self, shape, corner):
        rows, cols = self.patch(shape, corner)
        mask, fill = torch.zeros(shape), torch.zeros(shape)
        mask[:, rows, cols] = 1
        fill[:, rows, cols] = sticker_pattern(self.options.pattern, self.options.size)
        return mask, fill, torch.zeros(shape)
