"""Device and numeric precision: where a run computes, and in which floating-point format."""

from __future__ import annotations

import random
from contextlib import nullcontext
from typing import Optional

import numpy as np
import torch

from tradeoff.registry import Registry

PRECISIONS: Registry[Optional[torch.dtype]] = Registry("precision", listed=False)
PRECISIONS.register("fp32", description="full precision, no autocast")(None)
PRECISIONS.register("bf16", description="bfloat16 autocast")(torch.bfloat16)
PRECISIONS.register("fp16", description="float16 autocast (a gradient scaler on CUDA)")(torch.float16)


def pick_device(name: str) -> torch.device:
    """``auto``: the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_for(device: torch.device, precision: str):
    """The autocast context of ``precision`` (a no-op for fp32)."""
    dtype = PRECISIONS.get(precision)
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
