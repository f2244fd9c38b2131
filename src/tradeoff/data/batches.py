"""Minibatch order shared by every data source: the epoch's permutation and the global batches.

Every training source (in-memory :class:`~tradeoff.data.imageset.ImageSet`, streamed
:class:`~tradeoff.data.folder.FolderSet`) gives the training loop the same interface:
``steps_per_epoch``, ``epoch(index, first)`` yielding (x, y) device batches from batch ``first``
on, ``last_global_size`` (the size of the global batch the last slice belongs to, for
data-parallel loss weights) and ``generators()`` (the random generators a snapshot saves).
"""

from __future__ import annotations

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


class InMemoryBatches:
    """Shuffled minibatches of device-resident tensors; augmentation on the device.

    With ``world > 1`` each rank takes its own slice of the same global permutation
    (every rank draws the same permutation from the same seed)."""

    def __init__(self, x, y, batch_size: int, augment: bool, seed: int, rank: int = 0, world: int = 1,
                 flip: bool = True):
        self.x, self.y = x, y
        self.batch_size, self.augment, self.flip, self.seed = batch_size, augment, flip, seed
        self.rank, self.world = rank, world
        self.steps_per_epoch = len(global_batches(len(y), batch_size, world))
        # Augmentation draws on the data's device (no host round trip per batch).
        self._augment_gen = torch.Generator(device=x.device).manual_seed(seed + 7919 * (rank + 1))
        self.last_global_size = 0

    def generators(self) -> dict[str, torch.Generator]:
        return {"augment": self._augment_gen}

    def epoch(self, index: int, first: int = 0):
        perm = epoch_permutation(len(self.y), self.seed, index).to(self.y.device)
        for start, stop in global_batches(len(self.y), self.batch_size, self.world)[first:]:
            idx = perm[start:stop]
            idx = idx[self.rank::self.world] if self.world > 1 else idx
            xb, yb = self.x[idx], self.y[idx]
            if self.augment:
                xb = pad_crop_flip(xb, 2, self._augment_gen, self.flip)
            self.last_global_size = stop - start
            yield xb, yb
