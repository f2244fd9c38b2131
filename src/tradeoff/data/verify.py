"""Image files of the streamed folder datasets, checked before training (``data.verify``) and
decoded during it.

``verify`` is an image check by name: ``headers`` (the default) opens every image and parses its
header, which finds files that are not images, empty or cut short before their pixel data;
``full`` decodes every image completely, which also finds damaged pixel data (it reads the whole
dataset once); ``off`` trusts the files. Either way an image that fails to decode during training
is caught in the loader process and reported by its path (:class:`UnreadableImage`)."""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image

from tradeoff.core.errors import TradeoffError
from tradeoff.core.registry import Registry

IMAGE_CHECKS: Registry[Callable[[str], None]] = Registry("image check", listed=False)
SCAN_THREADS = 8  # opening files is I/O-bound: threads overlap the waits


def _opened(path: str):
    """PIL's image, with its decompression-bomb warning off: past its hard limit it raises."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


@IMAGE_CHECKS.register("off")
def check_nothing(path: str) -> None:
    """Trust the files (an image that fails to decode is still named when training reads it)."""


@IMAGE_CHECKS.register("headers")
def check_header(path: str) -> None:
    """Open the image and parse its header (format, size, mode)."""
    with _opened(path) as img:
        if img.width < 1 or img.height < 1:
            raise ValueError(f"it is {img.width} x {img.height} pixels")


@IMAGE_CHECKS.register("full")
def check_decode(path: str) -> None:
    """Decode the whole image."""
    decode(path)


def decode(path: str) -> torch.Tensor:
    """An image file as a (3, H, W) uint8 RGB tensor; any failure is an :class:`UnreadableImage`."""
    try:
        with _opened(path) as img, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's warnings on odd metadata: the pixels are what matter
            array = np.asarray(img.convert("RGB"))
    except Exception as e:  # noqa: BLE001  PIL raises many types for damaged files; each means "unreadable"
        raise UnreadableImage(path, reason(e)) from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def reason(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{e.__class__.__name__}: {text}" if text else e.__class__.__name__


class UnreadableImage(TradeoffError):
    """An image file that cannot be decoded, named by its path."""

    def __init__(self, path: str, why: str):
        self.path, self.why = path, why
        super().__init__(f"{path} cannot be read as an image ({why}).")


def scan_images(base: Path, paths: np.ndarray, level: str, where: str) -> None:
    """Run the image check ``level`` on every file of a split (``paths`` relative to ``base``), in
    threads; one sentence naming the first file that fails and how many do."""
    check = IMAGE_CHECKS.get(level, where="data.verify")
    if check is check_nothing or not len(paths):
        return
    files = [os.path.join(str(base), p.decode()) for p in paths]

    def failure(path: str) -> Optional[str]:
        try:
            check(path)
        except UnreadableImage as e:
            return e.why
        except Exception as e:  # noqa: BLE001  as in decode: every failure means "unreadable"
            return reason(e)
        return None

    with ThreadPoolExecutor(SCAN_THREADS) as pool:
        failures = [(f, why) for f, why in zip(files, pool.map(failure, files, chunksize=64)) if why]
    if failures:
        first, why = failures[0]
        more = f"; {len(failures)} of its {len(files)} images fail" if len(failures) > 1 else ""
        raise TradeoffError(f"{where} holds an image that cannot be read: {first} ({why}){more} (checked with "
                            f"data.verify={level}; replace or remove them).")


def check_no_empty_classes(split_dir: Path, classes: list[str], labels: np.ndarray) -> None:
    """Every class folder present in a split holds at least one image."""
    present = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    counts = np.bincount(labels, minlength=len(classes)) if len(labels) else np.zeros(len(classes), dtype=np.int64)
    empty = [name for name in present if counts[classes.index(name)] == 0]
    if empty:
        raise TradeoffError(f"{split_dir} has class folder(s) with no images: {', '.join(empty[:5])} (expected "
                            "<class>/<image> files, e.g. .jpg or .png; remove the empty folder or fill it).")
