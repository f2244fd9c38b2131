"""Dataset loaders on files generated in the real on-disk formats."""

import pickle

import numpy as np
import pytest
import torch

from tradeoff.core.errors import TradeoffError
from tradeoff.core.spec import DataSpec
from tradeoff.data import load_data, pad_crop_flip
from tradeoff.data.generated import write_cifar, write_mnist
from tradeoff.data.imageset import ImageSet


def make_mnist(folder, n_train=30, n_test=20, gz=True):
    return write_mnist(folder, n_train, n_test, gz=gz)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_are_read_by_their_headers(tmp_path, gz):
    arrays = make_mnist(tmp_path / "mnist", gz=gz)
    bundle = load_data(DataSpec(dataset="mnist", root=str(tmp_path)), download=False)
    assert bundle.train.x.shape == (30, 1, 28, 28) and bundle.test.x.shape == (20, 1, 28, 28)
    assert torch.allclose(bundle.train.x[3, 0] * 255, torch.tensor(arrays["train-images-idx3-ubyte"][3], dtype=torch.float32))
    assert bundle.train.y.tolist() == (np.arange(30) % 10).tolist()


def test_fashion_mnist_uses_its_own_folder(tmp_path):
    make_mnist(tmp_path / "fashion-mnist")
    bundle = load_data(DataSpec(dataset="fashion-mnist", root=str(tmp_path)), download=False)
    assert len(bundle.train) == 30


def test_missing_and_truncated_files_are_clear_errors(tmp_path):
    with pytest.raises(TradeoffError, match="MNIST not found: expected train-images-idx3-ubyte"):
        load_data(DataSpec(dataset="mnist", root=str(tmp_path)), download=False)
    make_mnist(tmp_path / "mnist", gz=False)
    path = tmp_path / "mnist" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(TradeoffError, match="truncated"):
        load_data(DataSpec(dataset="mnist", root=str(tmp_path)), download=False)


def test_cifar_python_batches(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    bundle = load_data(DataSpec(dataset="cifar10", root=str(tmp_path)), download=False)
    assert bundle.train.x.shape == (60, 3, 32, 32) and bundle.test.x.shape == (12, 3, 32, 32)
    assert bundle.shape == (3, 32, 32) and 0 <= bundle.train.x.min() and bundle.train.x.max() <= 1


def test_cifar_loader_refuses_pickles_that_run_code(tmp_path):
    """A data file that would call a function when unpickled is rejected, not executed."""
    write_cifar(tmp_path / "cifar-10-batches-py")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        pickle.dump({b"data": Evil(), b"labels": []}, fh)
    with pytest.raises(TradeoffError, match="not a readable CIFAR-10 batch"):
        load_data(DataSpec(dataset="cifar10", root=str(tmp_path)), download=False)


def test_digits_ship_with_scikit_learn_and_subsets_are_seeded():
    bundle = load_data(DataSpec(dataset="digits", train_subset=100, test_subset=50), seed=3)
    assert bundle.train.x.shape == (100, 1, 16, 16) and len(bundle.test) == 50
    again = load_data(DataSpec(dataset="digits", train_subset=100, test_subset=50), seed=3)
    assert torch.equal(bundle.train.y, again.train.y)


def test_pad_crop_flip_matches_a_per_image_reference():
    """The batched gather equals cropping each zero-padded image at its offset and flipping it."""
    x = torch.rand(16, 3, 8, 8)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    out = pad_crop_flip(x, 2, g1)
    oy = torch.randint(0, 5, (16,), generator=g2)
    ox = torch.randint(0, 5, (16,), generator=g2)
    flip = torch.rand(16, generator=g2) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(16):
        ref = padded[i, :, oy[i]:oy[i] + 8, ox[i]:ox[i] + 8]
        ref = ref.flip(2) if flip[i] else ref
        assert torch.equal(out[i], ref)


def test_pad_crop_without_flip_only_shifts():
    """flip=False (data.augment_flip: false, for digits): each image is the zero-padded one cropped
    at its offset and never mirrored (a per-image reference), and a training batch of an
    ImageSet with augmentation so built is made of such crops."""
    x = torch.rand(16, 1, 8, 8)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    out = pad_crop_flip(x, 2, g1, flip=False)
    oy = torch.randint(0, 5, (16,), generator=g2)
    ox = torch.randint(0, 5, (16,), generator=g2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(16):
        assert torch.equal(out[i], padded[i, :, oy[i]:oy[i] + 8, ox[i]:ox[i] + 8])

    # an asymmetric image: a 1 in the top-left pixel; shifted by at most 2, never mirrored to the right half
    images = torch.zeros(64, 1, 8, 8)
    images[:, 0, 0, 0] = 1
    batch, _ = next(iter(ImageSet(images, torch.zeros(64, dtype=torch.long)).batches(
        64, seed=0, device="cpu", augment=True, flip=False).epoch(0)))
    ones = batch[:, 0].nonzero()
    assert ones[:, 1].max() <= 2 and ones[:, 2].max() <= 2 and len(ones) > 0
    mirrored, _ = next(iter(ImageSet(images, torch.zeros(64, dtype=torch.long)).batches(
        64, seed=0, device="cpu", augment=True).epoch(0)))
    assert mirrored[:, 0, :, 5:].sum() > 0  # with the default flip some land on the right
