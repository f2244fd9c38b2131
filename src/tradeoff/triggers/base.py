"""The trigger base: every trigger compiles to one stamping rule, used for poisoning and
evaluation alike:

    x' = clip((1 - mask) * x + mask * fill + add, 0, 1)

A sticker overwrites a patch (mask = patch, fill = pattern), a channel trigger zeroes one colour
channel inside the patch (mask on that channel, fill = 0), and a watermark is *added* with an
amplitude and clipped (add = amplitude * P; not alpha blending), and a blend mixes a pattern in
(mask = alpha everywhere, fill = P).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from tradeoff.core.errors import TradeoffError
from tradeoff.core.registry import Registry
from tradeoff.core.spec import option

CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")
Corner = Literal["top-left", "top-right", "bottom-left", "bottom-right"]


@dataclass
class Stamp:
    """Per-corner stamping tensors for one image shape: each (4, C, H, W)."""

    mask: torch.Tensor
    fill: torch.Tensor
    add: torch.Tensor


def apply_stamp(x: torch.Tensor, stamp: Stamp, corners: torch.Tensor) -> torch.Tensor:
    """Stamp a batch (N, C, H, W); ``corners[i]`` picks image i's placement (index into CORNERS)."""
    m, f, a = stamp.mask[corners], stamp.fill[corners], stamp.add[corners]
    return ((1 - m) * x + m * f + a).clamp_(0, 1)


class Trigger:
    """Builds stamps for any image shape (cached), and stamps batches. A trigger without a
    placement (image-wide) is stamped the same at every corner index (the blend's training and
    test stamps, which may differ in alpha, excepted)."""

    def __init__(self, options, reference_shape: tuple):
        self.options = options
        self.reference_shape = tuple(reference_shape)
        self._cache: dict = {}
        self.stamp_for(self.reference_shape, torch.device("cpu"))  # fail early on impossible sizes

    # -- to be provided by each kind: one corner's (mask, fill, add), each (C, H, W)
    def build(self, shape: tuple, corner: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def stamp_for(self, shape: tuple, device) -> Stamp:
        key = (tuple(shape), str(device))
        if key not in self._cache:
            parts = [self.build(tuple(shape), corner) for corner in CORNERS]
            self._cache[key] = Stamp(*(torch.stack(t).to(device) for t in zip(*parts)))
        return self._cache[key]

    def apply(self, x: torch.Tensor, corners: torch.Tensor | None = None) -> torch.Tensor:
        """Stamp a batch; without ``corners`` every image gets the evaluation corner."""
        if corners is None:
            corners = torch.full((x.shape[0],), CORNERS.index(self.eval_corner()), dtype=torch.long)
        stamp = self.stamp_for(tuple(x.shape[1:]), x.device)
        return apply_stamp(x, stamp, corners.to(x.device))

    def saved_tensors(self) -> dict:
        """What a run folder keeps of the trigger to rebuild it (an optimised one's pattern)."""
        return {}

    def eval_corner(self) -> str:
        """Where the test-time trigger goes."""
        return "bottom-right"

    def training_corners(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Where each of n poisoned training images gets its trigger."""
        return torch.full((n,), CORNERS.index("bottom-right"), dtype=torch.long)


@dataclass
class PlacementOptions:
    """Where a patch trigger goes: its size, corner and distance from the corner's edges."""

    size: int = option(3, doc="patch side in pixels", min=1)
    corner: Literal["top-left", "top-right", "bottom-left", "bottom-right", "random"] = option(
        "bottom-right", doc="training placement; random: one of the 4 corners per poisoned image")
    offset: int = option(0, doc="pixels between the patch and the corner's edges", min=0)
    eval_corner: Corner = option("bottom-right", doc="where the test-time trigger goes")


class PatchTrigger(Trigger):
    """A trigger placed as a square patch at a corner (see :class:`PlacementOptions`)."""

    def eval_corner(self) -> str:
        return self.options.eval_corner

    def training_corners(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self.options.corner == "random":
            return torch.randint(0, len(CORNERS), (n,), generator=generator)
        return torch.full((n,), CORNERS.index(self.options.corner), dtype=torch.long)

    def patch(self, shape: tuple, corner: str) -> tuple[slice, slice]:
        return patch_box(shape, self.options.size, self.options.offset, corner)


def trigger_linf(trigger: Trigger, corner: str | None = None) -> float:
    """The trigger's L-inf size at ``corner`` (unset: the evaluation corner) for images of its
    reference shape: the largest |x' - x| over every pixel and every value x in [0, 1]. Per
    pixel x' - x = clip(g(x), 0, 1) - x with g linear, so the largest lies at x = 0, x = 1 or a
    kink of the clip (g(x) = 0 or 1): exact from those four candidates."""
    stamp = trigger.stamp_for(trigger.reference_shape, torch.device("cpu"))
    index = CORNERS.index(corner or trigger.eval_corner())
    m, f, a = (t[index].double() for t in (stamp.mask, stamp.fill, stamp.add))
    slope, offset = 1 - m, m * f + a  # g(x) = slope * x + offset
    safe = torch.where(slope > 0, slope, torch.ones_like(slope))
    kinks = [torch.where(slope > 0, ((level - offset) / safe).clamp(0, 1), torch.zeros_like(m)) for level in (0, 1)]
    candidates = torch.stack([torch.zeros_like(m), torch.ones_like(m), *kinks])
    return float(((slope * candidates + offset).clamp(0, 1) - candidates).abs().max())


TRIGGERS: Registry[type] = Registry("trigger")


def make_trigger(trigger_spec, shape: tuple) -> Trigger:
    """The trigger of a spec's ``trigger`` section, for images of ``shape``."""
    options = TRIGGERS.options_or_default(trigger_spec.kind, trigger_spec.options)
    return TRIGGERS.get(trigger_spec.kind)(options, shape)


def patch_box(shape: tuple, size: int, offset: int, corner: str) -> tuple[slice, slice]:
    _, h, w = shape
    if size + offset > min(h, w):
        raise TradeoffError(
            f"a {size}x{size} trigger with offset {offset} does not fit in a {h}x{w} image."
        )
    top = offset if corner.startswith("top") else h - offset - size
    left = offset if corner.endswith("left") else w - offset - size
    return slice(top, top + size), slice(left, left + size)
