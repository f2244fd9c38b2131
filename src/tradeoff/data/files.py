"""Readers for the on-disk formats: IDX (MNIST, Fashion-MNIST) and CIFAR python batches.

Every reader checks what it reads against what the format and the dataset promise (magic
number, type code, dimensions, sizes, label range) and says what is wrong in one sentence
(:class:`TradeoffError`), before any training: a damaged file never reaches the model."""

from __future__ import annotations

import gzip
import io
import math
import pickle
import struct
import zlib
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from tradeoff.core.errors import TradeoffError

# IDX type code -> (name, numpy dtype); the format is big-endian.
IDX_TYPES = {0x08: ("unsigned byte", np.uint8), 0x09: ("signed byte", np.int8), 0x0B: ("short", ">i2"),
             0x0C: ("int", ">i4"), 0x0D: ("float", ">f4"), 0x0E: ("double", ">f8")}
UNSIGNED_BYTE = 0x08
MAX_IDX_DIMS = 4  # IDX allows 255; no image or label file has more than (count, height, width, channels)
GZIP_MAX_RATIO = 1032  # deflate expands at most ~1032:1, so a gzip file's size bounds what it can hold
CIFAR_IMAGE_VALUES = 3 * 32 * 32


def find_file(folder: Path, name: str) -> Path | None:
    """``name`` or ``name.gz`` inside ``folder``."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path, shape: Optional[Sequence[Optional[int]]] = None,
             type_code: Optional[int] = None) -> np.ndarray:
    """An IDX file (optionally gzipped) read by its header, which is checked first: the magic
    number (two zero bytes, a known type code, the number of dimensions), ``type_code`` and
    ``shape`` (one entry per dimension, None for any size) where given, and a size the file can
    hold; then exactly the promised bytes, neither fewer (truncated) nor more."""
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as fh:
            ndim, code, dims = _idx_header(fh, path, shape, type_code)
            dtype = np.dtype(IDX_TYPES[code][1])
            count = math.prod(dims)
            _check_capacity(path, 4 + 4 * ndim + count * dtype.itemsize, dims)
            body = fh.read(count * dtype.itemsize)
            extra = fh.read(1)
    except (OSError, EOFError, zlib.error) as e:
        raise TradeoffError(f"{path} cannot be read as an IDX file ({e.__class__.__name__}: {e}).") from None
    if len(body) < count * dtype.itemsize:
        raise TradeoffError(f"{path} is truncated: its header promises {count} values in {dims} but it holds "
                            f"only {len(body) // dtype.itemsize}.")
    if extra:
        raise TradeoffError(f"{path} is malformed: it holds more data than its header's {dims} values.")
    return np.frombuffer(body, dtype=dtype, count=count).reshape(dims)


def _idx_header(fh, path: Path, shape, type_code) -> tuple[int, int, tuple]:
    magic = fh.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in IDX_TYPES:
        raise TradeoffError(f"{path} is not an IDX file (its magic number {magic.hex() or 'is missing'} is not "
                            "00 00, a type code, a number of dimensions).")
    code, ndim = magic[2], magic[3]
    if type_code is not None and code != type_code:
        raise TradeoffError(f"{path} holds IDX type {IDX_TYPES[code][0]} (0x{code:02X}), not "
                            f"{IDX_TYPES[type_code][0]} (0x{type_code:02X}).")
    wanted = MAX_IDX_DIMS if shape is None else len(shape)
    if not 1 <= ndim <= MAX_IDX_DIMS or (shape is not None and ndim != wanted):
        raise TradeoffError(f"{path} has a bad IDX header: {ndim} dimension(s), expected "
                            f"{wanted if shape is not None else f'1 to {MAX_IDX_DIMS}'}.")
    raw = fh.read(4 * ndim)
    if len(raw) < 4 * ndim:
        raise TradeoffError(f"{path} is truncated: its header is incomplete.")
    dims = struct.unpack(f">{ndim}I", raw)
    if shape is not None and any(want is not None and got != want for got, want in zip(dims, shape)):
        expected = " x ".join("N" if w is None else str(w) for w in shape)
        raise TradeoffError(f"{path} holds {' x '.join(map(str, dims))} values, expected {expected}.")
    return ndim, code, dims


def _check_capacity(path: Path, promised: int, dims: tuple) -> None:
    """Refuse a header that promises more than the file can hold, before reading (or allocating) it."""
    size = path.stat().st_size
    limit = size * GZIP_MAX_RATIO + 1024 if path.suffix == ".gz" else size
    if promised > limit:
        raise TradeoffError(f"{path} is truncated or malformed: its header promises {dims} values, more than "
                            f"its {size} bytes can hold.")


def check_labels(labels: np.ndarray, num_classes: int, where) -> None:
    """Every label an integer in 0..num_classes-1, or one sentence naming the first that is not."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        raise TradeoffError(f"{where} holds label {labels[bad[0]].item()} at position {bad[0]} ({len(bad)} label(s) "
                            f"in all outside 0..{num_classes - 1}, the dataset's {num_classes} classes).")


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles; allow only the numpy/builtin types they contain, never code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("builtins", "bytes"),
        ("_codecs", "encode"), ("copyreg", "_reconstructor"), ("builtins", "object"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a data file")


def read_cifar_batch(path: Path, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch -> (uint8 images N x 3 x 32 x 32, int64 labels in 0..num_classes-1)."""
    try:
        with open(path, "rb") as fh:
            batch = _ArraysOnlyUnpickler(io.BytesIO(fh.read()), encoding="bytes").load()
    except RecursionError:
        raise TradeoffError(f"{path} is not a readable CIFAR-10 batch (nested too deeply).") from None
    except Exception as e:  # noqa: BLE001  a damaged pickle fails in many ways; each is a bad data file
        raise TradeoffError(f"{path} is not a readable CIFAR-10 batch ({e.__class__.__name__}).") from None
    if not isinstance(batch, dict):
        raise TradeoffError(f"{path} is not a CIFAR-10 batch (expected a dictionary).")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise TradeoffError(f"{path} is not a CIFAR-10 batch (no 'data' or 'labels').")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != CIFAR_IMAGE_VALUES:
        described = f"a {data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise TradeoffError(f"{path} is malformed: its data is {described}, not uint8 images of "
                            f"{CIFAR_IMAGE_VALUES} values (N x {CIFAR_IMAGE_VALUES}).")
    labels = _integer_labels(labels, num_classes, path)
    if len(labels) != len(data):
        raise TradeoffError(f"{path} is truncated or malformed: {len(data)} images for {len(labels)} labels.")
    return data.reshape(-1, 3, 32, 32), labels


def _integer_labels(labels, num_classes: int, path: Path) -> np.ndarray:
    """A batch's labels (a list of ints, as the originals, or an integer array) as int64, each in range."""
    if isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.dtype.kind in "iu":
        check_labels(labels, num_classes, path)
        return labels.astype(np.int64)
    if not isinstance(labels, (list, tuple)) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels):
        raise TradeoffError(f"{path} is malformed: its labels are not a list of integers.")
    outside = [(i, v) for i, v in enumerate(labels) if not 0 <= v < num_classes]
    if outside:
        raise TradeoffError(f"{path} holds label {outside[0][1]} at position {outside[0][0]} ({len(outside)} label(s) "
                            f"in all outside 0..{num_classes - 1}, the dataset's {num_classes} classes).")
    return np.array(labels, dtype=np.int64)
