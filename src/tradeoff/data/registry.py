"""The dataset registry and each dataset's protocol defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from tradeoff.core.registry import Registry, SyntheticCut


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
    load: Callable  # (root: Path, download: bool, data_spec) -> DataBundle
    protocol: Protocol
    description: str
    options: Optional[type] = None  # the dataclass of the dataset's own options
    streamed: bool = False  # read from disk batch by batch (no training images in memory)


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def register(info: DatasetInfo, synthetic: Optional[SyntheticCut] = None) -> DatasetInfo:
    """Register a dataset; ``synthetic``: its generated files and the budget they allow
    (:class:`~tradeoff.core.registry.SyntheticCut`, for ``tradeoff sweep --synthetic``)."""
    return DATASETS.register(info.name, options=info.options, description=info.description,
                             synthetic=synthetic)(info)


def default_root() -> Path:
    """``$TRADEOFF_DATA``, else ``$XDG_CACHE_HOME/tradeoff`` (``~/.cache/tradeoff``)."""
    env = os.environ.get("TRADEOFF_DATA")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "tradeoff"
