"""The watermark (the paper's global trigger): a fixed pattern P in [0, 1] over the image but a
border, *added* with an amplitude and clipped: x' = clip(x + amplitude * P). Not alpha blending."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from tradeoff.errors import TradeoffError
from tradeoff.spec import option
from tradeoff.triggers.base import TRIGGERS, Trigger


@dataclass
class WatermarkOptions:
    amplitude: float = option(64 / 255, doc="x' = clip(x + amplitude * P)", min=0, max=1)
    pattern_file: Optional[str] = option(None, doc=".npy or image file; else a seeded pattern")
    pattern_seed: int = option(0, doc="seed of the generated pattern")
    border: int = option(2, doc="untouched border width in pixels", min=0)


@TRIGGERS.register("watermark", options=WatermarkOptions)
class Watermark(Trigger):
    """A fixed pattern P in [0, 1] over the image but a border, added with an amplitude."""

    def build(self, shape, corner):
        pattern = self._pattern(shape)
        b = self.options.border
        if 2 * b >= min(shape[1:]):
            raise TradeoffError(f"trigger.border {b} leaves nothing of a {shape[1]}x{shape[2]} image.")
        inside = torch.zeros(shape)
        inside[:, b:shape[1] - b, b:shape[2] - b] = 1
        add = self.options.amplitude * pattern * inside
        return torch.zeros(shape), torch.zeros(shape), add

    def _pattern(self, shape) -> torch.Tensor:
        """The base pattern, resized (nearest) to another image shape when needed."""
        return fit_pattern(self._base_pattern(), shape)

    def _base_pattern(self) -> torch.Tensor:
        if getattr(self, "_base", None) is not None:
            return self._base
        c, h, w = self.reference_shape
        if self.options.pattern_file:
            self._base = load_pattern_file(Path(self.options.pattern_file), (c, h, w))
        else:
            # A coloured pattern of mostly 0/1 values, fixed by its seed.
            g = torch.Generator().manual_seed(self.options.pattern_seed)
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
