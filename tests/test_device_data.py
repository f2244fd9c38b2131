"""In-memory data on the training device: batches, augmentation draws, placement, loader workers
and the TF32 setting."""

import os

import pytest
import torch
import torch.nn.functional as F

from tradeoff.config.build import load_spec
from tradeoff.core import device as device_module
from tradeoff.core.device import TF32_SETTINGS, apply_tf32, loader_workers, to_device
from tradeoff.core.errors import TradeoffError
from tradeoff.data import ImageSet
from tradeoff.data.batches import epoch_permutation, global_batches


def previous_pad_crop_flip(x, pad, generator, flip):
    """The augmentation as it was before its draws moved to a CPU generator: the draws made on
    the generator's device, one gather (kept here as the reference the new path must equal)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=generator.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=generator.device)
    rows = oy[:, None] + torch.arange(h)
    cols = ox[:, None] + torch.arange(w)
    if flip:
        mirrored = torch.rand(n, generator=generator, device=generator.device) < 0.5
        cols = torch.where(mirrored[:, None], cols.flip(1), cols)
    out = padded.permute(0, 2, 3, 1)[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def previous_batches(x, y, batch_size, seed, epochs, flip):
    """Every augmented training batch of ``epochs`` epochs as the loader made them before."""
    g = torch.Generator(device=x.device).manual_seed(seed + 7919)
    out = []
    for epoch in range(epochs):
        perm = epoch_permutation(len(y), seed, epoch)
        for start, stop in global_batches(len(y), batch_size):
            idx = perm[start:stop]
            out.append((previous_pad_crop_flip(x[idx], 2, g, flip), y[idx]))
    return out


@pytest.mark.parametrize("flip", [True, False])
def test_device_batches_equal_the_previous_loader_bit_for_bit(flip):
    """Against the previous implementation (kept above): three epochs of augmented batches of an
    in-memory set, 53 images in batches of 10 (a short last batch), with and without flips, are
    torch.equal image for image and label for label, and a second pass gives them again."""
    g = torch.Generator().manual_seed(4)
    x, y = torch.rand(53, 3, 8, 8, generator=g), torch.randint(0, 10, (53,), generator=g)
    expected = previous_batches(x, y, 10, seed=3, epochs=3, flip=flip)
    for _ in range(2):
        batches = ImageSet(x, y).batches(10, seed=3, device="cpu", augment=True, flip=flip)
        got = [b for e in range(3) for b in batches.epoch(e)]
        assert len(got) == len(expected) == 18
        for (xb, yb), (xe, ye) in zip(got, expected):
            assert torch.equal(xb, xe) and torch.equal(yb, ye)


def test_augmentation_draws_come_from_a_cpu_generator_whatever_the_device():
    """The snapshot saves the augmentation generator: it is a CPU generator (the same kind, and so
    the same batches, on every device), and its state after an epoch equals that of a generator
    that made the same draws by hand (oy, ox, then the flip's uniform numbers, per batch)."""
    x, y = torch.rand(25, 1, 6, 6), torch.arange(25) % 10
    batches = ImageSet(x, y).batches(10, seed=1, device="cpu", augment=True)
    assert batches.generators()["augment"].device == torch.device("cpu")
    list(batches.epoch(0))
    by_hand = torch.Generator().manual_seed(1 + 7919)
    for n in (10, 10, 5):
        torch.randint(0, 5, (n,), generator=by_hand), torch.randint(0, 5, (n,), generator=by_hand)
        torch.rand(n, generator=by_hand)
    assert torch.equal(batches.generators()["augment"].get_state(), by_hand.get_state())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_batches_equal_the_cpu_batches():
    """On a GPU the augmented batches equal the CPU's bit for bit (the gather moves values)."""
    x, y = torch.rand(40, 3, 8, 8), torch.arange(40) % 10
    cpu = [b for e in range(2) for b in ImageSet(x, y).batches(16, 0, "cpu", augment=True).epoch(e)]
    gpu_set = ImageSet(x, y).to("cuda")
    gpu = [b for e in range(2) for b in gpu_set.batches(16, 0, "cuda", augment=True).epoch(e)]
    for (a, ya), (b, yb) in zip(cpu, gpu):
        assert torch.equal(a, b.cpu()) and torch.equal(ya, yb.cpu())


def test_the_evaluation_loader_moves_the_set_once_and_keeps_its_order():
    """``loader`` yields the same batches as slicing the set (every rank's share), on the device
    asked for; a set already there is not copied."""
    x, y = torch.rand(23, 1, 4, 4), torch.arange(23)
    images = ImageSet(x, y)
    for rank, world in ((0, 1), (1, 3)):
        got = list(images.loader(5, "cpu", rank, world))
        starts = range(rank * 5, 23, world * 5)
        assert [int(b[1][0]) for b in got] == list(starts)
        for (xb, yb), s in zip(got, starts):
            assert torch.equal(xb, x[s:s + 5]) and torch.equal(yb, y[s:s + 5])
    assert next(images.loader(5, "cpu"))[0].data_ptr() == x.data_ptr()
    assert to_device(x, "cpu") is x


def test_loader_workers_are_sized_to_the_cores_when_unset(monkeypatch):
    """Unset: the cores this process may use, shared by the machine's training processes, one
    kept for the loop, at most 8; set: as given."""
    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert loader_workers(None) == max(0, min(8, cores - 1))
    assert loader_workers(3) == 3 and loader_workers(0) == 0
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores))
    assert loader_workers(None) == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert loader_workers(None) == 8  # 16 cores a process, capped


def test_tf32_setting_sets_the_backend_flags_and_defaults_to_pytorchs():
    """``train.tf32`` defaults to PyTorch's own choice (cuDNN convolutions in TF32, matrix products
    in fp32: the flags a fresh process has); each setting sets exactly its two flags; an unknown
    one is a clear error naming the choices."""
    assert load_spec(None, {}).train.tf32 == "convolutions"
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        for name, want in (("all", (True, True)), ("off", (False, False)), ("convolutions", (True, False))):
            apply_tf32(name)
            assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == want
            assert (TF32_SETTINGS.get(name).convolutions, TF32_SETTINGS.get(name).matmul) == want
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
    with pytest.raises(TradeoffError, match="TF32"):
        load_spec(None, {"train": {"tf32": "maybe"}})


def test_bf16_on_a_cpu_without_bfloat16_kernels_is_warned_about(monkeypatch):
    """Without oneDNN's bfloat16 kernels (the profile: bf16 convolutions on the slow reference
    path, about 4x slower than fp32) a bf16 run on the CPU gets one sentence; with them, on fp32,
    or on a GPU, none."""
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: False)
    assert "slow reference path" in device_module.precision_warning(torch.device("cpu"), "bf16")
    assert device_module.precision_warning(torch.device("cpu"), "fp32") is None
    assert device_module.precision_warning(torch.device("cuda"), "bf16") is None
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: True)
    assert device_module.precision_warning(torch.device("cpu"), "bf16") is None
    monkeypatch.undo()
    assert isinstance(device_module.cpu_has_native_bf16(), bool)  # the real query answers
