"""Backdoor triggers. Every trigger compiles to one stamping rule, used for poisoning and
evaluation alike:

    x' = clip((1 - mask) * x + mask * fill + add, 0, 1)

A sticker overwrites a patch (mask = patch, fill = pattern), a channel trigger zeroes one colour
channel inside the patch (mask on that channel, fill = 0), and a watermark is *added* with an
amplitude and clipped (add = amplitude * P; not alpha blending).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tradeoff.errors import TradeoffError
from tradeoff.registry import Registry
from tradeoff.spec import CORNERS, TriggerSpec


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
    """Builds stamps for any image shape (cached), and stamps batches."""

    def __init__(self, spec: TriggerSpec, reference_shape: tuple):
        self.spec = spec
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
            corners = torch.full((x.shape[0],), CORNERS.index(self.spec.eval_corner), dtype=torch.long)
        stamp = self.stamp_for(tuple(x.shape[1:]), x.device)
        return apply_stamp(x, stamp, corners.to(x.device))

    def training_corners(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Where each of n poisoned training images gets its trigger."""
        if self.spec.corner == "random":
            return torch.randint(0, len(CORNERS), (n,), generator=generator)
        return torch.full((n,), CORNERS.index(self.spec.corner), dtype=torch.long)


TRIGGERS: Registry[type] = Registry("trigger")


def make_trigger(spec: TriggerSpec, shape: tuple) -> Trigger:
    return TRIGGERS.get(spec.kind)(spec, shape)


def patch_box(shape: tuple, size: int, offset: int, corner: str) -> tuple[slice, slice]:
    _, h, w = shape
    if size + offset > min(h, w):
        raise TradeoffError(
            f"a {size}x{size} trigger with offset {offset} does not fit in a {h}x{w} image."
        )
    top = offset if corner.startswith("top") else h - offset - size
    left = offset if corner.endswith("left") else w - offset - size
    return slice(top, top + size), slice(left, left + size)


def sticker_pattern(name: str, size: int) -> torch.Tensor:
    """A (size, size) pattern of 0/1 values."""
    i = torch.arange(size)
    patterns = {
        "square": lambda: torch.ones(size, size),
        # the CIFAR "X": ones on both diagonals, [[1,0,1],[0,1,0],[1,0,1]] at size 3
        "x": lambda: ((i[:, None] == i[None, :]) | (i[:, None] + i[None, :] == size - 1)).float(),
        "checkerboard": lambda: ((i[:, None] + i[None, :]) % 2 == 0).float(),
    }
    if name not in patterns:
        raise TradeoffError(f"unknown sticker pattern {name!r}; choose one of: {', '.join(sorted(patterns))}.")
    return patterns[name]()


@TRIGGERS.register("sticker")
class Sticker(Trigger):
    """A local patch of a 0/1 pattern that overwrites the pixels under it (all channels)."""

    def build(self, shape, corner):
        rows, cols = patch_box(shape, self.spec.size, self.spec.offset, corner)
        mask, fill = torch.zeros(shape), torch.zeros(shape)
        mask[:, rows, cols] = 1
        fill[:, rows, cols] = sticker_pattern(self.spec.pattern, self.spec.size)
        return mask, fill, torch.zeros(shape)


@TRIGGERS.register("channel")
class ChannelTrigger(Trigger):
    """Inside the sticker's area, one colour channel is set to 0."""

    def build(self, shape, corner):
        c = self.spec.channel
        if not 0 <= c < shape[0]:
            raise TradeoffError(f"trigger.channel {c} does not exist in images with {shape[0]} channel(s).")
        rows, cols = patch_box(shape, self.spec.size, self.spec.offset, corner)
        mask = torch.zeros(shape)
        mask[c, rows, cols] = 1
        return mask, torch.zeros(shape), torch.zeros(shape)


@TRIGGERS.register("watermark")
class Watermark(Trigger):
    """A fixed pattern P in [0, 1] over the image but a border, added with an amplitude."""

    def build(self, shape, corner):
        pattern = self._pattern(shape)
        b = self.spec.border
        if 2 * b >= min(shape[1:]):
            raise TradeoffError(f"trigger.border {b} leaves nothing of a {shape[1]}x{shape[2]} image.")
        inside = torch.zeros(shape)
        inside[:, b:shape[1] - b, b:shape[2] - b] = 1
        add = self.spec.amplitude * pattern * inside
        return torch.zeros(shape), torch.zeros(shape), add

    def _pattern(self, shape) -> torch.Tensor:
        """The base pattern, resized (nearest) to another image shape when needed."""
        return fit_pattern(self._base_pattern(), shape)

    def _base_pattern(self) -> torch.Tensor:
        if getattr(self, "_base", None) is not None:
            return self._base
        c, h, w = self.reference_shape
        if self.spec.pattern_file:
            self._base = load_pattern_file(Path(self.spec.pattern_file), (c, h, w))
        else:
            # A coloured pattern of mostly 0/1 values, fixed by its seed.
            g = torch.Generator().manual_seed(self.spec.pattern_seed)
            self._base = (torch.rand((c, h, w), generator=g) < 0.5).float()
        return self._base


def load_pattern_file(path: Path, shape: tuple) -> torch.Tensor:
    """A user pattern: ``.npy`` (H x W or C x H x W or H x W x C) or an image file, scaled to [0, 1]."""
    if not path.is_file():
        raise TradeoffError(f"trigger.pattern_file {str(path)!r} does not exist.")
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False).astype(np.float32)
        else:
            from PIL import Image

            arr = np.asarray(Image.open(path).convert("RGB" if shape[0] == 3 else "L"), dtype=np.float32)
    except Exception as e:  # noqa: BLE001  any unreadable file is the user's input problem
        raise TradeoffError(f"trigger.pattern_file {str(path)!r} cannot be read ({e}).") from None
    if arr.max() > 1:
        arr = arr / 255.0
    t = torch.from_numpy(arr)
    if t.ndim == 2:
        t = t[None]
    elif t.ndim == 3 and t.shape[-1] in (1, 3) and t.shape[0] not in (1, 3):
        t = t.permute(2, 0, 1)
    if t.ndim != 3:
        raise TradeoffError(f"trigger.pattern_file {str(path)!r} must be an image, not an array of shape {tuple(arr.shape)}.")
    return fit_pattern(t, shape).clamp(0, 1)


def fit_pattern(pattern: torch.Tensor, shape: tuple) -> torch.Tensor:
    """Resize a (C, H, W) pattern to ``shape`` (nearest); grey <-> colour by averaging/copying."""
    if tuple(pattern.shape[1:]) != tuple(shape[1:]):
        pattern = F.interpolate(pattern[None], size=tuple(shape[1:]), mode="nearest")[0]
    if pattern.shape[0] != shape[0]:
        pattern = pattern.mean(0, keepdim=True).expand(shape[0], -1, -1).contiguous()
    return pattern
