"""Streamed folder-per-class datasets ('imagefolder', 'imagenet'): images are read and decoded by
DataLoader worker processes batch by batch; nothing but the file list is held in memory.

Layout: ``ROOT/<folder>/train/<class>/<image>`` and ``ROOT/<folder>/val/<class>/<image>``, where
``<folder>`` is ``data.folder`` (a name under ROOT or a path of its own), by default the
dataset's name ('imagenet' reads ROOT/imagenet, 'imagefolder' reads ROOT/imagefolder). Classes
are the sorted sub-folder names of ``train``; ``val`` may hold any of them.

The protocol's transforms: training = random-resized crop + horizontal flip to ``data.image_size``
(224), evaluation = resize the short side to 256/224 of it + centre crop (``data.augment: false``
uses the evaluation transform for training too). Poisoning is applied on the fly to the planned
indices, on the decoded image at its own resolution, *before* the crop; the test-time trigger is
stamped on the evaluation batches by :func:`tradeoff.evaluation.metrics.evaluate`, after the transform.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from tradeoff.core.device import loader_workers
from tradeoff.core.errors import TradeoffError
from tradeoff.core.preemption import Preempted
from tradeoff.core.spec import option
from tradeoff.data.batches import BatchPoisoning, epoch_permutation, global_batches, poison_batch
from tradeoff.data.imageset import DataBundle
from tradeoff.data.registry import DatasetInfo, Protocol, register
from tradeoff.data.verify import UnreadableImage, check_no_empty_classes, decode, scan_images
from tradeoff.triggers import CORNERS, Stamp, apply_stamp

UNREADABLE = -1  # the label a loader process gives an image it cannot decode
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"}
DEFAULT_SIZE = 224
RESIZE_RATIO = 256 / 224  # evaluation: resize 256, centre crop 224


def scan_split(split_dir: Path, classes: list[str] | None = None):
    """(classes, relative paths as a bytes array, labels) of one split, in sorted order."""
    if classes is None:
        classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    index = {name: i for i, name in enumerate(classes)}
    present = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    unknown = [c for c in present if c not in index]
    if unknown:
        raise TradeoffError(f"{split_dir} has class folders the training split lacks: {', '.join(unknown[:5])}.")
    paths, labels = [], []
    for name in present:
        files = sorted(e.name for e in os.scandir(split_dir / name)
                       if e.is_file() and Path(e.name).suffix.lower() in IMAGE_SUFFIXES)
        paths += [f"{name}/{f}".encode() for f in files]
        labels += [index[name]] * len(files)
    # A fixed-width bytes array, not a list of str: no per-item objects whose reference counts
    # would make forked loader workers copy the whole list.
    return classes, np.array(paths, dtype=np.bytes_), np.array(labels, dtype=np.int64)


def stamp_native(image: torch.Tensor, trigger, corner: int) -> torch.Tensor:
    """The trigger stamped on a uint8 (C, H, W) image at its own resolution (the one stamping
    rule of :mod:`tradeoff.triggers`, built for this shape without caching it)."""
    shape = tuple(image.shape)
    stamp = Stamp(*(t[None] for t in trigger.build(shape, CORNERS[corner])))
    x = apply_stamp(image[None].float().div_(255), stamp, torch.zeros(1, dtype=torch.long))
    return x.mul_(255).round_().to(torch.uint8)[0]


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of a uint8 (C, H, W) image to (h, w), back to uint8."""
    out = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return out[0].round_().clamp_(0, 255).to(torch.uint8)


def random_resized_box(h: int, w: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                       generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a crop covering a random share ``scale`` of the image's area
    with a random aspect ratio (log-uniform in ``ratio``), as in the Inception/ResNet recipe;
    after 10 misses, the central crop with the closest allowed aspect ratio."""
    area = h * w
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target = area * torch.empty(1).uniform_(*scale, generator=generator).item()
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0].item(), log_ratio[1].item(), generator=generator)).item()
        cw, ch = round((target * aspect) ** 0.5), round((target / aspect) ** 0.5)
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
            return top, left, ch, cw
    aspect = w / h
    if aspect < ratio[0]:
        cw, ch = w, round(w / ratio[0])
    elif aspect > ratio[1]:
        ch, cw = h, round(h * ratio[1])
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def train_transform(image: torch.Tensor, size: int, generator: torch.Generator | None = None,
                    flip: bool = True) -> torch.Tensor:
    """Random-resized crop to size x size, then (``flip``) a horizontal flip with probability 1/2."""
    top, left, ch, cw = random_resized_box(*image.shape[1:], generator=generator)
    out = resize(image[:, top:top + ch, left:left + cw], (size, size))
    return out.flip(-1) if flip and torch.rand(1, generator=generator).item() < 0.5 else out


def eval_transform(image: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Resize the short side to round(size * 256 / 224), then the central size x size crop."""
    h, w = image.shape[1:]
    short = round(size * RESIZE_RATIO)
    new = (short, int(w * short / h)) if h <= w else (int(h * short / w), short)  # long side truncated, as torchvision
    image = resize(image, new)
    top, left = round((new[0] - size) / 2), round((new[1] - size) / 2)
    return image[:, top:top + size, left:left + size].contiguous()


class FolderSet(Dataset):
    """One split of a folder-per-class dataset; items are (uint8 (3, S, S) image, label)."""

    streamed = True

    def __init__(self, base: Path, paths: np.ndarray, labels: np.ndarray, classes: list[str],
                 image_size: int, train: bool, workers: int, flip: bool = True, skip_unreadable: bool = False):
        self.base, self.paths, self.classes = str(base), paths, classes
        self.skip_unreadable = skip_unreadable
        self.image_size, self.train, self.workers, self.flip = image_size, train, workers, flip
        self.targets = torch.from_numpy(labels)  # the files' labels, before any poisoning
        self._labels = labels  # the labels training sees (dirty-label poisoning changes some)
        self._slot = None  # per image: its position in the poison plan, or -1
        self.poisoning: Optional[BatchPoisoning] = None  # a step every training batch goes through (WaNet)
        self._corners = self._trigger = None
        self.transform = (functools.partial(train_transform, size=image_size, flip=flip) if train
                          else functools.partial(eval_transform, size=image_size))

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple:
        """(C, H, W) of the images the model sees."""
        return (3, self.image_size, self.image_size)

    def subset(self, n: int | None, seed: int) -> "FolderSet":
        """A seeded random subset of ``n`` images (as :meth:`ImageSet.subset`)."""
        if n is None or n >= len(self):
            return self
        return self.take(torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n].sort().values)

    def take(self, indices: torch.Tensor) -> "FolderSet":
        """The images at ``indices`` (a 1-D index tensor), in that order."""
        return self._copy(indices.cpu().numpy())

    def unaugmented(self) -> "FolderSet":
        """The same images (poisons and labels included) read through the evaluation transform:
        what the backdoor defences examine."""
        return self._copy(train=False)

    @property
    def labels(self) -> torch.Tensor:
        """The labels training sees (after poisoning)."""
        return torch.from_numpy(self._labels)

    def _copy(self, idx: np.ndarray | None = None, train: bool | None = None) -> "FolderSet":
        idx = np.arange(len(self)) if idx is None else idx
        out = FolderSet(Path(self.base), self.paths[idx], self._labels[idx], self.classes, self.image_size,
                        self.train if train is None else train, self.workers, self.flip, self.skip_unreadable)
        out.targets = self.targets[torch.from_numpy(idx)]
        if self._slot is not None:
            out._slot, out._corners, out._trigger = self._slot[idx], self._corners, self._trigger
        out.poisoning = self.poisoning
        return out

    def poisoned(self, plan, trigger, device=None) -> "FolderSet":
        """A copy that stamps ``plan.indices`` (at ``plan.corners``) whenever they are read and
        trains on ``plan.labels``."""
        if plan.images is not None:
            raise TradeoffError("a poisoning method that changes its chosen images before stamping "
                                "(label-consistent) needs an in-memory dataset, not a streamed one.")
        out = self._copy()
        slot = np.full(len(self), -1, dtype=np.int64)
        slot[plan.indices.numpy()] = np.arange(len(plan.indices))
        out._slot, out._corners, out._trigger = slot, plan.corners.numpy(), trigger
        out._labels = plan.labels.numpy().astype(np.int64)
        out.poisoning = plan.per_batch
        return out

    def without(self, removed: torch.Tensor) -> "FolderSet":
        """The set minus the images where ``removed`` (a bool mask) is True (by index)."""
        return self._copy(np.flatnonzero(~removed.cpu().numpy()))

    def read(self, i: int) -> torch.Tensor:
        """Image ``i`` decoded, with its trigger if it is poisoned, before any transform."""
        image = decode(os.path.join(self.base, self.paths[i].decode()))
        if self._slot is not None and self._slot[i] >= 0:
            image = stamp_native(image, self._trigger, int(self._corners[self._slot[i]]))
        return image

    def path(self, i: int) -> str:
        return os.path.join(self.base, self.paths[i].decode())

    def __getitem__(self, item):
        """Image ``item``, or ``(image index, draw seed)``: the training sampler's items, whose
        augmentation draws come from their own seed (the same in any loader process, and again
        after a resume). An image that cannot be decoded comes as a blank image with label
        :data:`UNREADABLE`, so that the batch's consumer names it (a loader process's exception
        would arrive as a traceback)."""
        i, draws = item if isinstance(item, tuple) else (item, None)
        generator = torch.Generator().manual_seed(draws) if draws is not None else None
        try:
            image = self.read(i)
        except UnreadableImage:
            return torch.zeros(self.shape, dtype=torch.uint8), UNREADABLE
        return self.transform(image, generator=generator), int(self._labels[i])

    def first_unreadable(self, yb: torch.Tensor, indices: list[int]) -> UnreadableImage | None:
        """The first image of a batch (``indices``: its image indices) that came unreadable, named
        with the reason (decoded again here: the loader process's exception stayed there)."""
        bad = (yb == UNREADABLE).nonzero().flatten().tolist()
        if not bad:
            return None
        path = self.path(indices[bad[0]])
        try:
            decode(path)
        except UnreadableImage as e:
            return e
        return UnreadableImage(path, "it failed to decode in the loader process")

    def batches(self, batch_size: int, seed: int, device, rank: int = 0, world: int = 1,
                augment: bool = False, flip: bool = True, log=None) -> "StreamedBatches":
        """Shuffled training batches (the transform was chosen with the split: ``augment`` and
        ``flip`` are the dataset's own); ``log`` hears of skipped unreadable images."""
        return StreamedBatches(self, batch_size, seed, device, rank, world, log, self.poisoning)

    def loader(self, batch_size: int, device=None, rank: int = 0, world: int = 1):
        """(x, y) evaluation batches in file order, x float in [0, 1] on ``device``; with
        ``world > 1`` only every world-th batch from ``rank`` on. An image that cannot be decoded
        is one sentence naming it (evaluated sets never skip images: every metric is on the whole set)."""
        device = torch.device(device or "cpu")
        batches = [list(range(s, min(s + batch_size, len(self)))) for s in range(0, len(self), batch_size)][rank::world]
        loader = DataLoader(self, batch_sampler=batches, num_workers=self.workers, pin_memory=device.type == "cuda")
        for indices, (xb, yb) in zip(batches, loader):
            unreadable = self.first_unreadable(yb, indices)
            if unreadable is not None:
                raise unreadable
            yield to_unit(xb, device), yb.to(device, non_blocking=True)


def to_unit(xb: torch.Tensor, device) -> torch.Tensor:
    """uint8 images (moved as bytes, a quarter of the traffic) -> float in [0, 1] on the device."""
    return xb.to(device, non_blocking=True).float().div_(255)


class _ShardSampler:
    """This rank's slice of every global batch of an epoch's permutation (the same partition as
    :class:`tradeoff.data.batches.InMemoryBatches`)."""

    def __init__(self, n: int, seed: int, bounds: list, rank: int, world: int):
        self.n, self.seed, self.bounds, self.rank, self.world = n, seed, bounds, rank, world
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        return len(self.bounds) - self.start

    def __iter__(self):
        perm = epoch_permutation(self.n, self.seed, self.epoch)
        base = (self.seed * 1_000_003 + self.epoch) << 24  # a draw seed per (seed, epoch, image)
        for start, stop in self.bounds[self.start:]:
            yield [(i, base + i) for i in perm[start:stop][self.rank::self.world].tolist()]


class StreamedBatches:
    """The streamed counterpart of :class:`tradeoff.data.batches.InMemoryBatches`: ``steps_per_epoch``,
    ``epoch(index)`` yielding device batches, ``last_global_size``. Worker processes decode,
    poison and transform; the batches travel as uint8 and become floats on the device.

    A training image that cannot be decoded: with the dataset's ``skip_unreadable`` it is left
    out of its batch, logged once and counted (:meth:`metrics`); otherwise the batch before it is
    yielded with :attr:`stop_reason` set, which asks the training loop to write a snapshot and
    stop there (resumable once the file is replaced), and :class:`Preempted` with that sentence
    follows if the loop reads on."""

    def __init__(self, dataset: FolderSet, batch_size: int, seed: int, device, rank: int = 0, world: int = 1,
                 log: Callable[[str], None] | None = None, poisoning: Optional[BatchPoisoning] = None):
        self.dataset, self.seed, self.rank, self.world = dataset, seed, rank, world
        self.poisoning, self._epoch = poisoning, 0
        self.device = torch.device(device)
        self.bounds = global_batches(len(dataset), batch_size, world)
        self.steps_per_epoch = len(self.bounds)
        self.sampler = _ShardSampler(len(dataset), seed, self.bounds, rank, world)
        workers = dataset.workers
        self.loader = DataLoader(dataset, batch_sampler=self.sampler, num_workers=workers,
                                 pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
                                 prefetch_factor=4 if workers > 0 else None,
                                 generator=torch.Generator().manual_seed(seed * 7919 + rank))
        self.last_global_size = 0
        self.log = log or (lambda message: None)
        self.stop_reason: str | None = None
        self.skipped: set[int] = set()  # indices of the training images left out as unreadable

    def generators(self) -> dict[str, torch.Generator]:
        return {"loader": self.loader.generator}

    def metrics(self) -> dict:
        """What the run's metrics.json records of this source: the unreadable images skipped."""
        return {"unreadable_images_skipped": len(self.skipped)} if self.dataset.skip_unreadable else {}

    def epoch(self, index: int, first: int = 0):
        self.sampler.epoch, self.sampler.start = index, first
        perm = epoch_permutation(len(self.dataset), self.seed, index)
        self._epoch = index
        ready = None  # one batch is held back until the next has decoded, so a stop lands before the bad one
        for step, ((start, stop), (xb, yb)) in enumerate(zip(self.bounds[first:], self.loader), first):
            indices = perm[start:stop][self.rank::self.world].tolist()
            unreadable = self.dataset.first_unreadable(yb, indices)
            if unreadable is not None:
                keep = self._skip(yb, indices, unreadable)
                if keep is None:
                    if ready is not None:
                        yield self._to_device(*ready)
                    # Reached when no snapshot was taken at that boundary (the epoch's first batch,
                    # or a loop without snapshots): the run resumes from its last snapshot, if any.
                    reason, self.stop_reason = self.stop_reason, None
                    raise Preempted(f"{reason}; training stopped before it")
                xb, yb = xb[keep], yb[keep]
            if ready is not None:
                yield self._to_device(*ready)
            ready = (xb, yb, stop - start, step)
        if ready is not None:
            yield self._to_device(*ready)

    def _to_device(self, xb: torch.Tensor, yb: torch.Tensor, global_size: int, step: int):
        """The batch on the device, through the per-batch poisoning step if there is one."""
        self.last_global_size = global_size
        return poison_batch(self.poisoning, to_unit(xb, self.device), yb.to(self.device, non_blocking=True),
                            self.seed, self._epoch, step, self.rank)

    def _skip(self, yb: torch.Tensor, indices: list[int], unreadable: UnreadableImage) -> torch.Tensor | None:
        """The mask of the batch's readable images, or None (with :attr:`stop_reason`) to stop."""
        bad = yb == UNREADABLE
        if not self.dataset.skip_unreadable or bool(bad.all()):
            whole = " and every other image of its batch" if self.dataset.skip_unreadable else ""
            self.stop_reason = (f"training image {unreadable.path}{whole} cannot be decoded ({unreadable.why}); "
                                "replace or remove it" + ("" if whole else " (or set data.skip_unreadable=true to "
                                                          "train without such images)"))
            return None
        for position in bad.nonzero().flatten().tolist():
            if indices[position] not in self.skipped:
                self.skipped.add(indices[position])
                self.log(f"skipped unreadable training image {self.dataset.path(indices[position])} "
                         f"({len(self.skipped)} so far)")
        return ~bad


@dataclass
class FolderOptions:
    """Options of the streamed folder datasets."""

    folder: Optional[str] = option(None, doc="the folder under the data root (default: the dataset's name), or a path")
    image_size: int = option(DEFAULT_SIZE, doc="crop size the model sees", min=8)
    workers: Optional[int] = option(None, doc="DataLoader worker processes; unset: sized to the machine's cores "
                                              "(not part of the cell digest)", min=0)
    verify: str = option("headers", doc="the image check before training: headers (open every image and read its "
                                        "header), full (decode every image), off", choices="image check")
    skip_unreadable: bool = option(False, doc="a training image that fails to decode is left out of its batch, "
                                              "logged and counted (false: training stops there, resumable)")


def load_folder(root: Path, download: bool, data_spec, default_folder: str) -> DataBundle:
    opts = data_spec.options or FolderOptions()
    folder = Path(opts.folder) if opts.folder else Path(default_folder)
    base = folder if folder.is_absolute() else Path(root) / folder
    train_dir, val_dir = base / "train", base / "val"
    if not (train_dir.is_dir() and val_dir.is_dir()):
        raise TradeoffError(
            f"{data_spec.dataset} not found: expected {train_dir}/<class>/<images> and {val_dir}/<class>/<images> "
            f"(set --data-root or TRADEOFF_DATA to the folder holding '{folder}/', or data.folder to the dataset's folder).")
    classes, train_paths, train_labels = scan_split(train_dir)
    _, val_paths, val_labels = scan_split(val_dir, classes)
    for paths, labels, where in ((train_paths, train_labels, train_dir), (val_paths, val_labels, val_dir)):
        if len(paths) == 0:
            raise TradeoffError(f"{where} holds no images (expected <class>/<image> files, e.g. .jpg or .png).")
        check_no_empty_classes(where, classes, labels)
    for paths, where in ((train_paths, train_dir), (val_paths, val_dir)):
        scan_images(where, paths, opts.verify, where)
    size = opts.image_size
    augment = True if data_spec.augment is None else data_spec.augment
    workers = loader_workers(opts.workers)
    train = FolderSet(train_dir, train_paths, train_labels, classes, size, augment, workers,
                      data_spec.augment_flip, opts.skip_unreadable)
    test = FolderSet(val_dir, val_paths, val_labels, classes, size, False, workers)
    return DataBundle(train, test, num_classes=len(classes), shape=(3, size, size), streamed=True)


# ImageNet's protocol: ResNet-50, SGD lr 0.1 (scale by batch/256), wd 1e-4, eps 8/255 in 5 steps.
_FOLDER_PROTOCOL = Protocol(model="resnet50", optimizer="sgd", lr=0.1, weight_decay=1e-4,
                            eps=8 / 255, step_size=2 / 255, steps=5, eps_l2=3.0, augment=True)

for _name, _what in (("imagenet", "ImageNet (ILSVRC-2012) as class folders"),
                     ("imagefolder", "any folder-per-class image dataset")):
    register(DatasetInfo(_name, functools.partial(load_folder, default_folder=_name), _FOLDER_PROTOCOL,
                         f"{_what}: ROOT/{_name}/train|val/<class>/<image>, streamed, "
                         f"random-resized crops to data.image_size (224)", options=FolderOptions, streamed=True))
