"""Generated stand-ins for the datasets' files, in each dataset's real on-disk format, and each
dataset's synthetic cut (:class:`~tradeoff.core.registry.SyntheticCut`): the files a rehearsal on
generated data (``tradeoff sweep --synthetic``) writes, their shape, and the budget they allow.

The writers are also the tests' fake datasets: one writer per on-disk format.

- MNIST: IDX files (``mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``), 28x28x1.
- CIFAR-10: python batches (``cifar-10-batches-py/data_batch_{1..5}``, ``test_batch``), 32x32x3.
- ImageNet: an ImageFolder (``imagenet/{train,val}/<class>/<image>.jpg``) of JPEGs of varied
  sizes around 224-300 px, so that the random-resized crop and the resize + centre crop both run;
  and a randomly initialised ResNet-50 standing in for the released weights the paper fine-tunes.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

from tradeoff.core.registry import GeneratedFiles, StandInWeights, SyntheticCut
from tradeoff.data import builtin as _builtin, folder as _folder  # noqa: F401  (the datasets these cuts are declared for)
from tradeoff.data.registry import DATASETS

# --------------------------------------------------------------------------- writers


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> None:
    """One IDX file of uint8 values (optionally gzipped)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    Path(path).write_bytes(gzip.compress(raw) if gz else raw)


def _class_images(rng, labels: np.ndarray, shape: tuple) -> np.ndarray:
    """uint8 noise images whose mean brightness depends on the label (a learnable signal)."""
    base = 40 + 17 * labels.reshape(-1, *([1] * len(shape)))
    return (base + rng.normal(0, 50, (len(labels), *shape))).clip(0, 255).astype(np.uint8)


def write_mnist(folder: Path, n_train: int = 30, n_test: int = 20, gz: bool = True, seed: int = 0,
                noise: bool = True) -> dict:
    """MNIST's four IDX files in ``folder``; labels cycle 0..9. Returns the arrays by file name.
    ``noise``: uniform noise images (else class-dependent ones)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ytr, yte = np.arange(n_train) % 10, np.arange(n_test) % 10
    if noise:
        xtr, xte = rng.integers(0, 256, (n_train, 28, 28)), rng.integers(0, 256, (n_test, 28, 28))
    else:
        xtr, xte = _class_images(rng, ytr, (28, 28)), _class_images(rng, yte, (28, 28))
    arrays = {"train-images-idx3-ubyte": xtr, "train-labels-idx1-ubyte": ytr,
              "t10k-images-idx3-ubyte": xte, "t10k-labels-idx1-ubyte": yte}
    for name, arr in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), arr, gz)
    return arrays


def write_cifar(folder: Path, n: int = 12, seed: int = 1, noise: bool = True, n_test: int | None = None) -> None:
    """CIFAR-10's python batches in ``folder``: five training batches of ``n`` images and a test
    batch of ``n_test`` (default ``n``), as pickled dicts of bytes keys, like the originals."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        count = n if name != "test_batch" or n_test is None else n_test
        labels = np.arange(count) % 10
        data = (rng.integers(0, 256, (count, 3072)).astype(np.uint8) if noise
                else _class_images(rng, labels, (3072,)))
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": list(labels)}, fh)


def write_image_folder(folder: Path, classes, per_class: int, val_per_class: int | None = None,
                       size: tuple = (224, 300), seed: int = 0, val_classes=None) -> Path:
    """JPEGs under ``folder/{train,val}/<class>/``, each class its own tint, each image's height
    and width drawn from ``size`` (low inclusive, high exclusive). ``val_per_class`` defaults to
    a third of ``per_class`` (at least 1); ``val_classes`` defaults to ``classes``."""
    from PIL import Image

    folder = Path(folder)
    classes = list(classes)
    val_per_class = max(1, per_class // 3) if val_per_class is None else val_per_class
    rng = np.random.default_rng(seed)
    for split, names, count in (("train", classes, per_class), ("val", list(val_classes or classes), val_per_class)):
        for cls in names:
            out = folder / split / cls
            out.mkdir(parents=True, exist_ok=True)
            tint = 60 + (180 * classes.index(cls)) // max(1, len(classes) - 1)
            for i in range(count):
                h, w = (int(v) for v in rng.integers(size[0], size[1], 2))
                img = rng.normal(tint, 40, (h, w, 3)).clip(0, 255).astype(np.uint8)
                Image.fromarray(img).save(out / f"img{i:03d}.jpg", quality=90)
    return folder


def resnet50_standin(seed: int = 0) -> dict:
    """A randomly initialised torchvision ResNet-50 (1,000 classes) state dict, in torchvision's key
    names: a stand-in for the released weights the paper fine-tunes."""
    import torch
    from torchvision.models import resnet50

    torch.manual_seed(seed)
    return resnet50(weights=None).state_dict()


# --------------------------------------------------------------------------- the datasets' cuts

# 20 training images a class; the rehearsal's budget (steps, batches, test subset) suits them
DATASETS.declare_synthetic("mnist", SyntheticCut(files=GeneratedFiles(
    folder="mnist", shape={"train": 200, "test": 100},
    write=lambda folder, train, test: write_mnist(folder, train, test, gz=True, seed=0, noise=False),
    describe=lambda train, test: f"{train} training / {test} test images, 28x28x1 (IDX files)")))

DATASETS.declare_synthetic("cifar10", SyntheticCut(files=GeneratedFiles(
    folder="cifar-10-batches-py", shape={"train": 200, "test": 100},  # 5 training batches of 40
    write=lambda folder, train, test: write_cifar(folder, train // 5, seed=1, noise=False, n_test=test),
    describe=lambda train, test: f"{train} training / {test} test images, 32x32x3 (python batches)")))


def _write_imagenet(folder: Path, classes: int, train: int, test: int, sizes: tuple) -> None:
    names = [f"n{i:08d}" for i in range(classes)]  # WordNet-id-like folder names
    write_image_folder(folder, names, train, test, size=sizes, seed=2)


DATASETS.declare_synthetic("imagenet", SyntheticCut(
    # ResNet-50 at 224 px on a CPU: two steps of two images, four test images; autocast fp16 is
    # about 10x slower than fp32 on CPUs (it is a GPU format), so fp32 here; one loader process.
    fields={"train.steps": 2, "train.batch_size": 2, "data.test_subset": 4, "eval.batch_size": 4,
            "train.precision": "fp32", "data.workers": 1},
    where_set={"data.holdout_per_class": 1},  # of 4 training images a class
    files=GeneratedFiles(
        # the paper's target label is 7: at least 8 classes; image heights and widths drawn per image
        folder="imagenet", shape={"classes": 10, "train": 4, "test": 2, "sizes": (224, 300)},
        write=_write_imagenet,
        describe=lambda classes, train, test, sizes: (
            f"{classes} classes, {train} training / {test} validation images per class, "
            f"{sizes[0]}-{sizes[1] - 1} px JPEGs (ImageFolder)")),
    weights=StandInWeights("resnet50-standin.safetensors", resnet50_standin,
                           "randomly initialised torchvision ResNet-50, stand-in for the released weights")))
