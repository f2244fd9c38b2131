"""TRADES and MART adversarial training: their losses against a float64 hand computation, their
crafting passes (in the eps-ball, ascending what they should, honouring the attack options), a
tiny training run with each, their summary labels, and the beyond-training table.

The hand computations below use only Python's ``math`` on lists of floats, written from the
papers' definitions, so they share no code with the implementation.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tradeoff.adversarial_defenses import Regularized, adversarial_defense_label, make_objective
from tradeoff.adversarial_defenses.mart import mart_loss
from tradeoff.adversarial_defenses.trades import kl_divergence, trades_loss
from tradeoff.attacks.pgd import perturb, project, random_start
from tradeoff.config.build import load_spec
from tradeoff.config.resolve import resolve
from tradeoff.core.spec import TrainSpec
from tradeoff.data.batches import InMemoryBatches
from tradeoff.models import build_model
from tradeoff.sweeps import grids
from tradeoff.training.loop import train_model


def _spec(**defense):
    attack = defense.pop("attack", {})
    raw = {"data": {"dataset": "digits"}, "model": {"name": "small-cnn"},
           "adversarial_defense": {"attack": {"eps": 0.3, "step_size": 0.05, "steps": 5, **attack}, **defense}}
    return resolve(load_spec(None, raw))


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return build_model("small-cnn", (1, 16, 16), 10).eval()


def _batch(n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)


# --------------------------------------------------------------------------- the losses, by hand


def _softmax(z):
    m = max(z)
    e = [math.exp(v - m) for v in z]
    return [v / sum(e) for v in e]


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def _trades_by_hand(clean, adversarial, y, beta):
    """mean_i [-log p_y(x_i)] + beta * mean_i KL(p(x_i) || p(x'_i))."""
    n = len(y)
    ce = sum(-math.log(_softmax(z)[t]) for z, t in zip(clean, y)) / n
    kl = sum(_kl(_softmax(z), _softmax(za)) for z, za in zip(clean, adversarial)) / n
    return ce + beta * kl


def _mart_by_hand(clean, adversarial, y, lam):
    """mean_i [-log q_y - log(1 - max_{k != y} q_k) + lam * KL(p || q) * (1 - p_y)], p = p(x_i), q = p(x'_i)."""
    total = 0.0
    for z, za, t in zip(clean, adversarial, y):
        p, q = _softmax(z), _softmax(za)
        runner_up = max(q[k] for k in range(len(q)) if k != t)
        total += -math.log(q[t]) - math.log(1 - runner_up) + lam * _kl(p, q) * (1 - p[t])
    return total / len(y)


def _linear_model_and_batch():
    """A float64 linear model on 2x2 one-channel images with fixed weights, a fixed batch of 4 and
    a fixed x' (two examples classified right, two wrong), and the logits written out by hand."""
    weight = [[0.5, -1.0, 2.0, 0.3], [-0.7, 0.4, 1.1, -1.5], [1.2, 0.9, -0.6, 0.8]]
    bias = [0.1, -0.2, 0.05]
    x = [[0.1, 0.9, 0.4, 0.2], [0.8, 0.3, 0.0, 0.6], [0.5, 0.5, 0.5, 0.5], [1.0, 0.0, 0.2, 0.7]]
    x_adv = [[0.2, 0.8, 0.3, 0.3], [0.7, 0.4, 0.1, 0.5], [0.6, 0.4, 0.4, 0.6], [0.9, 0.1, 0.3, 0.6]]
    y = [2, 0, 2, 1]
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor(weight, dtype=torch.float64))
        model[1].bias.copy_(torch.tensor(bias, dtype=torch.float64))

    def logits(images):
        return [[sum(w * v for w, v in zip(row, image)) + b for row, b in zip(weight, bias)] for image in images]

    as_tensor = lambda images: torch.tensor(images, dtype=torch.float64).view(-1, 1, 2, 2)  # noqa: E731
    return model, as_tensor(x), as_tensor(x_adv), torch.tensor(y), logits(x), logits(x_adv), y


@pytest.mark.parametrize("objective, option, value, by_hand, loss_fn", [
    ("trades", "trades_beta", 6.0, _trades_by_hand, trades_loss),
    ("trades", "trades_beta", 1.5, _trades_by_hand, trades_loss),
    ("mart", "mart_lambda", 5.0, _mart_by_hand, mart_loss),
    ("mart", "mart_lambda", 0.5, _mart_by_hand, mart_loss),
])
def test_losses_equal_the_papers_definitions_by_hand(objective, option, value, by_hand, loss_fn):
    """On a fixed float64 batch with a fixed x': the factored loss on the logits, and the
    objective's loss with its crafting replaced by that x', both equal the paper's loss computed
    by hand (1e-12); the objective also returns the x' logits and x' as its inputs."""
    model, x, x_adv, y, clean_by_hand, adv_by_hand, labels = _linear_model_and_batch()
    assert [max(range(3), key=lambda k: z[k]) == t for z, t in zip(adv_by_hand, labels)] == [True, False, True, False]
    expected = by_hand(clean_by_hand, adv_by_hand, labels, value)
    ours = loss_fn(model(x), model(x_adv), y, value)
    assert ours.dtype == torch.float64 and math.isclose(ours.item(), expected, rel_tol=1e-12)

    o = make_objective(_spec(objective=objective, **{option: value}))
    o.inputs = lambda model, x, y, step: x_adv
    loss, logits, inputs = o.loss(model, x, y, 0)
    assert math.isclose(loss.item(), expected, rel_tol=1e-12)
    assert torch.equal(inputs, x_adv) and torch.equal(logits, model(x_adv))


@pytest.mark.parametrize("loss_fn", [trades_loss, mart_loss])
def test_loss_gradients_agree_with_finite_differences(loss_fn):
    """The gradients of both losses in the clean and the adversarial logits (float64, through
    every factor) agree with central finite differences (torch.autograd.gradcheck)."""
    g = torch.Generator().manual_seed(3)
    clean = torch.randn(5, 4, dtype=torch.float64, generator=g).requires_grad_(True)
    adversarial = torch.randn(5, 4, dtype=torch.float64, generator=g).requires_grad_(True)
    y = torch.tensor([0, 1, 2, 3, 1])
    assert torch.autograd.gradcheck(lambda c, a: loss_fn(c, a, y, 2.0), (clean, adversarial))


def test_mart_boosted_cross_entropy_is_stable_for_confident_logits():
    """log(1 - max_{k != y} p_k) is exact where 1 - p_k rounds to 0 in probabilities: logits
    (0, 60, 0) with y = 0 give -log p_0 - log(1 - p_1) = 60 + log(1 + 2e^-60) + 60 - log 2 +
    log(1 + 2e^-60) ~= 120 - log 2 (float32, no infinities)."""
    logits = torch.tensor([[0.0, 60.0, 0.0]])
    ours = mart_loss(logits, logits, torch.tensor([0]), 0.0)
    assert torch.isfinite(ours) and math.isclose(ours.item(), 120 - math.log(2), rel_tol=1e-6)


# --------------------------------------------------------------------------- crafting


@pytest.mark.parametrize("norm, eps, step", [("linf", 0.3, 0.05), ("l2", 1.5, 0.5)])
def test_trades_crafting_stays_in_the_ball_and_raises_the_kl(norm, eps, step):
    """TRADES' x' lies in the eps-ball and [0, 1], and for every example its KL(p(x) || p(x'))
    (evaluated in float64) is above that at its start x + 0.001 N(0, 1) (the same draw) and above
    that at a uniformly random point of the ball."""
    model, (x, y) = _tiny_model(), _batch(16)
    spec = _spec(objective="trades", attack={"norm": norm, "eps": eps, "step_size": step, "steps": 5})
    torch.manual_seed(7)
    adv = make_objective(spec).inputs(model, x, y, 0)
    torch.manual_seed(7)
    start = (x + 0.001 * torch.randn_like(x)).clamp(0, 1)
    delta = (adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-5).all() and adv.min() >= 0 and adv.max() <= 1
    a = spec.adversarial_defense.attack
    somewhere = x + project(random_start(x, a), x, a)
    model, x, start, adv, somewhere = (t.double() for t in (model, x, start, adv, somewhere))
    with torch.no_grad():
        kl = {name: kl_divergence(model(x), model(t)) for name, t in
              (("start", start), ("adv", adv), ("somewhere", somewhere))}
    assert (kl["adv"] > 100 * kl["start"]).all() and (kl["adv"] > kl["somewhere"]).all()


def test_mart_crafting_is_pgd_on_the_cross_entropy():
    """MART's x' is PGD training's x' (the same draw): in the eps-ball, and its cross-entropy is
    above that at the random start for every example."""
    model, (x, y) = _tiny_model(), _batch(16)
    spec = _spec(objective="mart")
    torch.manual_seed(7)
    adv = make_objective(spec).inputs(model, x, y, 0)
    torch.manual_seed(7)
    assert torch.equal(adv, perturb(model, x, y, spec.adversarial_defense.attack))
    torch.manual_seed(7)
    start = x + project(random_start(x, spec.adversarial_defense.attack), x, spec.adversarial_defense.attack)
    assert (adv - x).abs().max() <= 0.3 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        ce_start = F.cross_entropy(model(start), y, reduction="none")
        ce_adv = F.cross_entropy(model(adv), y, reduction="none")
    assert (ce_adv > ce_start).all()


@pytest.mark.parametrize("objective", ["trades", "mart"])
def test_crafting_honours_the_eps_ramp_and_the_attack_model_mode(objective):
    """With eps_ramp 0.5 over 100 steps, x' at step 0 lies within eps/50 and at step 60 uses more
    than that; batch-stats crafting leaves the running batch-norm statistics as they were and
    gives the loop's train mode back, while train-mode crafting moves them."""
    model, (x, y) = _tiny_model(), _batch(16)
    o = make_objective(_spec(objective=objective, eps_ramp=0.5))
    o.total_steps = 100
    assert (o.inputs(model, x, y, 0) - x).abs().max() <= 0.3 / 50 + 1e-6
    assert (o.inputs(model, x, y, 60) - x).abs().max() > 0.3 / 50 + 1e-3

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 10))
    net.train()
    for mode, should_move in (("batch-stats", False), ("train", True)):
        before = {k: b.clone() for k, b in net[1].named_buffers()}
        make_objective(_spec(objective=objective, attack_model_mode=mode)).inputs(net, x, y, 10**6)
        moved = any(not torch.equal(b, before[k]) for k, b in net[1].named_buffers())
        assert moved == should_move and net.training, mode


# --------------------------------------------------------------------------- training, names


@pytest.mark.parametrize("objective", ["trades", "mart"])
def test_a_tiny_training_run_lowers_the_loss(objective):
    """400 digits, small CNN, 4 epochs of the training loop at eps 0.1 (3 steps): the objective's
    loss on a fixed batch of 200 (same crafting draw, full eps) falls by more than 10%, and the
    last epoch's mean training loss is below the first's."""
    from tradeoff.data import load_data

    spec = _spec(objective=objective, attack={"eps": 0.1, "step_size": 0.04, "steps": 3})
    bundle = load_data(spec.data, 0)
    x, y = bundle.train.x[:400], bundle.train.y[:400]
    torch.manual_seed(0)
    model = build_model("small-cnn", bundle.shape, bundle.num_classes)
    o = make_objective(spec)

    def fixed_batch_loss():
        torch.manual_seed(1)
        with torch.no_grad():
            return o.loss(model.train(), x[:200], y[:200], 10**6)[0].item()

    before = fixed_batch_loss()
    train_spec = TrainSpec(epochs=4, batch_size=50, optimizer="adam", lr=3e-3, weight_decay=0.0)
    result = train_model(model, InMemoryBatches(x, y, 50, False, 0), o, train_spec, torch.device("cpu"),
                         log=lambda m: None, show_progress=False)
    losses = [loss for _, loss, _ in result.history]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], losses
    assert fixed_batch_loss() < 0.9 * before


@pytest.mark.parametrize("defense, label", [
    ({"objective": "trades"}, "trades"),
    ({"objective": "trades", "trades_beta": 1.0}, "trades-beta1"),
    ({"objective": "trades", "attack": {"norm": "l2", "eps": 1.0}}, "trades-l2"),
    ({"objective": "mart"}, "mart"),
    ({"objective": "mart", "mart_lambda": 6.0}, "mart-lambda6"),
    ({"objective": "trades", "lipschitz": 1e-4, "denoise": True}, "denoise+lipschitz+trades"),
    ({"objective": "mart", "lipschitz": 1e-4}, "lipschitz+mart"),
])
def test_labels_and_combinations(defense, label):
    """Each TRADES/MART setting gets its own summary label, and they combine with the
    cross-Lipschitz regulariser (which wraps them) and the denoising blocks."""
    spec = _spec(**defense)
    assert adversarial_defense_label(spec) == label
    o = make_objective(spec)
    assert isinstance(o, Regularized) == (spec.adversarial_defense.lipschitz > 0)


def test_trades_with_lipschitz_and_denoise_trains_a_step():
    """denoise + lipschitz + trades: one optimiser step on a denoising small CNN gives a finite loss
    and a gradient on every weight (the regulariser on the crafted inputs, double backprop)."""
    spec = _spec(objective="trades", lipschitz=1e-4, denoise=True, attack={"steps": 2})
    torch.manual_seed(0)
    model = build_model("small-cnn", (1, 16, 16), 10, denoise=True).train()
    x, y = _batch(8)
    loss, logits, inputs = make_objective(spec).loss(model, x, y, 0)
    loss.backward()
    assert torch.isfinite(loss) and logits.shape == (8, 10)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------- the table


@pytest.mark.parametrize("preset", ["cpu", "smoke", "paper"])
def test_beyond_training_table_expands(preset):
    """beyond-training: standard, PGD, TRADES and MART cells for MNIST and CIFAR-10 under the
    clean-label sticker on 50% of class 7, every cell a valid spec with the preset's attack
    budget shared by the three adversarial objectives."""
    grid = grids.expand(grids.load_table("beyond-training"), preset, seeds=1)
    assert not [c.error for c in grid.cells if c.error]
    for ds in ("mnist", "cifar10"):
        cells = {c.slug: c.spec for c in grid.cells if c.dataset == ds}
        assert {slug: adversarial_defense_label(s) for slug, s in cells.items()} == {
            "standard": "none", "pgd": "pgd", "trades": "trades", "mart": "mart"}
        for s in cells.values():
            assert s.poison.method == "clean-label" and s.poison.options.fraction_of_target_class == 0.5
        attack = cells["pgd"].adversarial_defense.attack
        assert all(cells[k].adversarial_defense.attack == attack for k in ("trades", "mart"))


def test_beyond_tables_are_not_in_sweep_all(capsys):
    """`tradeoff sweep all` runs the paper's tables only: beyond-training is listed by
    `sweep --list` (marked) but neither in paper_table_ids() nor in `sweep all --dry-run`."""
    from tradeoff.cli import main

    assert "beyond-training" in grids.table_ids()
    assert "beyond-training" not in grids.paper_table_ids()
    assert set(grids.table_ids()) - set(grids.paper_table_ids()) == {
        tid for tid in grids.table_ids() if grids.load_table(tid).beyond}
    assert "table1a" in grids.paper_table_ids()
    assert main(["sweep", "all", "--preset", "smoke", "--datasets", "mnist", "--dry-run", "--out", "/nonexistent"]) == 0
    out = capsys.readouterr().out
    assert "table1a mnist" in out and "beyond" not in out
