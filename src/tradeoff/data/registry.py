"""The dataset registry and each dataset's protocol defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tradeoff.registry import Registry


@dataclass(frozen=True)
class Protocol:
    """What the paper's protocol uses for a dataset when the spec leaves a field unset."""

    model: str
    optimizer: str
    lr: float
    weight_decay: float
    eps: float  # L-inf budget
    step_size: float
    steps: int
    eps_l2: float
    augment: bool


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    load: Callable  # (root: Path, download: bool) -> DataBundle
    protocol: Protocol
    description: str
    takes_spec: bool = False  # load(root, download, data_spec): for loaders that need image_size etc.


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def register(info: DatasetInfo) -> DatasetInfo:
    return DATASETS.register(info.name)(info)


def default_root() -> Path:
    """``$TRADEOFF_DATA``, else ``$XDG_CACHE_HOME/tradeoff`` (``~/.cache/tradeoff``)."""
    env = os.environ.get("TRADEOFF_DATA")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "tradeoff"
