"""In-memory image sets: float tensors in [0, 1], NCHW, with integer labels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch


@dataclass
class ImageSet:
    x: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def shape(self) -> tuple:
        return tuple(self.x.shape[1:])

    def subset(self, n: Optional[int], seed: int) -> "ImageSet":
        """A seeded random subset of ``n`` images (the whole set when n is None or too large)."""
        if n is None or n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)[:n].sort().values
        return ImageSet(self.x[idx], self.y[idx])

    def to(self, device) -> "ImageSet":
        return ImageSet(self.x.to(device), self.y.to(device))


@dataclass
class DataBundle:
    train: object  # ImageSet, or a streamed dataset (see tradeoff.data.folder)
    test: object
    num_classes: int
    shape: tuple  # (C, H, W) of the images the model sees
    streamed: bool = False
    notes: list = field(default_factory=list)
