"""Synthetic rehearsal of a sweep (``tradeoff sweep TABLES --synthetic``): generated data of each
dataset's shape in its on-disk format, a generated stand-in for ImageNet's released ResNet-50
weights, and one named layer of budget cuts on top of the preset. Everything else (models, input
shapes, data pipelines, attacks, certificates, backdoor defences, retraining, the report) is what
a real run executes; the numbers mean nothing, and every cell carries ``synthetic: true`` (part
of its digest) so that they can never pass for results.

The writers here are also the tests' fake datasets: one writer per on-disk format.

- MNIST: IDX files (``mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``), 28x28x1.
- CIFAR-10: python batches (``cifar-10-batches-py/data_batch_{1..5}``, ``test_batch``), 32x32x3.
- ImageNet: an ImageFolder (``imagenet/{train,val}/<class>/<image>.jpg``) of JPEGs of varied
  sizes around 224-300 px, so that the random-resized crop and the resize + centre crop both run.
"""

from __future__ import annotations

import copy
import gzip
import json
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tradeoff.adversarial_defenses.ibp import IBPOptions
from tradeoff.backdoor_defenses import parse_options
from tradeoff.data.folder import FolderOptions
from tradeoff.errors import TradeoffError
from tradeoff.runs import save_tensors_atomic, write_text_atomic
from tradeoff.spec import Spec

FOLDER = "synthetic-data"  # under the sweep's output folder
CHECKPOINT = "resnet50-standin.safetensors"
VERSION = 1  # of the generated files; a folder written by another version is written again

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


def write_resnet50_standin(path: Path, seed: int = 0) -> dict:
    """A randomly initialised torchvision ResNet-50 (1,000 classes) state dict as safetensors, in
    torchvision's key names: a stand-in for the released weights the paper fine-tunes."""
    import torch
    from torchvision.models import resnet50

    torch.manual_seed(seed)
    state = resnet50(weights=None).state_dict()
    save_tensors_atomic(Path(path), state, metadata={"tradeoff": "synthetic stand-in, random weights"})
    return state


# --------------------------------------------------------------------------- the generated data


@dataclass(frozen=True)
class SyntheticData:
    """What ``--synthetic`` generates, and where: the data root and the stand-in checkpoint."""

    root: Path
    mnist: tuple = (200, 100)  # training, test images
    cifar10: tuple = (200, 100)  # 5 training batches of 40, a test batch of 100
    imagenet_classes: int = 10  # the paper's target label is 7: at least 8 classes
    imagenet: tuple = (4, 2)  # training, validation images per class
    imagenet_sizes: tuple = (224, 300)  # image heights and widths, drawn per image

    @property
    def checkpoint(self) -> Path:
        return self.root / CHECKPOINT

    def describe(self) -> dict:
        """The generated data, for each run folder's synthetic.json."""
        return {"root": str(self.root),
                "mnist": f"{self.mnist[0]} training / {self.mnist[1]} test images, 28x28x1 (IDX files)",
                "cifar10": f"{self.cifar10[0]} training / {self.cifar10[1]} test images, 32x32x3 (python batches)",
                "imagenet": f"{self.imagenet_classes} classes, {self.imagenet[0]} training / {self.imagenet[1]} "
                            f"validation images per class, {self.imagenet_sizes[0]}-{self.imagenet_sizes[1] - 1} px "
                            f"JPEGs (ImageFolder)",
                "checkpoint": f"{self.checkpoint} (randomly initialised torchvision ResNet-50, stand-in for the "
                              f"released weights)"}

    def write(self) -> None:
        """Generate every dataset and the checkpoint once (a marker file names this version)."""
        marker = self.root / "synthetic.json"
        want = {"version": VERSION, **self.describe()}
        try:
            if json.loads(marker.read_text()) == want:
                return
        except (OSError, ValueError):
            pass
        self.root.mkdir(parents=True, exist_ok=True)
        write_mnist(self.root / "mnist", *self.mnist, gz=True, seed=0, noise=False)
        write_cifar(self.root / "cifar-10-batches-py", self.cifar10[0] // 5, seed=1, noise=False,
                    n_test=self.cifar10[1])
        classes = [f"n{i:08d}" for i in range(self.imagenet_classes)]  # WordNet-id-like folder names
        write_image_folder(self.root / "imagenet", classes, *self.imagenet, size=self.imagenet_sizes, seed=2)
        write_resnet50_standin(self.checkpoint)
        write_text_atomic(marker, json.dumps(want, indent=1) + "\n")


# --------------------------------------------------------------------------- the budget cuts


@dataclass
class Cuts:
    """The budget cuts of a synthetic run, per dataset: spec fields set on top of the preset (by
    dotted path), the budgets of the backdoor defences, and IBP's schedule (scaled to the steps)."""

    fields: dict = field(default_factory=lambda: {
        "default": {"train.steps": 3, "train.batch_size": 20, "data.test_subset": 40, "eval.batch_size": 100},
        # ResNet-50 at 224 px on a CPU: two steps of two images, four test images; autocast fp16
        # is about 10x slower than fp32 on CPUs (it is a GPU format), so fp32 here; one loader process.
        "imagenet": {"train.steps": 2, "train.batch_size": 2, "data.test_subset": 4, "eval.batch_size": 4,
                     "train.precision": "fp32", "data.workers": 1},
    })
    defenses: dict = field(default_factory=lambda: {
        "neural-cleanse": {"epochs": 1, "unlearn_epochs": 1, "reverse_images": 8, "batch_size": 8,
                           "unlearn_batch_size": 8},
    })
    ibp: dict = field(default_factory=lambda: {"ibp_warmup_steps": 1, "ibp_ramp_steps": 1})
    # the generated sets hold 20 (MNIST, CIFAR-10) or 4 (ImageNet) training images a class
    holdout_per_class: dict = field(default_factory=lambda: {"default": 2, "imagenet": 1})

    def for_dataset(self, dataset: str) -> dict:
        return {**self.fields.get("default", {}), **self.fields.get(dataset, {})}


CUTS = Cuts()


def _get(raw: dict, path: str, default=None):
    node = raw
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _set(raw: dict, path: str, value) -> None:
    *parents, leaf = path.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _spec_default(path: str):
    """The Spec's default of a dotted field (before the dataset's protocol fills it)."""
    return _get(Spec().to_dict(), path)


def cut(raw: dict, dataset: str, data: SyntheticData, cuts: Cuts | None = None) -> tuple[dict, dict]:
    """``raw`` (a cell's spec as plain data, every preset and table layer applied) with the
    synthetic layer on top: ``synthetic: true``, the generated data and checkpoint, the cuts.
    Returns (the new raw spec, {field: {"from": ..., "to": ...}} for every field it changed).
    ``cuts``: default :data:`CUTS`."""
    cuts = cuts or CUTS
    out = copy.deepcopy(raw)
    # the dataset first: a later layer that names it would otherwise drop the dataset's options (data.workers)
    out.setdefault("data", {})["dataset"] = dataset
    changes: dict = {}

    def change(path: str, value, old) -> None:
        if old != value:
            changes[path] = {"from": old, "to": value}

    for path, value in cuts.for_dataset(dataset).items():
        if path in ("data.workers", "data.image_size") and dataset not in ("imagenet", "imagefolder"):
            continue
        old = _get(out, path, _spec_default(path))
        if path in ("data.workers", "data.image_size") and old is None:  # the folder datasets' options
            old = getattr(FolderOptions(), path.split(".")[1])
        if path == "train.steps" and old is None:
            old = f"{_get(out, 'train.epochs', _spec_default('train.epochs'))} epochs"
        if path == "data.test_subset" and old is None:
            old = "the whole test set"
        _set(out, path, value)
        change(path, value, old)
    held = _get(out, "data.holdout_per_class")
    if held is not None:
        value = cuts.holdout_per_class.get(dataset, cuts.holdout_per_class["default"])
        _set(out, "data.holdout_per_class", value)
        change("data.holdout_per_class", value, held)
    if _get(out, "adversarial_defense.objective") == "ibp":
        for key, value in cuts.ibp.items():
            old = _get(out, f"adversarial_defense.{key}")
            if old is None:
                old = getattr(IBPOptions(), key)
            out["adversarial_defense"][key] = value
            change(f"adversarial_defense.{key}", value, old)
    for i, entry in enumerate(out.get("backdoor_defenses") or []):
        budget = cuts.defenses.get(entry.get("name"), {})
        defaults = parse_options(entry) if budget else None
        for key, value in budget.items():
            old = getattr(defaults, key)
            entry[key] = value
            change(f"backdoor_defenses[{i}].{key}", value, old)
    if dataset in ("imagenet",) and _get(out, "model.from_scratch") is False:
        old = _get(out, "model.checkpoint")
        _set(out, "model.checkpoint", str(data.checkpoint))
        change("model.checkpoint", str(data.checkpoint), old)
    out["synthetic"] = True
    change("synthetic", True, False)
    return out, changes


def record(changes: dict, data: SyntheticData) -> dict:
    """The content of a run folder's ``synthetic.json``."""
    return {"synthetic": True,
            "warning": "generated data and cut budgets: these numbers test the pipeline and are not results",
            "data": data.describe(), "cuts": changes}


def check_not_real(data_root) -> None:
    if data_root:
        raise TradeoffError("--synthetic generates its own data under --out; leave out --data-root.")
