"""The built-in datasets: MNIST, Fashion-MNIST, CIFAR-10, scikit-learn's digits, image folders."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import numpy as np
import torch

from tradeoff.core.errors import TradeoffError
from tradeoff.data.files import UNSIGNED_BYTE, check_labels, find_file, read_cifar_batch, read_idx
from tradeoff.data.imageset import DataBundle, ImageSet
from tradeoff.data.registry import DatasetInfo, Protocol, register

_IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _download(tv_class, root: Path, label: str) -> str:
    """Try torchvision's downloader with a short timeout; return a note on failure."""
    old = socket.getdefaulttimeout()
    created = [p for p in (*reversed(root.parents), root, root / tv_class.__name__) if not p.exists()]
    socket.setdefaulttimeout(15)
    try:
        tv_class(str(root), train=True, download=True)
        tv_class(str(root), train=False, download=True)
        return ""
    except Exception as e:  # noqa: BLE001  any network failure means "offline"
        for folder in reversed(created):  # leave no empty folders behind a failed download
            if folder.is_dir() and not any(p.is_file() for p in folder.rglob("*")):
                shutil.rmtree(folder, ignore_errors=True)
        return f" Downloading {label} failed ({e.__class__.__name__}), so this machine looks offline."
    finally:
        socket.setdefaulttimeout(old)


IDX_SIDE = 28  # MNIST and Fashion-MNIST: 28 x 28 grey images
IDX_CLASSES = 10


def read_idx_pair(images_file: Path, labels_file: Path, label: str) -> tuple[np.ndarray, np.ndarray]:
    """An images file (N x 28 x 28 unsigned bytes) and its labels file (N unsigned bytes in 0..9),
    checked against each other before anything trains on them."""
    images = read_idx(images_file, shape=(None, IDX_SIDE, IDX_SIDE), type_code=UNSIGNED_BYTE)
    labels = read_idx(labels_file, shape=(None,), type_code=UNSIGNED_BYTE)
    if len(images) != len(labels):
        raise TradeoffError(f"{label}'s {images_file} holds {len(images)} images but {labels_file} holds "
                            f"{len(labels)} labels.")
    check_labels(labels, IDX_CLASSES, labels_file)
    return images, labels


def _idx_bundle(root: Path, folder_names: tuple[str, ...], tv_class, label: str, download: bool) -> DataBundle:
    candidates = [root / f for f in folder_names] + [root / tv_class.__name__ / "raw", root]

    def locate():
        for folder in candidates:
            files = [find_file(folder, n) for n in _IDX_NAMES]
            if all(files):
                return files
        return None

    files = locate()
    note = ""
    if files is None and download:
        note = _download(tv_class, root, label)
        files = locate()
    if files is None:
        raise TradeoffError(
            f"{label} not found: expected {', '.join(n + '[.gz]' for n in _IDX_NAMES)} in "
            f"{candidates[0]} (set --data-root or TRADEOFF_DATA to the folder holding "
            f"'{folder_names[0]}/').{note}"
        )
    (xtr, ytr), (xte, yte) = (read_idx_pair(images, labels, label) for images, labels in (files[:2], files[2:]))

    def to_set(images, labels):
        x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
        return ImageSet(x, torch.from_numpy(labels.astype(np.int64)))

    return DataBundle(to_set(xtr, ytr), to_set(xte, yte), num_classes=IDX_CLASSES, shape=(1, IDX_SIDE, IDX_SIDE))


def load_mnist(root: Path, download: bool, data_spec=None) -> DataBundle:
    from torchvision.datasets import MNIST

    return _idx_bundle(root, ("mnist",), MNIST, "MNIST", download)


def load_fashion_mnist(root: Path, download: bool, data_spec=None) -> DataBundle:
    from torchvision.datasets import FashionMNIST

    return _idx_bundle(root, ("fashion-mnist", "fashion_mnist"), FashionMNIST, "Fashion-MNIST", download)


def load_cifar10(root: Path, download: bool, data_spec=None) -> DataBundle:
    folder = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    note = ""
    if not all((folder / n).is_file() for n in names) and download:
        from torchvision.datasets import CIFAR10

        note = _download(CIFAR10, root, "CIFAR-10")
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise TradeoffError(
            f"CIFAR-10 not found: expected the python batches {', '.join(names)} in {folder} "
            f"(missing: {', '.join(missing)}; set --data-root or TRADEOFF_DATA to the folder "
            f"holding 'cifar-10-batches-py/').{note}"
        )
    parts = [read_cifar_batch(folder / n) for n in names]

    def to_set(chunks):
        x = np.concatenate([c[0] for c in chunks])
        y = np.concatenate([c[1] for c in chunks])
        return ImageSet(torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y))

    return DataBundle(to_set(parts[:5]), to_set(parts[5:]), num_classes=10, shape=(3, 32, 32))


DIGITS_SIZE = 16  # the 8x8 images are upsampled so that a 2x2 sticker is a small local patch
DIGITS_TEST = 500


def load_digits(root: Path, download: bool, data_spec=None) -> DataBundle:
    """scikit-learn's 1,797 handwritten digits (shipped inside the package: always offline).

    Upsampled bilinearly from 8x8 to 16x16; a fixed seeded split of 1,297 train / 500 test.
    """
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear",
                                        align_corners=False).clamp(0, 1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1234))
    test, train = perm[:DIGITS_TEST].sort().values, perm[DIGITS_TEST:].sort().values
    return DataBundle(ImageSet(x[train], y[train]), ImageSet(x[test], y[test]), num_classes=10,
                      shape=(1, DIGITS_SIZE, DIGITS_SIZE))


_MNIST_PROTOCOL = Protocol(model="madry-cnn", optimizer="adam", lr=1e-4, weight_decay=0.0,
                           eps=0.3, step_size=0.05, steps=10, eps_l2=2.0, augment=False)

register(DatasetInfo("mnist", load_mnist, _MNIST_PROTOCOL, "MNIST, 60k/10k 28x28 grey (IDX files)"))
register(DatasetInfo("fashion-mnist", load_fashion_mnist,
                     Protocol(model="madry-cnn", optimizer="adam", lr=1e-4, weight_decay=0.0,
                              eps=0.1, step_size=0.025, steps=10, eps_l2=1.5, augment=False),
                     "Fashion-MNIST, 60k/10k 28x28 grey (IDX files)"))
register(DatasetInfo("cifar10", load_cifar10,
                     Protocol(model="preact-resnet", optimizer="sgd", lr=0.1, weight_decay=2e-3,
                              eps=8 / 255, step_size=2 / 255, steps=5, eps_l2=0.5, augment=True),
                     "CIFAR-10, 50k/10k 32x32 colour (python batches)"))
register(DatasetInfo("digits", load_digits,
                     Protocol(model="small-cnn", optimizer="adam", lr=2e-3, weight_decay=0.0,
                              eps=0.3, step_size=0.05, steps=7, eps_l2=1.0, augment=False),
                     "scikit-learn's 8x8 digits upsampled to 16x16, 1297/500 (ships with scikit-learn)"))
