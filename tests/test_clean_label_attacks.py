"""The beyond-the-paper clean-label attacks: the blended trigger against its formula computed by
hand in float64, label-consistent poisoning's perturbation (inside the budget and [0, 1], raising
the surrogate's loss, on the chosen images only, before the trigger, fixed by the seed, kept in
the run folder), tiny runs with each attack on the built-in digits, the beyond-attacks table, and
streamed data refused when the spec is validated."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tradeoff.attacks.pgd import batch_norms
from tradeoff.config.build import load_spec, section
from tradeoff.config.resolve import resolve
from tradeoff.core.errors import TradeoffError
from tradeoff.data import load_data
from tradeoff.pipeline.defend import load_trained_run
from tradeoff.pipeline.experiment import prepare, run_experiment
from tradeoff.poisoning import perturb_before_stamping, plan_poison
from tradeoff.sweeps import grids
from tradeoff.training.surrogate import mean_loss, surrogate_model
from tradeoff.triggers import CORNERS, make_trigger
from tradeoff.triggers.watermark import random_pattern

CPU = torch.device("cpu")


def _spec(poison=None, trigger=None, **rest):
    """A resolved digits spec: label-consistent (a 10-step surrogate) with a 3x3 sticker unless
    ``poison``/``trigger`` say otherwise (a key given as None is left out)."""
    poison = {"method": "label-consistent", "target": 7, "surrogate_steps": 10, **(poison or {})}
    trigger = {"kind": "sticker", "size": 3, **(trigger or {})}
    raw = {"data": {"dataset": "digits"}, "model": {"name": "small-cnn"},
           "train": {"epochs": 2, "batch_size": 50, "device": "cpu"}, "eval": {"adversarial": False},
           "poison": {k: v for k, v in poison.items() if v is not None},
           "trigger": {k: v for k, v in trigger.items() if v is not None}, **rest}
    return resolve(load_spec(None, raw))


# --------------------------------------------------------------------------- the blended trigger


def test_blend_is_the_convex_mix_computed_by_hand():
    """Training stamps: (1 - alpha) x + alpha P at every pixel, P the seeded random pattern,
    computed by hand in float64 (no clipping happens: both terms are in [0, 1]); the test-time
    stamp uses test_alpha, and without test_alpha it is the training stamp."""
    shape = (3, 8, 8)
    x = torch.rand(5, *shape, generator=torch.Generator().manual_seed(1))
    pattern = random_pattern(shape, 4).double()
    trigger = make_trigger(section("trigger", kind="blend", alpha=0.25, test_alpha=0.6, pattern_seed=4), shape)
    corners = trigger.training_corners(5, torch.Generator())
    for alpha, stamped in ((0.25, trigger.apply(x, corners)), (0.6, trigger.apply(x))):
        by_hand = (1 - alpha) * x.double() + alpha * pattern
        assert torch.allclose(stamped.double(), by_hand, atol=1e-6)
    same = make_trigger(section("trigger", kind="blend", alpha=0.25, pattern_seed=4), shape)
    assert torch.equal(same.apply(x), same.apply(x, same.training_corners(5, torch.Generator())))


def test_blend_takes_a_users_pattern_file_and_any_image_size(tmp_path):
    """pattern_file replaces the generated pattern (an H x W .npy of 0..255 values, scaled to
    [0, 1]); stamps built for another image size (streamed data stamps at native size) resize P."""
    picture = np.arange(64, dtype=np.float32).reshape(8, 8) * 4  # 0..252
    np.save(tmp_path / "p.npy", picture)
    trigger = make_trigger(section("trigger", kind="blend", alpha=0.5, pattern_file=str(tmp_path / "p.npy")), (1, 8, 8))
    x = torch.zeros(1, 1, 8, 8)
    assert torch.allclose(trigger.apply(x)[0, 0], 0.5 * torch.from_numpy(picture) / 255)
    mask, fill, add = trigger.build((1, 16, 16), CORNERS[0])
    assert mask.shape == fill.shape == (1, 16, 16) and torch.all(mask == 0.5) and torch.all(add == 0)


# --------------------------------------------------------------------------- label-consistent perturbation


@pytest.fixture(scope="module")
def digits_surrogate():
    spec = _spec(poison={"surrogate_steps": 40})  # one that has learned a little
    bundle = load_data(spec.data, spec.seed)
    model = surrogate_model(spec, bundle.train, bundle.num_classes, CPU)
    return spec, bundle, model


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 1.0)])
def test_perturbation_stays_in_the_budget_and_raises_the_surrogates_loss(digits_surrogate, norm, eps):
    """PGD before stamping: every image within eps of its original (L-inf: the largest pixel
    change; L2: the image's norm), inside [0, 1], and the surrogate's mean cross-entropy on the
    true labels higher than on the unperturbed images; the same seed gives the same images."""
    spec, bundle, model = digits_surrogate
    attack = dict(norm=norm, eps=eps, step_size=eps / 4, steps=5)
    attack = resolve(load_spec(None, {"data": {"dataset": "digits"}, "poison": {
        "method": "label-consistent", "perturbation": attack}})).poison.options.perturbation
    x, y = bundle.train.x[:40], bundle.train.y[:40]
    out = perturb_before_stamping(model, x, y, attack, seed=3, batch_size=16)
    delta = out - x
    size = delta.abs().flatten(1).amax(1) if norm == "linf" else batch_norms(delta).flatten()
    assert (size <= eps + 1e-5).all() and out.min() >= 0 and out.max() <= 1
    assert mean_loss(model, out, y) > mean_loss(model, x, y) + 0.1
    assert torch.equal(out, perturb_before_stamping(model, x, y, attack, seed=3, batch_size=16))
    assert not torch.equal(out, perturb_before_stamping(model, x, y, attack, seed=4, batch_size=16))


def test_label_consistent_perturbs_only_the_chosen_images_before_the_sticker():
    """The poisoned training set: unchosen images untouched, labels kept, the chosen ones the
    clean-label choice of the same seed; each chosen image is its perturbed version (plan.images,
    within the protocol's 0.3 of the original) with the sticker stamped over it, so the sticker's
    pixels are exactly the trigger's 1s (perturbing after stamping would move them). prepare()
    twice gives the same images bit for bit, and so does prepare() fed the images it made."""
    spec = _spec()
    clean = load_data(spec.data, spec.seed).train
    data = prepare(spec, CPU)
    plan, x = data.plan, data.train.x
    assert torch.equal(plan.indices, plan_poison(clean.targets, section("poison", target=7), data.trigger, 10,
                                                 spec.seed).indices)
    assert torch.equal(data.train.y, clean.y)
    assert torch.equal(x[~plan.mask], clean.x[~plan.mask])
    assert plan.images is not None and plan.images.shape == (len(plan.indices), 1, 16, 16)
    assert (plan.images - clean.x[plan.indices]).abs().max() <= 0.3 + 1e-6
    assert torch.equal(x[plan.indices], data.trigger.apply(plan.images, plan.corners))
    rows, cols = slice(13, 16), slice(13, 16)  # the 3x3 sticker at the bottom-right of 16x16
    assert torch.all(x[plan.indices][:, :, rows, cols] == 1)
    outside = torch.ones(16, 16, dtype=torch.bool)
    outside[rows, cols] = False
    assert torch.equal(x[plan.indices][:, :, outside], plan.images[:, :, outside])
    assert not torch.equal(x[plan.indices][:, :, outside], clean.x[plan.indices][:, :, outside])
    again = prepare(spec, CPU)
    assert torch.equal(again.plan.images, plan.images) and torch.equal(again.train.x, x)
    assert torch.equal(prepare(spec, CPU, saved_images=plan.images).train.x, x)


def test_the_surrogate_checkpoint_replaces_training(digits_surrogate, tmp_path):
    """surrogate_checkpoint: the given weights are attacked (the images equal those made with the
    trained surrogate those weights came from); weights of another model are one sentence."""
    from safetensors.torch import save_file

    spec, bundle, model = digits_surrogate
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "s.safetensors"))
    loaded = _spec(poison={"surrogate_checkpoint": str(tmp_path / "s.safetensors")})
    assert torch.equal(prepare(loaded, CPU).plan.images, prepare(spec, CPU).plan.images)
    wrong = _spec(poison={"surrogate_checkpoint": str(tmp_path / "s.safetensors")}, model={"name": "madry-cnn"})
    with pytest.raises(TradeoffError, match="does not fit model 'madry-cnn'"):
        prepare(wrong, CPU)


# --------------------------------------------------------------------------- tiny runs


def test_tiny_label_consistent_run_keeps_its_images_for_defend(tmp_path):
    """digits, 2 epochs: a label-consistent sticker run records its metrics and keeps the
    perturbed images in poison.safetensors; `tradeoff defend`'s rebuild of the folder reads them
    back and trains on the same poisoned set, bit for bit."""
    from safetensors.torch import load_file

    run = run_experiment(_spec(), tmp_path, show_progress=False, run_name="lc")
    assert run.metrics["poisoning_method"] == "label-consistent" and run.metrics["poisoned_images"] > 0
    assert 0 <= run.metrics["backdoor_success_rate"] <= 1 and run.metrics["accuracy"] > 0.5
    saved = load_file(str(tmp_path / "lc" / "poison.safetensors"))
    assert torch.equal(saved["images"], run.data.plan.images)
    rebuilt = load_trained_run(tmp_path / "lc", device="cpu")
    assert torch.equal(rebuilt.data.train.x, run.data.train.x)
    assert "read from the run folder" not in (tmp_path / "lc" / "log.txt").read_text()


def test_tiny_blended_clean_label_run():
    """digits, 2 epochs: a clean-label run with the blended trigger (alpha 0.2) trains and
    evaluates its backdoor with the blend; no perturbed images are made for clean-label."""
    run = run_experiment(_spec(poison={"method": "clean-label", "surrogate_steps": None},
                               trigger={"kind": "blend", "alpha": 0.2, "size": None}), show_progress=False)
    assert run.metrics["trigger"] == "blend" and run.data.plan.images is None
    assert 0 <= run.metrics["backdoor_success_rate"] <= 1 and run.metrics["accuracy"] > 0.5


# --------------------------------------------------------------------------- the table, validation


@pytest.mark.parametrize("preset", ["smoke", "cpu"])
def test_beyond_attacks_table_expands(preset):
    """beyond-attacks: 8 valid clean-label cells per dataset (sticker, label-consistent sticker,
    blended, label-consistent blended; each standard and adversarial, the latter naming the former
    as its twin), the label-consistent budget the protocol's (MNIST 0.3, CIFAR-10 8/255). (The
    TRADES, SIG and all-to-all cells: tests/test_sig_all_to_all.py.)"""
    grid = grids.expand(grids.load_table("beyond-attacks"), preset, seeds=1,
                        only=[f"{attack}-{defense}" for attack in ("sticker", "label-consistent", "blend",
                                                                   "label-consistent-blend")
                              for defense in ("standard", "adv-training")])
    assert not [c.error for c in grid.cells if c.error] and not grid.skipped
    for ds, eps in (("mnist", 0.3), ("cifar10", 8 / 255)):
        cells = {c.slug: c for c in grid.cells if c.dataset == ds and not c.slug.endswith("trades")
                 and c.spec.poison.method in ("clean-label", "label-consistent")}
        assert len(cells) == 8
        for slug, c in cells.items():
            s = c.spec
            assert s.poison.method == ("label-consistent" if slug.startswith("label-consistent") else "clean-label")
            assert s.trigger.kind == ("blend" if "blend" in slug else "sticker")
            assert s.adversarial_defense.objective == ("pgd" if slug.endswith("adv-training") else "none")
            if slug.endswith("adv-training"):
                assert cells[slug.replace("adv-training", "standard")].setting == c.twin
            if s.poison.method == "label-consistent":
                assert s.poison.options.perturbation.eps == pytest.approx(eps)


def test_beyond_attacks_is_not_in_sweep_all():
    """The table is marked beyond the paper, so `tradeoff sweep all` leaves it out."""
    assert grids.load_table("beyond-attacks").beyond
    assert "beyond-attacks" in grids.table_ids() and "beyond-attacks" not in grids.paper_table_ids()


def test_streamed_data_with_label_consistent_is_one_sentence_at_validation():
    """A streamed dataset with label-consistent poisoning fails when the spec is built (before any
    data is read), in one sentence naming the method and the dataset."""
    with pytest.raises(TradeoffError) as info:
        load_spec(None, {"data": {"dataset": "imagefolder"}, "poison": {"method": "label-consistent"}})
    message = str(info.value)
    assert "label-consistent" in message and "imagefolder" in message and "streamed" in message
    assert "\n" not in message and message.count(". ") == 0
    load_spec(None, {"data": {"dataset": "imagefolder"}, "trigger": {"kind": "blend"}})  # blends stream fine
