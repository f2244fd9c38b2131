"""Batched augmentation on the data's device (the CIFAR protocol: zero-pad, random crop, random
flip), with its random draws made on the CPU.

The offsets and flips of a batch come from a CPU generator whatever device the images are on, so
a run's batches are the same on the CPU and on a GPU, and a snapshot's generator state is the same
kind everywhere. The draws travel to the device as one small tensor per batch (pinned, without
waiting); the pad, crop and flip are one gather there."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tradeoff.core.device import to_device


def crop_draws(n: int, pad: int, generator: torch.Generator | None = None, flip: bool = True) -> torch.Tensor:
    """(3, n) int64 on the CPU: each image's row offset, column offset (in [0, 2 pad]) and whether
    it is mirrored (1) or not (0), drawn in that order (offsets, offsets, then one uniform number
    per image when ``flip``)."""
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    mirrored = (torch.rand(n, generator=generator) < 0.5) if flip else torch.zeros(n, dtype=torch.bool)
    return torch.stack([oy, ox, mirrored.long()])


def pad_crop_flip(x: torch.Tensor, pad: int = 2, generator: torch.Generator | None = None,
                  flip: bool = True) -> torch.Tensor:
    """Zero-pad by ``pad`` on every side, crop back to the original size at a random offset per
    image, and (``flip``) flip each image horizontally with probability 1/2. The draws come from
    ``generator`` (a CPU generator; the global one when None), the gather runs on ``x``'s device."""
    n, _, h, w = x.shape
    dev = x.device
    oy, ox, mirrored = to_device(crop_draws(n, pad, generator, flip), dev)
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = oy[:, None] + torch.arange(h, device=dev)  # (n, h)
    cols = ox[:, None] + torch.arange(w, device=dev)  # (n, w)
    if flip:
        cols = torch.where(mirrored[:, None].bool(), cols.flip(1), cols)
    idx_n = torch.arange(n, device=dev)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()
