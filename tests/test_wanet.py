"""WaNet (Nguyen & Tran 2021): the warp against a reference built with an explicit sampling grid
(bilinear interpolation written out in numpy, float64), the identity at strength 0, the field's
normalisation, the per-batch counts and labels of the poisoned and noise images, a resumed epoch
getting the same batches, the fixed-set variant, a tiny run on the built-in digits, and bad
pairings refused when the spec is validated."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tradeoff.config.build import load_spec
from tradeoff.config.resolve import resolve
from tradeoff.core.errors import TradeoffError
from tradeoff.core.spec import TriggerSpec
from tradeoff.data import ImageSet
from tradeoff.data.generated import write_image_folder
from tradeoff.pipeline.experiment import prepare, run_experiment
from tradeoff.poisoning.wanet import WarpEveryBatch, batch_counts
from tradeoff.triggers import make_trigger

CPU = torch.device("cpu")


def reference_warp(image: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Bilinear sampling written out: image (C, H, W), grid (H, W, 2) of (x, y) in [-1, 1] with
    align_corners=True (-1 and 1 the centres of the edge pixels), zeros outside the image."""
    c, h, w = image.shape
    px, py = (grid[..., 0] + 1) / 2 * (w - 1), (grid[..., 1] + 1) / 2 * (h - 1)
    out = np.zeros((c, h, w))
    for i in range(h):
        for j in range(w):
            x0, y0 = int(np.floor(px[i, j])), int(np.floor(py[i, j]))
            for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                weight = (1 - abs(px[i, j] - xx)) * (1 - abs(py[i, j] - yy))
                if 0 <= yy < h and 0 <= xx < w and weight > 0:
                    out[:, i, j] += weight * image[:, yy, xx]
    return out


def reference_grid(field: np.ndarray, h: int, w: int, strength: float) -> np.ndarray:
    """identity + strength * field / h, clamped, with the field upsampled by torch's bicubic (the
    one step not written out here: it is the original's own call)."""
    up = F.interpolate(torch.from_numpy(field), size=(h, w), mode="bicubic", align_corners=True)[0]
    up = up.permute(1, 2, 0).numpy()
    rows, cols = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    return np.clip(np.stack([cols, rows], axis=-1) + strength * up / h, -1, 1)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 12, 16)])
def test_warp_matches_an_explicit_sampling_grid_in_float64(shape):
    trigger = make_trigger(TriggerSpec(kind="wanet"), shape)
    images = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0))
    warped = trigger.apply(images).double().numpy()
    grid = reference_grid(trigger.field.double().numpy(), shape[1], shape[2], 0.5)
    assert np.abs(grid - trigger.grid_for(shape, CPU)[0].double().numpy()).max() < 1e-6
    for k in range(2):
        assert np.abs(warped[k] - reference_warp(images[k].double().numpy(), grid)).max() < 1e-5
    assert float(trigger.apply(images).min()) >= 0 and float(trigger.apply(images).max()) <= 1


def test_the_field_is_normalised_and_strength_zero_is_the_identity():
    trigger = make_trigger(TriggerSpec(kind="wanet", options=None), (1, 28, 28))
    assert trigger.field.shape == (1, 2, 4, 4) and abs(float(trigger.field.abs().mean()) - 1) < 1e-6
    flat = make_trigger(resolve(load_spec(None, {"trigger": {"kind": "wanet", "strength": 0.0}})).trigger, (1, 28, 28))
    images = torch.rand(3, 1, 28, 28)
    assert torch.allclose(flat.apply(images), images, atol=1e-5)  # float32 grid coordinates
    assert float((trigger.apply(images) - images).abs().max()) > 0.05


@pytest.mark.parametrize("n,ratio,cross,expected", [(100, 0.1, 2.0, (10, 20)), (50, 0.1, 2.0, (5, 10)),
                                                     (9, 0.1, 2.0, (0, 0)), (32, 0.25, 2.0, (8, 16)),
                                                     (10, 0.5, 2.0, (5, 5))])
def test_per_batch_counts_round_down_as_the_original(n, ratio, cross, expected):
    assert batch_counts(n, ratio, cross) == expected


def test_every_batch_gets_warped_relabelled_and_noise_images():
    """By hand: the first 10 of a batch of 100 are the fixed warp relabelled to the target, the
    next 20 keep their labels and differ from both the original and the fixed warp, the rest
    are untouched."""
    trigger = make_trigger(TriggerSpec(kind="wanet"), (1, 28, 28))
    step = WarpEveryBatch(trigger, target=7, poison_ratio=0.1, cross_ratio=2.0)
    x, y = torch.rand(100, 1, 28, 28), torch.arange(100) % 7
    xb, yb = step(x, y, torch.Generator().manual_seed(1))
    assert torch.equal(yb[:10], torch.full((10,), 7)) and torch.equal(yb[10:], y[10:])
    assert torch.allclose(xb[:10], trigger.apply(x[:10]))
    assert torch.equal(xb[30:], x[30:])
    noisy = xb[10:30]
    assert (noisy - x[10:30]).abs().amax((1, 2, 3)).min() > 0.01
    assert (noisy - trigger.apply(x[10:30])).abs().amax((1, 2, 3)).min() > 1e-4


def test_a_resumed_epoch_gets_the_same_batches():
    """An epoch started at batch 3 (as a resumed run does) yields exactly the uninterrupted
    epoch's batches from 3 on, noise included, and another epoch draws other noise."""
    trigger = make_trigger(TriggerSpec(kind="wanet"), (1, 8, 8))
    step = WarpEveryBatch(trigger, target=1, poison_ratio=0.1, cross_ratio=2.0)
    data = ImageSet(torch.rand(200, 1, 8, 8), torch.arange(200) % 4, step)
    whole = list(data.batches(40, 5, CPU).epoch(2))
    resumed = list(data.batches(40, 5, CPU).epoch(2, first=3))
    assert len(resumed) == 2
    for (a, la), (b, lb) in zip(whole[3:], resumed):
        assert torch.equal(a, b) and torch.equal(la, lb)
    other = list(data.batches(40, 5, CPU).epoch(3))
    assert not torch.equal(whole[0][0][4:12], other[0][0][4:12])


def _spec(**poison):
    raw = {"data": {"dataset": "digits"}, "model": {"name": "small-cnn"},
           "train": {"epochs": 2, "batch_size": 50, "device": "cpu"},
           "eval": {"adversarial": False, "masking_checks": False, "saliency": False},
           "poison": {"method": "wanet", "target": 0, **poison}, "trigger": {"kind": "wanet"}}
    return resolve(load_spec(None, raw))


def test_tiny_per_batch_run_on_digits_poisons_no_fixed_set(tmp_path, one_thread):
    run = run_experiment(_spec(), tmp_path, show_progress=False, run_name="wanet")
    assert run.metrics["poisoned_images"] == 0 and run.data.train.poisoning is not None
    assert 0 <= run.metrics["backdoor_success_rate"] <= 1 and run.metrics["accuracy"] > 0.5


def test_fixed_variant_warps_a_chosen_set_once():
    spec = _spec(poisoned_set="fixed")
    data = prepare(spec, CPU)
    idx = data.plan.indices
    assert len(idx) == round(0.1 * len(data.train)) and data.train.poisoning is None
    assert bool((data.train.labels[idx] == 0).all())
    clean = prepare(resolve(load_spec(None, {"data": {"dataset": "digits"}, "poison": {"method": "none"}})), CPU)
    assert torch.allclose(data.train.x[idx], data.trigger.apply(clean.train.x[idx]))


@pytest.mark.parametrize("raw,words", [
    ({"poison": {"method": "wanet"}}, "set trigger.kind to wanet"),
    ({"poison": {"method": "wanet", "poison_ratio": 0.5}, "trigger": {"kind": "wanet"}}, "at most 1"),
    ({"poison": {"method": "wanet", "poisoned_set": "sometimes"}, "trigger": {"kind": "wanet"}}, "poisoned_set"),
    ({"data": {"dataset": "imagefolder"}, "poison": {"method": "dirty-label"}, "trigger": {"kind": "wanet"}},
     "batch by batch"),
    ({"trigger": {"kind": "wanet", "k": 1}}, "trigger.k"),
])
def test_bad_wanet_specs_are_one_sentence_at_validation(raw, words):
    with pytest.raises(TradeoffError, match=words):
        load_spec(None, raw)


def test_streamed_batches_go_through_the_same_step_and_resume_the_same(tmp_path):
    """A streamed folder dataset: its batches come out of the per-batch step (the first tenth
    relabelled to the target), and an epoch started at batch 1 yields the uninterrupted epoch's
    later batches exactly."""
    write_image_folder(tmp_path / "imagefolder", ("ant", "bee", "cat"), 12, size=(40, 60), seed=0)
    raw = {"data": {"dataset": "imagefolder", "root": str(tmp_path), "image_size": 32, "workers": 0,
                    "augment": False},
           "poison": {"method": "wanet", "target": 1, "poison_ratio": 0.25, "cross_ratio": 1.0},
           "trigger": {"kind": "wanet"}, "model": {"name": "small-cnn"}}
    spec = resolve(load_spec(None, raw))
    data = prepare(spec, CPU)
    assert data.train.poisoning is not None and len(data.plan.indices) == 0
    whole = list(data.train.batches(12, 3, CPU).epoch(1))
    resumed = list(data.train.batches(12, 3, CPU).epoch(1, first=1))
    assert len(whole) == 3 and all(torch.equal(yb[:3], torch.full((3,), 1)) for _, yb in whole)
    for (a, la), (b, lb) in zip(whole[1:], resumed):
        assert torch.equal(a, b) and torch.equal(la, lb)
