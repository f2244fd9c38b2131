"""Minibatch order shared by every data source: the epoch's permutation and the global batches.

Every training source (in-memory :class:`~tradeoff.data.imageset.ImageSet`, streamed
:class:`~tradeoff.data.folder.FolderSet`) gives the training loop the same interface:
``steps_per_epoch``, ``epoch(index, first)`` yielding (x, y) device batches from batch ``first``
on, ``last_global_size`` (the size of the global batch the last slice belongs to, for
data-parallel loss weights), ``generators()`` (the random generators a snapshot saves),
``stop_reason`` (a sentence once the data asks training to stop at the next step boundary: an
image that cannot be decoded) and ``metrics()`` (what the source adds to metrics.json).

A poisoning method that changes every batch (WaNet) hands the sources a :class:`BatchPoisoning`;
each source calls it on every batch after augmentation, on the device, with a generator of that
batch's own (:func:`batch_generator`), so that a resumed run draws the same.
"""

from __future__ import annotations

from typing import Optional, Protocol

import torch

from tradeoff.data.augment import pad_crop_flip


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's order of the training set: drawn on the CPU, so it is the same on every rank
    and every device."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))


def global_batches(n: int, batch_size: int, world: int = 1) -> list[tuple[int, int]]:
    """(start, stop) of each global batch of an epoch. With several ranks a last batch smaller
    than the number of ranks is dropped (some rank would get no image)."""
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if world > 1 and bounds and bounds[-1][1] - bounds[-1][0] < world:
        bounds.pop()
    return bounds


class BatchPoisoning(Protocol):
    """A poisoning step applied to every training batch: (x, y) -> (x, y) of the same size."""

    def __call__(self, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]: ...


def batch_generator(seed: int, epoch: int, step: int, rank: int, device) -> torch.Generator:
    """The generator of one batch's poisoning draws, on ``device``: seeded by (seed, epoch, step
    within the epoch, rank) alone, so that a resumed run (which restarts at that batch) and any
    number of loader processes draw the same as an uninterrupted run."""
    key = ((seed * 1_000_003 + epoch) * 1_000_003 + step) * 4099 + rank
    return torch.Generator(device=device).manual_seed(key % (2 ** 63))


def poison_batch(poisoning: Optional[BatchPoisoning], x, y, seed: int, epoch: int, step: int, rank: int):
    """(x, y) after ``poisoning`` with this batch's generator; unchanged without one."""
    if poisoning is None:
        return x, y
    return poisoning(x, y, batch_generator(seed, epoch, step, rank, x.device))


class InMemoryBatches:
    """Shuffled minibatches of device-resident tensors; augmentation on the device, its draws from
    a CPU generator (:mod:`tradeoff.data.augment`), so the batches are the same on every device.

    With ``world > 1`` each rank takes its own slice of the same global permutation
    (every rank draws the same permutation from the same seed)."""

    def __init__(self, x, y, batch_size: int, augment: bool, seed: int, rank: int = 0, world: int = 1,
                 flip: bool = True, poisoning: Optional[BatchPoisoning] = None):
        self.x, self.y, self.poisoning = x, y, poisoning
        self.batch_size, self.augment, self.flip, self.seed = batch_size, augment, flip, seed
        self.rank, self.world = rank, world
        self.steps_per_epoch = len(global_batches(len(y), batch_size, world))
        self._augment_gen = torch.Generator().manual_seed(seed + 7919 * (rank + 1))
        self.last_global_size = 0
        self.stop_reason = None  # in memory every image is already decoded: nothing asks training to stop

    def generators(self) -> dict[str, torch.Generator]:
        return {"augment": self._augment_gen}

    def metrics(self) -> dict:
        return {}

    def epoch(self, index: int, first: int = 0):
        perm = epoch_permutation(len(self.y), self.seed, index).to(self.y.device)
        for step, (start, stop) in enumerate(global_batches(len(self.y), self.batch_size, self.world)[first:], first):
            idx = perm[start:stop]
            idx = idx[self.rank::self.world] if self.world > 1 else idx
            xb, yb = self.x[idx], self.y[idx]
            if self.augment:
                xb = pad_crop_flip(xb, 2, self._augment_gen, self.flip)
            self.last_global_size = stop - start
            yield poison_batch(self.poisoning, xb, yb, self.seed, index, step, self.rank)
