"""Device and numeric precision: where a run computes, and in which floating-point format."""

from __future__ import annotations

import os
import random
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from tradeoff.core.registry import Registry

PRECISIONS: Registry[Optional[torch.dtype]] = Registry("precision", listed=False)
PRECISIONS.register("fp32", description="full precision, no autocast")(None)
PRECISIONS.register("bf16", description="bfloat16 autocast")(torch.bfloat16)
PRECISIONS.register("fp16", description="float16 autocast (a gradient scaler on CUDA)")(torch.float16)


@dataclass(frozen=True)
class TF32Setting:
    """Whether float32 convolutions (cuDNN) and matrix products (cuBLAS) may round their inputs
    to TensorFloat-32 on GPUs that have it (Ampere and later); CPUs compute in full fp32 either way."""

    convolutions: bool
    matmul: bool


TF32_SETTINGS: Registry[TF32Setting] = Registry("TF32 setting", listed=False)
TF32_SETTINGS.register("convolutions", description="PyTorch's default: cuDNN convolutions in TF32, "
                       "matrix products in full fp32")(TF32Setting(convolutions=True, matmul=False))
TF32_SETTINGS.register("all", description="convolutions and matrix products in TF32")(
    TF32Setting(convolutions=True, matmul=True))
TF32_SETTINGS.register("off", description="full fp32 everywhere")(TF32Setting(convolutions=False, matmul=False))


def apply_tf32(name: str) -> TF32Setting:
    """Set the process's TF32 flags (``torch.backends``) to the named setting; returns it."""
    setting = TF32_SETTINGS.get(name)
    torch.backends.cudnn.allow_tf32 = setting.convolutions
    torch.backends.cuda.matmul.allow_tf32 = setting.matmul
    return setting


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


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """``t`` on ``device``: from the CPU to a GPU through pinned memory without waiting (the copy
    is ordered on the GPU's stream before any kernel that reads it); as it is when already there."""
    device = torch.device(device)
    if t.device == device:
        return t
    if t.device.type == "cpu" and device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def loader_workers(requested: Optional[int]) -> int:
    """DataLoader worker processes: ``requested``, or when unset the CPU cores this process may use
    shared among the machine's training processes (``LOCAL_WORLD_SIZE``, set by torchrun), one
    core kept for the training loop, at most 8 (more decoders rarely keep a GPU busier, and each
    costs memory)."""
    if requested is not None:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(8, cores // local_processes - 1))


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN has bfloat16 kernels on this CPU (AVX512-BF16 or AMX); without them PyTorch
    runs bf16 convolutions on its slow reference path."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def precision_warning(device: torch.device, precision: str) -> Optional[str]:
    """One sentence when ``precision`` will be slower than fp32 on ``device``, else None."""
    if device.type == "cpu" and precision == "bf16" and not cpu_has_native_bf16():
        return ("train.precision bf16 on a CPU without bfloat16 kernels (no AVX512-BF16 or AMX): convolutions "
                "take PyTorch's slow reference path, several times slower than fp32 (benchmarks/profile_bf16.py)")
    return None
