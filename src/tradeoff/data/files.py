"""Readers for the on-disk formats: IDX (MNIST, Fashion-MNIST) and CIFAR python batches."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np

from tradeoff.errors import TradeoffError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def find_file(folder: Path, name: str) -> Path | None:
    """``name`` or ``name.gz`` inside ``folder``."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) by its header; refuse a truncated one."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise TradeoffError(f"{path} cannot be read as an IDX file ({e.__class__.__name__}: {e}).") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise TradeoffError(f"{path} is not an IDX file (bad header).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise TradeoffError(f"{path} is truncated: its header is incomplete.")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header < expected:
        raise TradeoffError(
            f"{path} is truncated: its header promises {dims} values but it holds only "
            f"{(len(raw) - header) // dtype.itemsize}."
        )
    return np.frombuffer(raw, dtype=dtype, count=int(np.prod(dims)), offset=header).reshape(dims)


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


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch -> (uint8 images N x 3 x 32 x 32, int64 labels)."""
    try:
        with open(path, "rb") as fh:
            batch = _ArraysOnlyUnpickler(io.BytesIO(fh.read()), encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
        raise TradeoffError(f"{path} is not a readable CIFAR-10 batch ({e}).") from None
    if not isinstance(batch, dict):
        raise TradeoffError(f"{path} is not a CIFAR-10 batch (expected a dictionary).")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise TradeoffError(f"{path} is not a CIFAR-10 batch (no 'data' or 'labels').")
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != len(labels):
        raise TradeoffError(f"{path} is truncated or malformed: data has shape {data.shape} for {len(labels)} labels.")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)
