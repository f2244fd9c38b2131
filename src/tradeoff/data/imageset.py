"""In-memory image sets: float tensors in [0, 1], NCHW, with integer labels.

:class:`ImageSet` and the streamed :class:`~tradeoff.data.folder.FolderSet` share one interface,
so that no consumer (training, evaluation, backdoor defences) branches on which it holds:
``len``, ``labels``, ``targets``, ``subset``, ``take``, ``unaugmented``, ``poisoned``, ``without``,
``batches`` (shuffled training batches) and ``loader`` (ordered evaluation batches)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from tradeoff.core.device import to_device
from tradeoff.core.errors import TradeoffError
from tradeoff.data.batches import InMemoryBatches


@dataclass
class ImageSet:
    x: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y: torch.Tensor  # (N,) int64
    poisoning: Optional[object] = None  # a BatchPoisoning every training batch goes through (WaNet)

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def shape(self) -> tuple:
        return tuple(self.x.shape[1:])

    def subset(self, n: Optional[int], seed: int) -> "ImageSet":
        """A seeded random subset of ``n`` images (the whole set when n is None or too large)."""
        if n is None or n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        return self.take(torch.randperm(len(self), generator=g)[:n].sort().values)

    def take(self, indices: torch.Tensor) -> "ImageSet":
        """The images at ``indices`` (a 1-D index tensor), in that order."""
        idx = indices.to(self.y.device)
        return ImageSet(self.x[idx], self.y[idx])

    def unaugmented(self) -> "ImageSet":
        """The set as evaluation reads it (in memory, that is the set itself: augmentation is
        applied to training batches only)."""
        return self

    def to(self, device) -> "ImageSet":
        return ImageSet(self.x.to(device), self.y.to(device))

    @property
    def labels(self) -> torch.Tensor:
        """The labels training sees (after poisoning, for a poisoned set)."""
        return self.y

    @property
    def targets(self) -> torch.Tensor:
        """The labels the dataset's files give (before any poisoning)."""
        return self.y

    def poisoned(self, plan, trigger, device) -> "ImageSet":
        """The set on ``device`` with the plan's images stamped (batched) and the plan's labels.
        Where the plan carries ``images`` (its chosen images as the poisoning method changed them,
        e.g. perturbed adversarially), those are stamped in place of the originals."""
        x = self.x.to(device)
        if len(plan.indices):
            x = x.clone()
            idx = plan.indices.to(device)
            chosen = x[idx] if plan.images is None else plan.images.to(device, x.dtype)
            x[idx] = trigger.apply(chosen, plan.corners)
        return ImageSet(x, plan.labels.to(device), plan.per_batch)

    def without(self, removed: torch.Tensor) -> "ImageSet":
        """The set minus the images where ``removed`` (a bool mask) is True."""
        keep = ~removed.to(self.y.device)
        return ImageSet(self.x[keep], self.y[keep], self.poisoning)

    def batches(self, batch_size: int, seed: int, device, rank: int = 0, world: int = 1,
                augment: bool = False, flip: bool = True, log=None) -> InMemoryBatches:
        return InMemoryBatches(self.x.to(device), self.y.to(device), batch_size, augment, seed, rank, world, flip,
                               self.poisoning)

    def loader(self, batch_size: int, device=None, rank: int = 0, world: int = 1):
        """(x, y) batches in index order on ``device``; with ``world > 1`` only every world-th
        batch from ``rank`` on (this rank's share). A set held elsewhere goes to ``device`` once,
        in one copy (pinned, without waiting, on a GPU), not batch by batch."""
        device = torch.device(device) if device is not None else self.x.device
        x, y = to_device(self.x, device), to_device(self.y, device)
        for start in range(rank * batch_size, len(self), world * batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size]


@dataclass
class DataBundle:
    train: object  # ImageSet, or a streamed FolderSet: the same interface
    test: object
    num_classes: int
    shape: tuple  # (C, H, W) of the images the model sees
    streamed: bool = False  # read from disk batch by batch (for messages and sizes only)
    notes: list = field(default_factory=list)
    holdout: Optional[object] = None  # clean training images kept out of training (data.holdout_per_class)


def hold_out_per_class(images, per_class: int, num_classes: int):
    """(the rest, the held-out images): the last ``per_class`` images of every class, in file
    order (the original trains on each class's first images and keeps the others for its
    defences)."""
    labels = images.targets.cpu()
    counts = torch.bincount(labels, minlength=num_classes)
    short = (counts <= per_class).nonzero().flatten()
    if len(short):
        c = int(short[0])
        raise TradeoffError(f"data.holdout_per_class {per_class} leaves class {c} ({int(counts[c])} training images) "
                            "with nothing to train on.")
    order = torch.argsort(labels, stable=True)  # grouped by class, file order within a class
    after = counts.cumsum(0)[labels[order]] - torch.arange(len(labels)) - 1  # images of the class after it
    held = torch.zeros(len(labels), dtype=torch.bool)
    held[order] = after < per_class
    return images.take((~held).nonzero().flatten()), images.take(held.nonzero().flatten())
