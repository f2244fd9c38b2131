"""The watermark (the paper's global trigger): a fixed pattern P in [0, 1] over the image but a
border, *added* with an amplitude and clipped: x' = clip(x + amplitude * P). Not alpha blending.

Where P comes from: a user's file (``pattern_file``), else a generated pattern by name
(``pattern``, ``tradeoff``'s :data:`WATERMARK_PATTERNS`):

- ``random`` (also what an unset ``pattern`` means): a coloured pattern of 0/1 values fixed by
  ``pattern_seed``, standing in for CIFAR-10's watermark (64/255 inside a 2-pixel border).
- ``picture``: a smooth bright shape on a dark ground (grey values in [0, 1], no randomness),
  standing in for MNIST's watermark, a picture (an apple) resized to 28x28 and added at amplitude
  0.1, 0.2 or 0.3 with no border. The original pictures are not redistributable; a user's own
  picture goes in ``pattern_file``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tradeoff.core.errors import TradeoffError
from tradeoff.core.registry import Registry
from tradeoff.core.spec import option
from tradeoff.triggers.base import TRIGGERS, Trigger

WATERMARK_PATTERNS: Registry = Registry("watermark pattern", listed=False)


@WATERMARK_PATTERNS.register("random", description="coloured 0/1 values fixed by pattern_seed (CIFAR-10's stand-in)")
def random_pattern(shape: tuple, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(tuple(shape), generator=g) < 0.5).float()


@WATERMARK_PATTERNS.register("picture", description="a smooth bright shape on dark, no randomness (MNIST's stand-in)")
def picture_pattern(shape: tuple, seed: int = 0) -> torch.Tensor:
    """A smooth, apple-like grey shape: two overlapping soft-edged lobes with a lit highlight and a
    short stem, bright (up to 1) on a dark ground (0 near the edges). Drawn on a 28x28 grid scaled
    to ``shape`` (C, H, W), the same grey on every channel; ``seed`` is ignored."""
    c, h, w = shape
    y = (torch.arange(h, dtype=torch.float64) + 0.5) * 28.0 / h
    x = (torch.arange(w, dtype=torch.float64) + 0.5) * 28.0 / w
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    lobes = [(14.5, 11.0, 6.5), (14.5, 17.0, 6.5), (18.0, 14.0, 5.0)]  # (row, col, radius)
    edge = torch.stack([((yy - r) ** 2 + (xx - q) ** 2).sqrt() - rad for r, q, rad in lobes]).min(0).values
    body = torch.sigmoid(-edge / 0.8)  # 1 inside, 0 outside, a soft edge about 2 px wide
    light = 0.7 + 0.3 * torch.exp(-((yy - 12.5) ** 2 + (xx - 11.5) ** 2) / (2 * 4.0 ** 2))
    stem = torch.sigmoid(-((xx - 14.5).abs() - 1.0) / 0.6) * torch.sigmoid(-((yy - 6.5).abs() - 2.5) / 0.6)
    grey = torch.maximum(body * light, 0.8 * stem).clamp(0, 1).float()
    return grey.expand(c, h, w).contiguous()


@dataclass
class WatermarkOptions:
    amplitude: float = option(64 / 255, doc="x' = clip(x + amplitude * P)", min=0, max=1)
    pattern: Optional[str] = option(None, doc="generated P by name (random, picture); unset: random",
                                    choices="watermark pattern")
    pattern_file: Optional[str] = option(None, doc=".npy or image file used as P (replaces the generated one)")
    pattern_seed: int = option(0, doc="seed of the random pattern")
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
        self._base = named_or_file_pattern(self.options, self.reference_shape)
        return self._base


def named_or_file_pattern(options, shape: tuple) -> torch.Tensor:
    """A (C, H, W) pattern in [0, 1] from options with ``pattern_file`` (a user's file), else
    ``pattern`` (a generated one by name; unset: random) and ``pattern_seed``."""
    if options.pattern_file:
        return load_pattern_file(Path(options.pattern_file), tuple(shape))
    make = WATERMARK_PATTERNS.get(options.pattern or "random", where="trigger.pattern")
    return make(tuple(shape), options.pattern_seed)


MAX_PATTERN_SIDE = 4096  # a trigger pattern is resized to the images (at most a few hundred pixels a side)
MAX_PATTERN_BYTES = 256 << 20


def load_pattern_file(path: Path, shape: tuple) -> torch.Tensor:
    """A user pattern: ``.npy`` (H x W or C x H x W or H x W x C numbers, in [0, 1] or [0, 255]) or
    an image file, scaled to [0, 1]; anything else is one sentence, before any training."""
    where = f"trigger.pattern_file {str(path)!r}"
    if not path.is_file():
        raise TradeoffError(f"{where} does not exist.")
    if path.stat().st_size > MAX_PATTERN_BYTES:
        raise TradeoffError(f"{where} is larger than {MAX_PATTERN_BYTES >> 20} MiB; a pattern is one small image.")
    arr = _read_npy(path, where) if path.suffix == ".npy" else _read_picture(path, where, shape[0] == 3)
    if arr.ndim not in (2, 3) or min(arr.shape) < 1 or max(arr.shape) > MAX_PATTERN_SIDE:
        raise TradeoffError(f"{where} must be an image (H x W, C x H x W or H x W x C, at most {MAX_PATTERN_SIDE} "
                            f"a side), not an array of shape {tuple(arr.shape)}.")
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 255:
        raise TradeoffError(f"{where} must hold finite values in [0, 1] or [0, 255].")
    if arr.max() > 1:
        arr = arr / 255.0
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.ndim == 2:
        t = t[None]
    elif t.shape[-1] in (1, 3) and t.shape[0] not in (1, 3):
        t = t.permute(2, 0, 1)
    if t.shape[0] not in (1, 3):
        raise TradeoffError(f"{where} must have 1 or 3 channels, not an array of shape {tuple(arr.shape)}.")
    return fit_pattern(t, shape).clamp(0, 1)


def _read_npy(path: Path, where: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001  any unreadable file is the user's input problem
        raise TradeoffError(f"{where} cannot be read as a .npy array ({e.__class__.__name__}).") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise TradeoffError(f"{where} must hold numbers, not {getattr(arr, 'dtype', type(arr).__name__)}.")
    return arr.astype(np.float32)


def _read_picture(path: Path, where: str, colour: bool) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                if max(img.size) > MAX_PATTERN_SIDE:
                    raise TradeoffError(f"{where} is {img.size[0]} x {img.size[1]} pixels, more than "
                                        f"{MAX_PATTERN_SIDE} a side; a pattern is one small image.")
                return np.asarray(img.convert("RGB" if colour else "L"), dtype=np.float32)
    except TradeoffError:
        raise
    except Exception as e:  # noqa: BLE001  any unreadable file is the user's input problem
        raise TradeoffError(f"{where} cannot be read as an image ({e.__class__.__name__}).") from None


def fit_pattern(pattern: torch.Tensor, shape: tuple) -> torch.Tensor:
    """Resize a (C, H, W) pattern to ``shape`` (nearest); grey <-> colour by averaging/copying."""
    if tuple(pattern.shape[1:]) != tuple(shape[1:]):
        pattern = F.interpolate(pattern[None], size=tuple(shape[1:]), mode="nearest")[0]
    if pattern.shape[0] != shape[0]:
        pattern = pattern.mean(0, keepdim=True).expand(shape[0], -1, -1).contiguous()
    return pattern
