"""Damaged data, pattern and checkpoint files through the command line: each is one sentence on
stderr naming the file, exit status 2 (75 where the run can resume), no traceback, no library
warning, and no run folder that looks finished; the check happens before the first training step.

Every case starts from files in the real on-disk formats (the writers of ``tradeoff.sweeps.synthetic``,
or the real MNIST copy) with one thing changed, as a user's damaged download would be."""

from __future__ import annotations

import gzip
import json
import pickle
import shutil
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tradeoff.cli import main
from tradeoff.core.preemption import EXIT_RESUMABLE
from tradeoff.data.files import read_idx
from tradeoff.data.generated import write_cifar, write_idx, write_image_folder, write_mnist

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TINY = ["train.steps=2", "train.batch_size=10", "eval.attack.steps=1", "eval.masking_checks=false",
        "eval.saliency=false", "model.name=small-cnn"]


def run_cli(tmp_path: Path, spec_text: str, overrides=(), capsys=None, flags=()) -> tuple[int, str]:
    """``tradeoff run`` in this process; (exit status, stderr). Every warning is recorded and
    must not occur."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text)
    args = ["run", str(spec), "--out", str(tmp_path / "out"), "--quiet", "--data-root", str(tmp_path / "data"),
            *flags]
    for pair in [*TINY, *overrides]:
        args += ["--set", pair]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(args)
    assert not [str(w.message) for w in caught]
    return code, capsys.readouterr().err


def assert_one_sentence(tmp_path: Path, code: int, err: str, *fragments: str, status: int = 2) -> None:
    assert code == status, err
    assert "Traceback" not in err and "Warning" not in err
    assert err.strip().count("\n") == 0, err  # one line
    assert err.startswith("tradeoff: ") and err.strip().endswith(".")
    for fragment in fragments:
        assert fragment in err, err
    out = tmp_path / "out"
    finished = [p.parent for p in out.glob("*/metrics.json") if not (p.parent / "unfinished.json").is_file()]
    assert not finished


MNIST_SPEC = "data: {dataset: mnist}\n"


def _idx(name: str, array: np.ndarray, header: bytes | None = None) -> tuple[str, bytes]:
    raw = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return name, (header or raw) + array.astype(np.uint8).tobytes()


def _labels(n: int = 30) -> np.ndarray:
    return np.arange(n) % 10


IDX_CASES = {
    # case: (file to replace, its new bytes as a function of the original's, sentence fragments)
    "magic number": ("train-labels-idx1-ubyte", lambda raw: b"\x12\x34\x56\x78" + raw[4:],
                     ["train-labels-idx1-ubyte is not an IDX file (its magic number 12345678"]),
    "number of dimensions": ("train-labels-idx1-ubyte", lambda raw: b"\x00\x00\x08\x99" + raw[4:],
                             ["bad IDX header: 153 dimension(s), expected 1"]),
    "type code": ("train-labels-idx1-ubyte", lambda raw: b"\x00\x00\x0d\x01" + raw[4:],
                  ["holds IDX type float (0x0D), not unsigned byte (0x08)"]),
    "image size": ("train-images-idx3-ubyte", lambda raw: _idx("", np.zeros((30, 28, 27)))[1],
                   ["holds 30 x 28 x 27 values, expected N x 28 x 28"]),
    "counts differ": ("train-labels-idx1-ubyte", lambda raw: _idx("", _labels(29))[1],
                      ["holds 30 images but", "train-labels-idx1-ubyte holds 29 labels"]),
    "label range": ("t10k-labels-idx1-ubyte", lambda raw: raw[:8] + bytes([200]) * (len(raw) - 8),
                    ["t10k-labels-idx1-ubyte holds label 200 at position 0", "outside 0..9"]),
    "truncated": ("train-images-idx3-ubyte", lambda raw: raw[:1000], ["is truncated"]),
    "trailing data": ("train-images-idx3-ubyte", lambda raw: raw + b"\x00" * 7,
                      ["more data than its header"]),
    "huge header": ("train-images-idx3-ubyte", lambda raw: raw[:4] + struct.pack(">I", 2**32 - 1) + raw[8:],
                    ["header promises", "more than its"]),
}


@pytest.mark.parametrize("case", list(IDX_CASES))
def test_damaged_idx_files_stop_before_training(tmp_path, capsys, case):
    """Each IDX check against a hand-made file: magic, type code, dimensions, 28 x 28, counts,
    label range, truncation, trailing bytes, a header promising more than the file holds."""
    name, change, fragments = IDX_CASES[case]
    write_mnist(tmp_path / "data" / "mnist", gz=False)
    path = tmp_path / "data" / "mnist" / name
    path.write_bytes(change(path.read_bytes()))
    code, err = run_cli(tmp_path, MNIST_SPEC, capsys=capsys)
    assert_one_sentence(tmp_path, code, err, str(path), *fragments)
    assert not (tmp_path / "out" / "spec").exists()  # failed before any work: no folder kept


def test_a_gzipped_file_that_is_not_gzip(tmp_path, capsys):
    write_mnist(tmp_path / "data" / "mnist", gz=True)
    (tmp_path / "data" / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    code, err = run_cli(tmp_path, MNIST_SPEC, capsys=capsys)
    assert_one_sentence(tmp_path, code, err, "cannot be read as an IDX file (BadGzipFile")


def _copy_mnist(src: str, dst: Path, name: str, change) -> None:
    """The real MNIST copy with one file (decompressed) changed."""
    (dst / "mnist").mkdir(parents=True)
    for f in Path(src, "mnist").glob("*.gz"):
        if f.name.startswith(name):
            (dst / "mnist" / f.stem).write_bytes(change(gzip.decompress(f.read_bytes())))
        else:
            shutil.copy(f, dst / "mnist" / f.name)


@pytest.mark.slow
def test_the_reported_mnist_failures_are_one_sentence(tmp_path, mnist_root, capsys):
    """The issue's damaged copies of the real MNIST folder, through the installed command: a wrong
    magic number (153 dimensions) in-process, and every training label set to 200 in a process of
    its own (what a user sees: stderr, exit status, no traceback or warning)."""
    _copy_mnist(mnist_root, tmp_path / "data", "train-labels", lambda raw: b"\x00\x00\x08\x99" + raw[4:])
    code, err = run_cli(tmp_path, (CONFIGS / "mnist-cpu" / "standard.yaml").read_text(), capsys=capsys)
    assert_one_sentence(tmp_path, code, err, "train-labels-idx1-ubyte has a bad IDX header: 153 dimension(s)")
    shutil.rmtree(tmp_path / "data")
    _copy_mnist(mnist_root, tmp_path / "data", "train-labels", lambda raw: raw[:8] + bytes([200]) * (len(raw) - 8))
    proc = subprocess.run([sys.executable, "-m", "tradeoff", "run", str(CONFIGS / "mnist-cpu" / "standard.yaml"),
                           "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert_one_sentence(tmp_path, proc.returncode, proc.stderr, "train-labels-idx1-ubyte holds label 200 at position 0",
                        "5000 label(s) in all outside 0..9")


CIFAR_SPEC = "data: {dataset: cifar10}\nmodel: {from_scratch: true}\n"


def _rewrite_batch(path: Path, change) -> None:
    with open(path, "rb") as fh:
        batch = pickle.load(fh)
    change(batch)
    with open(path, "wb") as fh:
        pickle.dump(batch, fh)


@pytest.mark.parametrize("change,fragment", [
    (lambda b: b.update({b"data": b[b"data"][:, :3000]}), "not uint8 images of 3072 values"),
    (lambda b: b.update({b"data": b[b"data"].astype(np.float64)}), "a float64 array"),
    (lambda b: b.update({b"labels": [10] + b[b"labels"][1:]}), "holds label 10 at position 0"),
    (lambda b: b.update({b"labels": b[b"labels"][:-1]}), "12 images for 11 labels"),
    (lambda b: b.update({b"labels": [0.5] * 12}), "labels are not a list of integers"),
    (lambda b: b.pop(b"labels"), "no 'data' or 'labels'"),
])
def test_damaged_cifar_batches_stop_before_training(tmp_path, capsys, change, fragment):
    """CIFAR-10 batch checks: the data's dtype and shape, label range, counts and type."""
    write_cifar(tmp_path / "data" / "cifar-10-batches-py")
    path = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_3"
    _rewrite_batch(path, change)
    code, err = run_cli(tmp_path, CIFAR_SPEC, capsys=capsys)
    assert_one_sentence(tmp_path, code, err, str(path), fragment)


FOLDER_SPEC = ("data: {dataset: imagefolder, image_size: 32, workers: 0}\nmodel: {from_scratch: true}\n"
               "poison: {target: 1}\n")


def _folder(tmp_path: Path, per_class: int = 4) -> Path:
    return write_image_folder(tmp_path / "data" / "imagefolder", ("ant", "bee", "cat"), per_class, size=(40, 48))


def test_an_empty_class_folder_is_refused(tmp_path, capsys):
    root = _folder(tmp_path)
    (root / "train" / "dog").mkdir()
    code, err = run_cli(tmp_path, FOLDER_SPEC, capsys=capsys)
    assert_one_sentence(tmp_path, code, err, "class folder(s) with no images: dog")


def test_unreadable_image_headers_are_found_by_the_scan(tmp_path, capsys):
    """A text file and an empty file named .jpg: the default header scan names the first and counts both."""
    root = _folder(tmp_path)
    (root / "train" / "bee" / "img000.jpg").write_text("this is not an image")
    (root / "train" / "cat" / "img001.jpg").write_bytes(b"")
    code, err = run_cli(tmp_path, FOLDER_SPEC, capsys=capsys)
    assert_one_sentence(tmp_path, code, err, "bee/img000.jpg (UnidentifiedImageError", "2 of its 12 images fail",
                        "data.verify=headers")


def _cut_pixels(path: Path) -> None:
    """Keep the JPEG's header and a little of its pixel data: the header parses, decoding fails."""
    raw = path.read_bytes()
    path.write_bytes(raw[:raw.index(b"\xff\xda") + 40])


def test_damaged_pixel_data_is_found_by_a_full_decode(tmp_path, capsys):
    """data.verify=full decodes every image before training: pixel data cut short is named."""
    root = _folder(tmp_path)
    _cut_pixels(root / "val" / "ant" / "img000.jpg")
    code, err = run_cli(tmp_path, FOLDER_SPEC, ["data.verify=full"], capsys=capsys)
    assert_one_sentence(tmp_path, code, err, "val/ant/img000.jpg", "image file is truncated", "data.verify=full")


def test_an_image_that_fails_during_training_stops_resumably_or_is_skipped(tmp_path, capsys):
    """An image whose header passes the scan but whose pixels do not decode: training stops at a
    snapshot before the batch holding it, with one sentence naming it and exit status 75; once the
    file is replaced, --resume finishes the run. With data.skip_unreadable it is left out, logged
    and counted in metrics.json."""
    root = _folder(tmp_path)
    bad = root / "train" / "bee" / "img002.jpg"
    good = bad.read_bytes()
    _cut_pixels(bad)
    steps = ["train.steps=6", "train.batch_size=4", "snapshots.every_steps=0"]
    code, err = run_cli(tmp_path, FOLDER_SPEC, steps, capsys=capsys)
    assert_one_sentence(tmp_path, code, err, f"training image {bad} cannot be decoded", "after writing a snapshot",
                        "resume with --resume", status=EXIT_RESUMABLE)
    run_dir = tmp_path / "out" / "spec"
    assert (run_dir / "unfinished.json").is_file() and list((run_dir / "snapshots").glob("step-*"))
    bad.write_bytes(good)
    code, err = run_cli(tmp_path, FOLDER_SPEC, steps, capsys=capsys, flags=["--resume"])
    assert code == 0, err
    assert "resumed from the snapshot at step" in (run_dir / "log.txt").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert not (run_dir / "unfinished.json").exists() and metrics["train_steps"] == 6
    assert "unreadable_images_skipped" not in metrics

    _cut_pixels(bad)
    code, err = run_cli(tmp_path, FOLDER_SPEC, [*steps, "data.skip_unreadable=true"], capsys=capsys)
    assert code == 0, err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["unreadable_images_skipped"] == 1 and metrics["train_steps"] == 6
    assert f"skipped unreadable training image {bad}" in (run_dir / "log.txt").read_text()


@pytest.mark.parametrize("name,content,fragment", [
    ("p.npy", lambda p: np.save(p, np.full((4, 4), np.nan)), "finite values in [0, 1] or [0, 255]"),
    ("p.npy", lambda p: np.save(p, np.zeros((0, 4))), "must be an image"),
    ("p.npy", lambda p: np.save(p, np.zeros((5, 4, 4))), "must have 1 or 3 channels"),
    ("p.npy", lambda p: np.save(p, np.array(["a", "b"])), "must hold numbers"),
    ("p.npy", lambda p: p.write_bytes(b"\x93NUMPY garbage"), "cannot be read as a .npy array"),
    ("p.png", lambda p: p.write_text("not a picture"), "cannot be read as an image (UnidentifiedImageError)"),
])
def test_damaged_pattern_files_stop_before_training(tmp_path, capsys, name, content, fragment):
    write_mnist(tmp_path / "data" / "mnist")
    path = tmp_path / name
    content(path)
    code, err = run_cli(tmp_path, MNIST_SPEC, ["trigger.kind=watermark", f"trigger.pattern_file={path}"],
                        capsys=capsys)
    assert_one_sentence(tmp_path, code, err, f"trigger.pattern_file {str(path)!r}", fragment)


class _RunsCode:
    def __reduce__(self):
        return (shutil.rmtree, ("/nonexistent-tradeoff-check",))


def _pickle_that_runs_code(path: Path) -> None:
    with open(path, "wb") as fh:
        pickle.dump({"conv.weight": _RunsCode()}, fh, protocol=4)


@pytest.mark.parametrize("name,content,fragment", [
    ("evil.pt", _pickle_that_runs_code, "cannot be loaded safely (UnpicklingError"),
    ("numbers.pt", lambda p: torch.save({"conv.weight": 3}, p), "not a state dict of tensors"),
    ("cut.safetensors", lambda p: (save_file({"w": torch.zeros(10)}, str(p)),
                                   p.write_bytes(p.read_bytes()[:-8])), "cannot be loaded safely (SafetensorError"),
    ("empty.safetensors", lambda p: p.write_bytes(b""), "cannot be loaded safely"),
])
def test_unsafe_or_damaged_checkpoints_are_refused_without_warnings(tmp_path, capsys, name, content, fragment):
    """A pickle that would run code is refused by the safe loader (and torch's pickle-protocol
    warning is not printed); damaged or non-tensor checkpoints are one sentence too."""
    write_mnist(tmp_path / "data" / "mnist")
    path = tmp_path / name
    content(path)
    code, err = run_cli(tmp_path, MNIST_SPEC, [f"model.checkpoint={path}"], capsys=capsys)
    assert_one_sentence(tmp_path, code, err, f"checkpoint {str(path)!r}", fragment)


def test_write_idx_round_trips(tmp_path):
    """The reader accepts what the format's writer writes, for every shape the datasets use."""
    for shape in [(7,), (3, 28, 28), (2, 5, 4, 3)]:
        array = np.arange(int(np.prod(shape))).reshape(shape) % 256
        write_idx(tmp_path / "f", array, gz=False)
        assert np.array_equal(read_idx(tmp_path / "f"), array)
