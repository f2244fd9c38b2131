"""I-BAU and SAU: the implicit hypergradient against finite differences, the shared adversarial
examples against their definition on a brute-forced toy, and both defences end to end on real
MNIST."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tradeoff.backdoor_defenses.ibau import adversarial_loss, hypergradient
from tradeoff.backdoor_defenses.sau import SAUOptions, shared_adversarial, shared_perturbation, unlearning_loss
from tradeoff.cli import main
from tradeoff.config.build import load_spec
from tradeoff.pipeline.experiment import run_experiment

L2 = 2.0  # the |delta|^2 weight of the toy inner problem


def _tiny_problem():
    """A 4-input, 3-class linear softmax model in fp64, a batch of 6, and the inner and outer
    losses of I-BAU with a strong |delta|^2 weight (the inner problem is then strongly convex, its
    fixed point unique and the map a contraction)."""
    g = torch.Generator().manual_seed(0)
    model = nn.Linear(4, 3).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(3, 4, generator=g, dtype=torch.float64))
        model.bias.copy_(torch.randn(3, generator=g, dtype=torch.float64))
    x = torch.rand(6, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=g)

    def inner(delta):
        return adversarial_loss(model, x, y, delta, L2)

    def outer(delta):
        return F.cross_entropy(model(x + delta), y)

    return model, inner, outer, x, y


@torch.no_grad()
def _fixed_point(model, x, y, step: float, iterations: int = 120) -> torch.Tensor:
    """delta* of the toy's inner problem by its fixed-point map, with the gradient written out:
    d/ddelta [-mean CE(W(x + delta) + b, y) + L2 |delta|^2] = -W^T mean(softmax - onehot) + 2 L2 delta."""
    onehot = F.one_hot(y, 3).double()
    delta = torch.zeros(1, 4, dtype=torch.float64)
    for _ in range(iterations):
        residual = (F.softmax(model(x + delta), 1) - onehot).mean(0)
        delta = delta - step * (-(residual @ model.weight) + 2 * L2 * delta)
    return delta


def test_ibau_hypergradient_matches_finite_differences():
    """Against central finite differences in fp64 of theta -> L1(delta*(theta), theta), delta*
    solved to convergence by the fixed-point map at each perturbed theta: with enough fixed-point
    steps the hypergradient equals the total derivative (1e-6); with K = 1 it is the partial
    gradient dL1/dtheta + (dPhi/dtheta)^T dL1/ddelta, which differs (the check is not vacuous)."""
    model, inner, outer, x, y = _tiny_problem()
    step, h = 0.1, 1e-5
    delta = _fixed_point(model, x, y, step)
    params = list(model.parameters())
    analytic = hypergradient(params, delta, outer, inner, steps=60, inner_step=step)
    numeric = []
    for p in params:
        grad = torch.zeros_like(p)
        for i in range(p.numel()):
            values = []
            for sign in (1, -1):
                with torch.no_grad():
                    p.view(-1)[i] += sign * h
                values.append(float(outer(_fixed_point(model, x, y, step)).detach()))
                with torch.no_grad():
                    p.view(-1)[i] -= sign * h
            grad.view(-1)[i] = (values[0] - values[1]) / (2 * h)
        numeric.append(grad)
    for a, n in zip(analytic, numeric):
        torch.testing.assert_close(a, n, rtol=1e-6, atol=1e-7)
    one_step = hypergradient(params, delta, outer, inner, steps=1, inner_step=step)
    assert max(float((a - n).abs().max()) for a, n in zip(one_step, numeric)) > 1e-4


def test_ibau_fixed_point_steps_are_the_truncated_neumann_series():
    """Against explicit Jacobians (torch.autograd.functional.jacobian) in fp64: K steps give
    dL1/dW + B^T sum_{j<K} (A^T)^j g, A = dPhi/ddelta, B = dPhi/dW, g = dL1/ddelta (W: the weight)."""
    model, inner, outer, x, y = _tiny_problem()
    step = 0.1
    delta = _fixed_point(model, x, y, step)
    weight = model.weight.detach()

    def phi(d, w):
        loss = -F.cross_entropy(F.linear(x + d, w, model.bias), y) + L2 * d.pow(2).sum()
        (grad,) = torch.autograd.grad(loss, d, create_graph=True)
        return d - step * grad

    d = delta.clone().requires_grad_(True)
    a = torch.autograd.functional.jacobian(lambda v: phi(v, weight), d, create_graph=True).reshape(4, 4)
    b = torch.autograd.functional.jacobian(lambda w: phi(d, w), weight, create_graph=True).reshape(4, 12)
    w = weight.clone().requires_grad_(True)
    g_d, g_w = torch.autograd.grad(F.cross_entropy(F.linear(x + d, w, model.bias), y), [d, w])
    for k in (1, 3, 5):
        v = sum(torch.linalg.matrix_power(a.T, j) @ g_d.reshape(4) for j in range(k))
        expected = g_w.reshape(12) + b.T @ v
        got = hypergradient([model.weight], delta, outer, inner, steps=k, inner_step=step)[0]
        torch.testing.assert_close(got.reshape(12).detach(), expected.detach(), rtol=1e-9, atol=1e-12)


def test_sau_shared_adversarial_examples_satisfy_their_definition_by_brute_force():
    """Two linear models on 3-pixel images in [0.3, 0.7]: the shared attack (step = eps, from
    +eps) only visits the grid {-eps, 0, eps}^3, so every perturbation it returns is one of the 27
    grid points enumerated here; an image it leaves shared adversarial is, by direct evaluation,
    misclassified the same way by both models (f = f0 != y), and no image without a shared
    adversarial grid point is ever reported shared."""
    g = torch.Generator().manual_seed(3)
    model, reference = nn.Linear(3, 3), nn.Linear(3, 3)
    with torch.no_grad():
        for m in (model, reference):
            m.weight.copy_(torch.randn(3, 3, generator=g) * 6)
            m.bias.zero_()
        reference.weight.copy_(model.weight + 0.5 * torch.randn(3, 3, generator=g))
    x = 0.3 + 0.4 * torch.rand(64, 3, generator=g)
    y = model(x).argmax(1)
    opts = SAUOptions()
    eps = opts.attack.eps
    x_adv = shared_perturbation(model, reference, x, y, opts)
    delta = x_adv - x
    grid = torch.tensor(list(itertools.product((-eps, 0.0, eps), repeat=3)))
    assert torch.isclose(delta[:, None], grid[None], atol=1e-6).all(2).any(1).all()
    with torch.no_grad():
        reported = shared_adversarial(model(x_adv).argmax(1), reference(x_adv).argmax(1), y)
        every = x[:, None] + grid[None]  # (64, 27, 3)
        pred, pred_ref = model(every).argmax(2), reference(every).argmax(2)
        exists = ((pred == pred_ref) & (pred != y[:, None])).any(1)
        direct = (model(x_adv).argmax(1) == reference(x_adv).argmax(1)) & (model(x_adv).argmax(1) != y)
    assert torch.equal(reported, direct) and not (reported & ~exists).any()
    assert reported.sum() >= exists.sum() // 2 > 0  # the attack finds most of the shared examples there are


def test_sau_unlearning_loss_by_hand():
    """The minimisation loss on two images against the formula written out: one image the
    reference misclassifies (its probability of that label enters log(1 - p) twice, halved), one
    it does not (clean term only)."""
    model, reference = nn.Linear(2, 3), nn.Linear(2, 3)
    x = torch.tensor([[0.2, 0.4], [0.9, 0.1]])
    x_adv = x + 0.1
    y = reference(x).argmax(1)
    opts = SAUOptions()
    got = unlearning_loss(model, reference, x, x_adv, y, opts)
    adv_ref, clean_ref = reference(x_adv).argmax(1), reference(x).argmax(1)
    expected = F.cross_entropy(model(x), y)
    for i in range(2):
        if adv_ref[i] != y[i] and adv_ref[i] != clean_ref[i]:
            p = F.softmax(model(x_adv[i:i + 1]), 1)[0, adv_ref[i]].clamp(0.001, 0.999)
            expected = expected - torch.log(1 - p + 1e-6) / 2
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
# batches of 50: on 200 held-out images, I-BAU with batches of 25 costs this model ~28 points of accuracy (50: ~12)
@pytest.mark.parametrize("defense", [
    {"name": "i-bau", "rounds": 5, "batch_size": 50, "lr": 1e-3, "perturbed_fraction": 0.5},
    {"name": "sau", "rounds": 5, "batch_size": 25, "lr": 3e-3, "attack": {"eps": 0.2, "step_size": 0.2, "steps": 3}},
], ids=["i-bau", "sau"])
def test_unlearning_defense_removes_a_planted_sticker_backdoor_on_real_mnist(defense, mnist_root, one_thread, capsys):
    """Real MNIST, a dirty-label 3x3 sticker planted at 10%: the defence, on held-out training
    images only, brings the backdoor's success down and keeps most of the clean accuracy; it
    reports adversarial robustness before and after (the run's PGD) and its cost in seconds, and
    is listed with its options."""
    spec = load_spec(None, {
        "data": {"root": mnist_root, "train_subset": 2000, "test_subset": 300, "holdout_per_class": 20},
        "poison": {"method": "dirty-label", "fraction_of_training_set": 0.1},
        "model": {"name": "small-cnn"}, "train": {"steps": 150, "batch_size": 50, "lr": 1e-3},
        "eval": {"masking_checks": False, "saliency": False, "attack": {"eps": 0.1, "steps": 2}},
        "backdoor_defenses": [defense]})
    run = run_experiment(spec, show_progress=False)
    m, p = run.metrics, spec.backdoor_defenses[0].metric_prefix
    assert f"{p}_error" not in m, m.get(f"{p}_error")
    assert m[f"{p}_clean_data"] == "200 held-out training images"
    assert m[f"{p}_backdoor_success_rate_before"] > 0.5
    assert m[f"{p}_backdoor_success_rate_after"] < m[f"{p}_backdoor_success_rate_before"] - 0.2
    assert m[f"{p}_accuracy_after"] > 0.6 and m[f"{p}_seconds"] > 0
    assert m[f"{p}_adversarial_robustness_before"] is not None and m[f"{p}_adversarial_robustness_after"] is not None
    assert main(["list", "backdoor-defenses"]) == 0
    assert f"{defense['name']} " in capsys.readouterr().out
