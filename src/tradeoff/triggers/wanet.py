"""WaNet's warping trigger (Nguyen & Tran, ICLR 2021, "WaNet - Imperceptible Warping-based
Backdoor Attack"): no pattern is stamped; the image is resampled through a fixed, smooth warp.

A k x k field of offsets drawn uniformly in [-1, 1] (seeded by ``field_seed``), divided by its
mean absolute value, is upsampled bicubically to the image (align_corners) and added to the
identity sampling grid, scaled by ``strength / h``; the grid is clamped to [-1, 1] and applied
with ``grid_sample`` (bilinear, align_corners=True, as the original). A warp of an image in
[0, 1] stays in [0, 1] (each output pixel is a convex mix of input pixels).

A warp is not the stamping rule of :mod:`tradeoff.triggers.base`: :meth:`Warp.apply` warps, and
the stamp it reports (for the saliency region) covers the whole image. The noise images of
WaNet's training (the grid plus per-pixel random offsets, labels kept) come from
:meth:`Warp.noisy_grids`; :mod:`tradeoff.poisoning.wanet` draws them in every batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tradeoff.core.errors import TradeoffError
from tradeoff.core.spec import option
from tradeoff.triggers.base import TRIGGERS, Stamp, Trigger


@dataclass
class WarpOptions:
    k: int = option(4, doc="side of the random control field (k x k offsets), upsampled to the image", min=2)
    strength: float = option(0.5, doc="s: the warp grid is identity + s * field / h", min=0)
    field_seed: int = option(0, doc="seed of the fixed random field")


def random_field(k: int, seed: int) -> torch.Tensor:
    """(1, 2, k, k) offsets uniform in [-1, 1], divided by their mean absolute value."""
    field = torch.rand(1, 2, k, k, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return field / field.abs().mean()


def warp_grid(field: torch.Tensor, height: int, width: int, strength: float) -> torch.Tensor:
    """The sampling grid (1, H, W, 2), (x, y) in [-1, 1]: identity + strength * upsampled field / H, clamped."""
    upsampled = F.interpolate(field, size=(height, width), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    rows, cols = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    identity = torch.stack((cols, rows), dim=2)[None]
    return (identity + strength * upsampled / height).clamp(-1, 1)


def warp(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """x (N, C, H, W) resampled at ``grid`` ((N or 1), H, W, 2), bilinear, align_corners=True."""
    grid = grid.to(x.device, x.dtype)
    if grid.shape[0] != x.shape[0]:
        grid = grid.expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


@TRIGGERS.register("wanet", options=WarpOptions)
class Warp(Trigger):
    """WaNet's fixed smooth warp of the whole image (Nguyen & Tran 2021), applied with grid_sample."""

    def __init__(self, options, reference_shape: tuple):
        self.field = random_field(options.k, options.field_seed)
        self._grids: dict = {}
        super().__init__(options, reference_shape)

    def grid_for(self, shape: tuple, device) -> torch.Tensor:
        """The warp's sampling grid (1, H, W, 2) for images of ``shape`` (C, H, W), cached."""
        key = (tuple(shape[-2:]), str(device))
        if key not in self._grids:
            _, h, w = shape
            self._grids[key] = warp_grid(self.field, h, w, self.options.strength).to(device)
        return self._grids[key]

    def noisy_grids(self, n: int, shape: tuple, generator: torch.Generator, device) -> torch.Tensor:
        """n grids (n, H, W, 2): the warp's plus offsets uniform in [-1, 1] / H per pixel, clamped
        (WaNet's noise mode); drawn on the generator's device."""
        _, h, w = shape
        noise = torch.rand(n, h, w, 2, generator=generator, device=generator.device).to(device) * 2 - 1
        return (self.grid_for(shape, device) + noise / h).clamp(-1, 1)

    def apply(self, x: torch.Tensor, corners: torch.Tensor | None = None) -> torch.Tensor:
        """The batch warped (every image the same warp; ``corners`` play no part)."""
        return warp(x, self.grid_for(tuple(x.shape[1:]), x.device))

    def stamp_for(self, shape: tuple, device) -> Stamp:
        """The region a warp changes (every pixel), as a stamp; it is not how the warp is applied."""
        self.grid_for(tuple(shape), device)
        ones = torch.ones((4, *shape), device=device)
        return Stamp(ones, torch.zeros_like(ones), torch.zeros_like(ones))

    def build(self, shape, corner):
        raise TradeoffError("the wanet trigger warps images and has no stamping rule: stream its poisoning "
                            "per batch (poison.method wanet), or load the dataset in memory.")
