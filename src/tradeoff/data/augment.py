"""Batched on-device augmentation (the CIFAR protocol: zero-pad, random crop, random flip)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_crop_flip(x: torch.Tensor, pad: int = 2, generator: torch.Generator | None = None,
                  flip: bool = True) -> torch.Tensor:
    """Zero-pad by ``pad`` on every side, crop back to the original size at a random offset per
    image, and (``flip``) flip each image horizontally with probability 1/2. One gather, no
    Python loop."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dev = x.device
    # Random numbers are drawn where the generator lives: the data's device for the training
    # loop's generator, so no host round trip per batch.
    draw = generator.device if generator is not None else dev
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=draw).to(dev)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=draw).to(dev)
    rows = oy[:, None] + torch.arange(h, device=dev)  # (n, h)
    cols = ox[:, None] + torch.arange(w, device=dev)  # (n, w)
    if flip:
        mirrored = torch.rand(n, generator=generator, device=draw).to(dev) < 0.5
        cols = torch.where(mirrored[:, None], cols.flip(1), cols)
    idx_n = torch.arange(n, device=dev)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()
