"""Spatial and composite adversarial training and spatial robustness: the batched transformation
against an independent bilinear resampling (scipy's map_coordinates on coordinates computed by
hand), the grid's worst case against a brute-force Python loop over the same 775 transformations
one image at a time, the random mode's worst case never better for the attacker than the grid's
when its draws are grid points, composite examples within the PGD budget around the spatial worst
case, tiny runs of both objectives (with the regularisers) and the evaluation metric, and bad
values refused with one sentence."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import map_coordinates

from tradeoff.adversarial_defenses import OBJECTIVES, Regularized, adversarial_defense_label, make_objective
from tradeoff.attacks.spatial import grid_parameters, random_parameters, spatial_attack, transform, worst_case
from tradeoff.config.build import load_spec
from tradeoff.config.resolve import resolve
from tradeoff.core.errors import TradeoffError
from tradeoff.core.spec import SpatialSpec
from tradeoff.pipeline.experiment import run_experiment
from tradeoff.sweeps import grids
from tradeoff.sweeps.catalog import catalog


def reference_transform(image: np.ndarray, dx: float, dy: float, angle: float) -> np.ndarray:
    """One (C, H, W) image moved by (dx, dy), then rotated by ``angle`` degrees about its centre:
    output pixel (r, c), at centred coordinates p = (c + 0.5 - W/2, r + 0.5 - H/2), takes the
    input at R(-angle) p - (dx, dy), bilinear with zeros outside (scipy, order 1, grid-constant)."""
    _, h, w = image.shape
    r, c = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    px, py = c + 0.5 - w / 2, r + 0.5 - h / 2
    a = math.radians(angle)
    qx = math.cos(a) * px + math.sin(a) * py - dx
    qy = -math.sin(a) * px + math.cos(a) * py - dy
    rows, cols = qy + h / 2 - 0.5, qx + w / 2 - 0.5
    return np.stack([map_coordinates(ch, [rows, cols], order=1, mode="grid-constant", cval=0.0) for ch in image])


class InkLevels(torch.nn.Module):
    """A hand-made classifier of ten classes: the nearest of ten levels of an image's total ink,
    tilted by the ink's horizontal centre, so that rotations and translations move its scores
    smoothly (no training needed; differentiable for PGD)."""

    def __init__(self, levels: torch.Tensor):
        super().__init__()
        self.register_buffer("levels", levels)

    def forward(self, x):
        ink = x.flatten(1).sum(1, keepdim=True)
        columns = torch.arange(x.shape[-1], dtype=x.dtype, device=x.device)
        centre = (x.sum((1, 2)) * columns).sum(1, keepdim=True) / ink.clamp_min(1e-6)
        return -(ink - self.levels) ** 2 + 0.01 * centre * torch.arange(10.0, device=x.device)


@pytest.fixture(scope="module")
def digits():
    """8 real digits (scikit-learn's 8x8 images, offline) centred on a 16x16 canvas in [0, 1], the
    ink-level classifier with its levels evenly over 300 digits' range of ink, and each image's
    label its clean prediction (so that the worst case alone decides robustness)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.zeros(300, 1, 16, 16)
    x[:, 0, 4:12, 4:12] = torch.tensor(d.images[:300] / 16.0, dtype=torch.float32)
    ink = x.flatten(1).sum(1)
    model = InkLevels(torch.linspace(float(ink.min()), float(ink.max()), 10)).eval()
    xs = x[:8]
    with torch.no_grad():
        return model, xs, model(xs).argmax(1)


def test_transform_matches_an_independent_bilinear_resampling():
    """``transform`` (affine_grid + grid_sample) equals scipy's map_coordinates on hand-computed
    coordinates for translations, rotations and both, on a non-square colour image; a whole-pixel
    translation moves the content by exactly that many pixels."""
    x = torch.rand(1, 3, 7, 10, generator=torch.Generator().manual_seed(2))
    for dx, dy, angle in ((1.5, -2.0, 0.0), (0.0, 0.0, 17.0), (-2.5, 1.0, -28.0), (3.0, 3.0, 30.0)):
        ours = transform(x, torch.tensor([[dx, dy, angle]]))[0].numpy()
        np.testing.assert_allclose(ours, reference_transform(x[0].numpy(), dx, dy, angle), atol=1e-5)
    shifted = transform(x, torch.tensor([[2.0, 1.0, 0.0]]))[0]
    assert torch.allclose(shifted[:, 1:, 2:], x[0, :, :-1, :-2], atol=1e-6)
    assert torch.all(shifted[:, 0, :] == 0) and torch.all(shifted[:, :, :2] == 0)


def test_grid_worst_case_equals_a_brute_force_loop(digits):
    """The grid is the 5 x 5 x 31 = 775 transformations of np.linspace over +-3 px and +-30
    degrees (dx slowest); on 8 real images the batched worst case (chunks of images x
    transformations, one forward pass each) agrees with a Python loop over the 775, one image
    and one transformation at a time through the independent resampling: the same robust flags,
    and the chosen transformation misclassifies exactly when the loop finds one that does and
    has the loop's highest loss among those (else overall)."""
    model, x, y = digits
    s = SpatialSpec()
    expected = list(itertools.product(np.linspace(-3, 3, 5), np.linspace(-3, 3, 5), np.linspace(-30, 30, 31)))
    grid = grid_parameters(s)
    assert grid.shape == (775, 3) and np.allclose(grid.numpy(), expected, atol=1e-6)
    chosen, robust = worst_case(model, x, y, grid)
    assert 0 < int(robust.sum()) < len(x), "the fixture should give both robust and fooled images"
    for i in range(len(x)):
        losses, wrongs = [], []
        for dx, dy, angle in expected:
            moved = torch.tensor(reference_transform(x[i].numpy(), dx, dy, angle))[None].float()
            with torch.no_grad():
                logits = model(moved)
            losses.append(float(F.cross_entropy(logits, y[i:i + 1])))
            wrongs.append(bool(logits.argmax(1) != y[i]))
        pool = [j for j in range(775) if wrongs[j]] or list(range(775))
        best = max(losses[j] for j in pool)
        assert bool(robust[i]) == (not any(wrongs))
        with torch.no_grad():
            at_chosen = model(transform(x[i:i + 1], chosen[i:i + 1]))
        assert bool(at_chosen.argmax(1) != y[i]) == any(wrongs)
        assert float(F.cross_entropy(at_chosen, y[i:i + 1])) == pytest.approx(best, rel=1e-4, abs=1e-5)


def test_random_mode_never_beats_the_grid_on_grid_points(digits):
    """What is asserted: with each image's k = 10 draws taken from the grid's own points, the
    random mode's worst case is never worse than the grid's for the model: it misclassifies an
    image only if the grid does, and where both misclassify or both do not, its loss is at most
    the grid's. Continuous draws (the training mode) lie in the ranges."""
    model, x, y = digits
    s = SpatialSpec()
    grid = grid_parameters(s)
    g_chosen, g_robust = worst_case(model, x, y, grid)
    picks = torch.stack([torch.randperm(775, generator=torch.Generator().manual_seed(i))[:10] for i in range(len(x))])
    r_chosen, r_robust = worst_case(model, x, y, grid[picks])
    with torch.no_grad():
        g_loss = F.cross_entropy(model(transform(x, g_chosen)), y, reduction="none")
        r_loss = F.cross_entropy(model(transform(x, r_chosen)), y, reduction="none")
    assert torch.all(g_robust <= r_robust)
    same = g_robust == r_robust
    assert torch.all(r_loss[same] <= g_loss[same] + 1e-6)
    draws = random_parameters(SpatialSpec(max_rotation=15, max_translation=1.5), 50, 10)
    assert draws.shape == (50, 10, 3)
    assert draws[..., :2].abs().max() <= 1.5 and draws[..., 2].abs().max() <= 15


def test_composite_examples_lie_within_the_pgd_budget_of_the_spatial_worst_case(digits):
    """Composite training's inputs: L-inf PGD within eps (and [0, 1]) around each image's worst
    grid transformation (the spatial step first); spatial training's are that transformation."""
    model, x, y = digits
    raw = {"data": {"dataset": "digits"}, "model": {"name": "small-cnn"},
           "adversarial_defense": {"objective": "composite", "search": "grid", "attack": {"eps": 0.1, "steps": 3}}}
    spec = resolve(load_spec(None, raw))
    moved, _ = spatial_attack(model, x, y, SpatialSpec(), "grid")
    composite = make_objective(spec).inputs(model, x, y, step=0)
    assert (composite - moved).abs().max() <= 0.1 + 1e-6 and composite.min() >= 0 and composite.max() <= 1
    assert not torch.allclose(composite, moved)
    raw["adversarial_defense"]["objective"] = "spatial"
    assert torch.allclose(make_objective(resolve(load_spec(None, raw))).inputs(model, x, y, step=0), moved)


def test_tiny_composite_run_with_the_regularisers():
    """digits, 4 steps, with cross-Lipschitz and denoising blocks: composite training runs end to
    end and eval.spatial (a 3 x 3 x 3 grid) records spatial_robustness beside PGD robustness;
    spatial training composes with the regularisers the same way (the objective is wrapped)."""
    raw = {"data": {"dataset": "digits", "test_subset": 100}, "model": {"name": "small-cnn"},
           "train": {"steps": 4, "batch_size": 50, "device": "cpu"},
           "adversarial_defense": {"objective": "composite", "draws": 2, "lipschitz": 1e-4, "denoise": True,
                                   "attack": {"steps": 1}},
           "eval": {"attack": {"steps": 1}, "masking_checks": False, "saliency": False,
                    "spatial": {"rotations": 3, "translations": 3}}}
    run = run_experiment(resolve(load_spec(None, raw)), show_progress=False)
    assert 0 <= run.metrics["spatial_robustness"] <= run.metrics["accuracy"] + 1e-9
    assert run.metrics["adversarial_robustness"] is not None
    assert run.metrics["adversarial_defense"] == "denoise+lipschitz+composite"
    raw["adversarial_defense"]["objective"] = "spatial"
    spec = resolve(load_spec(None, raw))
    assert isinstance(make_objective(spec), Regularized)
    assert adversarial_defense_label(spec) == "denoise+lipschitz+spatial"


def test_spatial_options_are_validated_and_listed():
    """Bad values are one sentence before any step; `tradeoff list` shows both objectives, the
    spatial attack and the SIG trigger with their options; eval.spatial off keeps old digests."""
    for bad, match in (({"objective": "spatial", "search": "everything"}, "adversarial_defense.search"),
                       ({"objective": "composite", "draws": 0}, "adversarial_defense.draws"),
                       ({"objective": "spatial", "max_rotation": 200}, "adversarial_defense.max_rotation")):
        with pytest.raises(TradeoffError, match=match):
            load_spec(None, {"adversarial_defense": bad})
    with pytest.raises(TradeoffError, match="eval.spatial.rotations"):
        load_spec(None, {"eval": {"spatial": {"rotations": 0}}})
    listed = catalog()
    objectives = {i.name: i for i in listed["objectives"]}
    assert {"spatial", "composite"} <= set(objectives)
    assert {"search", "draws", "max_rotation", "max_translation"} <= {o[0] for o in objectives["spatial"].options}
    assert "spatial" in {i.name for i in listed["attacks"]} and "sig" in {i.name for i in listed["triggers"]}
    assert load_spec(None, {}).digest() == load_spec(None, {"eval": {"spatial": None}}).digest()
    assert OBJECTIVES.get("composite")


@pytest.mark.parametrize("preset", ["smoke", "cpu", "paper"])
def test_beyond_spatial_table_expands(preset):
    """beyond-spatial: per dataset and trigger (sticker, blend), standard training and L-inf PGD,
    spatial and composite training at two budgets each (the protocol's eps and half; +-30 degrees
    and 3 px and half of both), each adversarial cell's twin its trigger's standard cell; every cell
    measures spatial robustness (the full 5 x 5 x 31 grid but under smoke)."""
    grid = grids.expand(grids.load_table("beyond-spatial"), preset, seeds=1)
    assert not [c.error for c in grid.cells if c.error] and not grid.skipped
    assert "beyond-spatial" not in grids.paper_table_ids()
    for ds, eps in (("mnist", 0.3), ("cifar10", 8 / 255)):
        cells = {c.slug: c for c in grid.cells if c.dataset == ds}
        assert len(cells) == 14
        for trigger in ("sticker", "blend"):
            for slug, objective, budget, half in (("pgd", "pgd", None, False), ("pgd-half", "pgd", None, True),
                                                  ("spatial", "spatial", (30, 3), False),
                                                  ("spatial-half", "spatial", (15, 1.5), False),
                                                  ("composite", "composite", (30, 3), False),
                                                  ("composite-half", "composite", (15, 1.5), True)):
                c = cells[f"{trigger}-{slug}"]
                d = c.spec.adversarial_defense
                assert d.objective == objective and c.twin == cells[f"{trigger}-standard"].setting
                assert c.spec.trigger.kind == trigger
                if objective != "spatial":
                    assert d.attack.eps == pytest.approx(eps / 2 if half else eps)
                if budget:
                    assert (d.options.max_rotation, d.options.max_translation) == budget
            assert cells[f"{trigger}-standard"].spec.adversarial_defense.objective == "none"
        rotations = {c.spec.eval.spatial.rotations for c in cells.values()}
        assert rotations == ({3} if preset == "smoke" else {31})
