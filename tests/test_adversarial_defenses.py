"""The adversarial-defence family: FGSM / L2 PGD / fast / free training, the cross-Lipschitz
regulariser, the non-local denoising block, and their names in specs and summary labels.

Every test compares against an independent reference: a brute-force computation written out
here, or a well-known library (ART) used only in tests.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tradeoff.adversarial_defenses import REGULARIZERS, Regularized, adversarial_defense_label, make_objective
from tradeoff.adversarial_defenses.regularizers import cross_lipschitz
from tradeoff.attacks.pgd import perturb, random_wrong_labels
from tradeoff.config.build import load_spec
from tradeoff.config.resolve import resolve
from tradeoff.core.spec import AttackSpec
from tradeoff.data.batches import InMemoryBatches
from tradeoff.models import NonLocalDenoise, build_model
from tradeoff.sweeps import grids
from tradeoff.training.loop import train_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "table1a-mnist-cpu"


def _spec(**defense):
    attack = defense.pop("attack", {})
    raw = {"data": {"dataset": "digits"}, "model": {"name": "small-cnn"},
           "adversarial_defense": {"attack": {"eps": 0.3, "step_size": 0.05, "steps": 5, **attack}, **defense}}
    return resolve(load_spec(None, raw))


def _tiny_model(seed=0, classes=10, shape=(1, 16, 16)):
    torch.manual_seed(seed)
    return build_model("small-cnn", shape, classes).eval()


def _batch(n=8, seed=1, shape=(1, 16, 16)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)


# --------------------------------------------------------------------------- cross-Lipschitz


def _cross_lipschitz_bruteforce(model, x):
    """Per image, the full Jacobian by torch.autograd.functional.jacobian, then every pair l < m
    written out as a loop: 2 / (K^2 n) sum_i sum_{l<m} ||J_l - J_m||^2."""
    n = x.shape[0]
    total = 0.0
    for i in range(n):
        jac = torch.autograd.functional.jacobian(lambda v: model(v.unsqueeze(0)).squeeze(0), x[i],
                                                 create_graph=True).flatten(1)  # (K, D)
        k = jac.shape[0]
        for l in range(k):
            for m in range(l + 1, k):
                total = total + (jac[l] - jac[m]).pow(2).sum()
    return 2.0 / (k * k * n) * total


def test_cross_lipschitz_equals_bruteforce_jacobian_pairs():
    """The regulariser's value and its weight gradient (double backprop) equal a brute-force
    per-image, per-pair Jacobian computation on a small model (float64)."""
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 6 * 6, 5)).double()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ours = cross_lipschitz(model, x)
    ref = _cross_lipschitz_bruteforce(model, x)
    assert torch.allclose(ours, ref, rtol=1e-9, atol=1e-12)
    weight = model[0].weight
    (g_ours,) = torch.autograd.grad(ours, weight)
    (g_ref,) = torch.autograd.grad(ref, weight)
    assert g_ours.abs().sum() > 0
    assert torch.allclose(g_ours, g_ref, rtol=1e-8, atol=1e-12)
    assert REGULARIZERS.get("cross-lipschitz") is cross_lipschitz


def test_lipschitz_term_is_on_the_inputs_the_loss_uses():
    """With adversarial training, loss = CE(f(x_adv)) + c * R(x_adv) on the same adversarial
    inputs (recomputed independently from the returned inputs)."""
    spec = _spec(objective="pgd", lipschitz=0.5)
    objective = make_objective(spec)
    assert isinstance(objective, Regularized)
    model = _tiny_model()
    x, y = _batch()
    torch.manual_seed(3)
    loss, logits, inputs = objective.loss(model, x, y, 0)
    assert not torch.equal(inputs, x) and (inputs - x).abs().max() <= 0.3 + 1e-6
    expected = F.cross_entropy(model(inputs), y) + 0.5 * _cross_lipschitz_bruteforce(model, inputs)
    assert torch.allclose(loss, expected, rtol=1e-4)


# --------------------------------------------------------------------------- denoising block


def _naive_nonlocal(block: NonLocalDenoise, x):
    """Explicit loops: theta_i, phi_j as channel dot products, a softmax over j per position i,
    y_i = sum_j w_ij x_j, then the 1x1 conv, batch norm (eval statistics) and the residual."""
    n, c, h, w = x.shape
    th = block.theta.weight[:, :, 0, 0]
    ph = block.phi.weight[:, :, 0, 0]
    out_w = block.out.weight[:, :, 0, 0]
    bn = block.bn
    inner = th.shape[0]
    out = torch.empty_like(x)
    positions = [(r, s) for r in range(h) for s in range(w)]
    for b in range(n):
        feats = [x[b, :, r, s] for r, s in positions]
        for r, s in positions:
            xi = x[b, :, r, s]
            scores = torch.stack([(th @ xi) @ (ph @ xj) / math.sqrt(inner) for xj in feats])
            weights = torch.exp(scores - scores.max())
            weights = weights / weights.sum()
            yi = sum(wj * xj for wj, xj in zip(weights, feats))
            zi = out_w @ yi
            zi = (zi - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
            out[b, :, r, s] = xi + zi
    return out


def test_denoise_block_equals_naive_nonlocal_means():
    """The batched block equals a naive looped non-local-means computation (embedded Gaussian,
    1/sqrt(C/2) scaling, 1x1 conv, batch norm, residual); it starts as the identity."""
    torch.manual_seed(0)
    block = NonLocalDenoise(6).double()
    x = torch.randn(2, 6, 4, 3, dtype=torch.float64)
    assert torch.allclose(block.eval()(x), x)  # batch-norm scale starts at zero
    with torch.no_grad():
        block.bn.weight.normal_()
        block.bn.bias.normal_()
        block.bn.running_mean.normal_()
        block.bn.running_var.uniform_(0.5, 2.0)
    assert torch.allclose(block(x), _naive_nonlocal(block, x), rtol=1e-9, atol=1e-10)


def test_denoise_blocks_are_placed_as_the_protocol_says():
    """After each pooling in the small CNNs, after each stage of the pre-activation ResNet, after
    the last two stages of ResNet-50; none without adversarial_defense.denoise."""
    def placements(model):
        mods = list(model.features)
        return [type(mods[i - 1]).__name__ for i, m in enumerate(mods) if isinstance(m, NonLocalDenoise)]

    assert placements(build_model("small-cnn", (1, 28, 28), 10, denoise=True)) == ["MaxPool2d"] * 2
    assert placements(build_model("madry-cnn", (1, 28, 28), 10, denoise=True)) == ["MaxPool2d"] * 2
    assert placements(build_model("preact-resnet-small", (3, 32, 32), 10, denoise=True)) == ["PreActUnit"] * 3
    assert placements(build_model("resnet50", (3, 64, 64), 10, width=0.25, denoise=True)) == ["Sequential"] * 2
    assert placements(build_model("small-cnn", (1, 28, 28), 10)) == []
    wide = build_model("small-cnn", (1, 28, 28), 10, width=2.0, denoise=True)
    assert [m.theta.in_channels for m in wide.modules() if isinstance(m, NonLocalDenoise)] == [32, 64]


# --------------------------------------------------------------------------- FGSM, L2, fast, free


def test_fgsm_training_inputs_are_one_signed_gradient_step():
    """'fgsm' inputs = clip(x + eps * sign(grad_x CE)), and the targeted option =
    clip(x - eps * sign(grad_x CE(f(x), t))) for random wrong labels t (same seed)."""
    model, (x, y) = _tiny_model(), _batch()
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
    ref = (x + 0.3 * g.sign()).clamp(0, 1)
    ours = make_objective(_spec(objective="fgsm")).inputs(model, x, y, 0)
    assert torch.allclose(ours, ref, atol=1e-6)

    torch.manual_seed(5)
    targeted = make_objective(_spec(objective="fgsm", attack={"targeted": True})).inputs(model, x, y, 0)
    torch.manual_seed(5)
    t = random_wrong_labels(y, 10)
    assert (t != y).all()
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xg), t, reduction="sum"), xg)
    assert torch.allclose(targeted, (x - 0.3 * g.sign()).clamp(0, 1), atol=1e-6)


def test_fast_training_is_one_step_from_a_uniform_start():
    """'fast' inputs = clip to the eps-ball and [0, 1] of (delta0 + 1.25 eps sign(grad at x+delta0)),
    delta0 uniform in the ball (same seed)."""
    model, (x, y) = _tiny_model(), _batch()
    torch.manual_seed(11)
    ours = make_objective(_spec(objective="fast")).inputs(model, x, y, 0)
    torch.manual_seed(11)
    d0 = torch.empty_like(x).uniform_(-0.3, 0.3)
    d0 = (x + d0).clamp(0, 1) - x
    xg = (x + d0).requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
    ref = (x + (d0 + 0.375 * g.sign()).clamp(-0.3, 0.3)).clamp(0, 1)
    assert torch.allclose(ours, ref, atol=1e-6)
    attack = make_objective(_spec(objective="fast", fast_step=0.5)).attack_spec()
    assert attack.steps == 1 and attack.random_start and math.isclose(attack.step_size, 0.15)


def test_l2_pgd_stays_in_the_ball_and_in_the_image_range():
    """L2 PGD ('l2-pgd', and 'pgd' with norm l2): every ||x_adv - x||_2 <= eps, pixels in [0, 1],
    and the attack uses the budget (not a zero perturbation)."""
    model, (x, y) = _tiny_model(), _batch(32)
    for spec in (_spec(objective="l2-pgd", attack={"eps": 1.5, "step_size": 0.5}),
                 _spec(objective="pgd", attack={"norm": "l2", "eps": 1.5, "step_size": 0.5})):
        assert spec.adversarial_defense.attack.norm == "l2"
        adv = make_objective(spec).inputs(model, x, y, 0)
        norms = (adv - x).flatten(1).norm(dim=1)
        assert (norms <= 1.5 + 1e-5).all() and adv.min() >= 0 and adv.max() <= 1
        assert norms.mean() > 1.0


def test_l2_pgd_name_sets_the_l2_norm_and_defaults():
    """adversarial_defense.objective=l2-pgd resolves to an L2 attack with the dataset's L2 eps."""
    spec = resolve(load_spec(None, ["data.dataset=digits", "adversarial_defense.objective=l2-pgd"]))
    assert spec.adversarial_defense.attack.norm == "l2" and spec.adversarial_defense.attack.eps == 1.0


def test_free_training_replays_update_the_perturbation_and_split_the_budget():
    """After one replay the carried perturbation is clip(eps * sign(grad_x CE)) (the reference
    input gradient at the clean image); train_model runs epochs/replays minibatch passes."""
    model, (x, y) = _tiny_model(), _batch()
    objective = make_objective(_spec(objective="free", replays=3))
    assert objective.replays == 3
    model.train()
    loss, _, inputs = objective.loss(model, x, y, 0)
    assert torch.equal(inputs.detach(), x)  # the perturbation starts at zero
    loss.backward()
    objective.after_backward()
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xg), y), xg)
    ref = (x + 0.3 * g.sign()).clamp(0, 1) - x
    assert torch.allclose(objective.delta, ref, atol=1e-6)

    spec = _spec(objective="free", replays=3)
    xs, ys = _batch(40)
    batches = InMemoryBatches(xs, ys, batch_size=10, augment=False, seed=0)
    train_spec = dataclasses.replace(spec.train, epochs=6, optimizer="sgd", lr=0.01, weight_decay=0.0)
    result = train_model(_tiny_model(), batches, make_objective(spec), train_spec, torch.device("cpu"),
                         log=lambda m: None, show_progress=False)
    assert result.steps == 6 * 4 // 3


# --------------------------------------------------------------------------- names and labels


@pytest.mark.parametrize("overrides, label", [
    ([], "none"),
    (["adversarial_defense.objective=pgd"], "pgd"),
    (["adversarial_defense.objective=pgd", "adversarial_defense.attack.norm=l2"], "l2-pgd"),
    (["adversarial_defense.objective=l2-pgd"], "l2-pgd"),
    (["adversarial_defense.objective=fgsm"], "fgsm"),
    (["adversarial_defense.objective=fgsm", "adversarial_defense.attack.targeted=true"], "fgsm-targeted"),
    (["adversarial_defense.objective=fast"], "fast"),
    (["adversarial_defense.objective=free", "adversarial_defense.replays=8"], "free"),
    (["adversarial_defense.lipschitz=1e-4"], "lipschitz"),
    (["adversarial_defense.denoise=true"], "denoise"),
    (["adversarial_defense.denoise=true", "adversarial_defense.lipschitz=1e-4", "adversarial_defense.objective=fast"], "denoise+lipschitz+fast"),
])
def test_every_defense_is_reachable_from_set_with_its_label(overrides, label):
    """Each defence and combination is a --set away and gets its own summary label."""
    spec = resolve(load_spec(None, ["data.dataset=digits"] + overrides))
    assert adversarial_defense_label(spec) == label
    make_objective(spec)


def test_mnist_cpu_configs_load_with_their_labels():
    """The Table 1(a) CPU configs inherit from standard.yaml and carry the intended defence."""
    expected = {"lipschitz": "lipschitz", "lipschitz-pgd": "lipschitz+pgd", "denoise": "denoise",
                "denoise-pgd": "denoise+pgd", "fgsm": "fgsm", "l2-pgd": "l2-pgd", "fast": "fast", "free": "free"}
    if not (CONFIGS.parent / "mnist-cpu" / "standard.yaml").is_file():
        pytest.skip("configs/mnist-cpu/standard.yaml (the base) is not there")
    for name, label in expected.items():
        spec = resolve(load_spec(CONFIGS / f"{name}.yaml"))
        assert adversarial_defense_label(spec) == label, name
        assert spec.model.name == "small-cnn"
        assert spec.train.epochs == (30 if name == "fast" else 20)  # fast: a longer cyclic schedule


# --------------------------------------------------------------------------- independent PGD


@pytest.fixture(scope="module")
def trained_digits_model():
    from tradeoff.data import load_data

    spec = resolve(load_spec(None, {"data": {"dataset": "digits"}, "poison": {"method": "none"},
                                    "train": {"epochs": 4, "batch_size": 50}}))
    bundle = load_data(spec.data, 0)
    torch.manual_seed(0)
    model = build_model("small-cnn", bundle.shape, bundle.num_classes)
    batches = InMemoryBatches(bundle.train.x, bundle.train.y, 50, False, 0)
    train_model(model, batches, make_objective(spec), spec.train, torch.device("cpu"),
                log=lambda m: None, show_progress=False)
    return model.eval(), bundle.test.x, bundle.test.y


def _robust_accuracy(model, x, y, attack: AttackSpec) -> float:
    adv = perturb(model, x, y, attack)
    with torch.no_grad():
        return (model(adv).argmax(1) == y).float().mean().item()


def _library_accuracy(model, adv, y) -> float:
    with torch.no_grad():
        return (model(torch.as_tensor(adv)).argmax(1) == y).float().mean().item()


def _art_classifier(model, x):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                             nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")


@pytest.mark.parametrize("norm, eps, step, random_start", [
    ("linf", 0.1, 0.02, False), ("linf", 0.1, 0.02, True), ("l2", 1.0, 0.25, False), ("l2", 1.0, 0.25, True)])
def test_pgd_agrees_with_art_in_both_norms(trained_digits_model, norm, eps, step, random_start):
    """Robust accuracy under our PGD within 1 point of ART's ProjectedGradientDescent (L-inf and
    L2, with and without a random start) on a fixed model, 500 digits test images, true labels.
    With a random start each draw moves either accuracy by about 0.7 points (measured over 5
    seeds), so the means over 3 seeds are compared."""
    pytest.importorskip("art", reason="adversarial-robustness-toolbox (test extra) is not installed")
    from art.attacks.evasion import ProjectedGradientDescent

    model, x, y = trained_digits_model
    attack = ProjectedGradientDescent(_art_classifier(model, x), norm=math.inf if norm == "linf" else 2, eps=eps,
                                      eps_step=step, max_iter=10, num_random_init=int(random_start),
                                      batch_size=500, verbose=False)
    ours, theirs = [], []
    for seed in range(3 if random_start else 1):
        torch.manual_seed(seed)
        ours.append(_robust_accuracy(model, x, y, AttackSpec(norm=norm, eps=eps, step_size=step, steps=10,
                                                             random_start=random_start)))
        np.random.seed(seed)  # ART draws its random start from numpy's global generator
        theirs.append(_library_accuracy(model, attack.generate(x.numpy(), y=y.numpy()), y))
    ours, theirs = float(np.mean(ours)), float(np.mean(theirs))
    assert 0.05 < ours < 0.95  # a non-trivial operating point
    assert abs(ours - theirs) <= 0.01, (ours, theirs)


def test_pgd_and_fgsm_agree_with_art(trained_digits_model):
    """Robust accuracy under our L-inf PGD and FGSM within 1 point of ART's on a fixed model
    (ART is given the true labels; without them it attacks the model's own predictions)."""
    pytest.importorskip("art", reason="adversarial-robustness-toolbox (test extra) is not installed")
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent

    model, x, y = trained_digits_model
    clf = _art_classifier(model, x)
    pgd = ProjectedGradientDescent(clf, norm=math.inf, eps=0.1, eps_step=0.02, max_iter=10, num_random_init=0,
                                   batch_size=500, verbose=False)
    theirs = _library_accuracy(model, pgd.generate(x.numpy(), y=y.numpy()), y)
    ours = _robust_accuracy(model, x, y, AttackSpec(eps=0.1, step_size=0.02, steps=10, random_start=False))
    assert abs(ours - theirs) <= 0.01, (ours, theirs)

    fgm = FastGradientMethod(clf, norm=math.inf, eps=0.1, batch_size=500)
    theirs = _library_accuracy(model, fgm.generate(x.numpy(), y=y.numpy()), y)
    ours = _robust_accuracy(model, x, y, AttackSpec(eps=0.1, step_size=0.1, steps=1, random_start=False))
    assert abs(ours - theirs) <= 0.01, (ours, theirs)


def test_batch_stats_crafting_uses_batch_statistics_and_leaves_the_running_ones():
    """attack_model_mode batch-stats (the paper preset's, as the original's TensorFlow code): the
    crafted batch is the one crafted under batch statistics (PyTorch train mode, same random start)
    and not the one under running statistics (eval mode), and the running statistics are exactly
    as before, where train mode moves them."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 10))
    model.train()
    with torch.no_grad():  # running statistics far from any batch's
        model[1].running_mean.fill_(3.0)
        model[1].running_var.fill_(0.1)
    x, y = _batch()
    before = {k: b.clone() for k, b in model[1].named_buffers()}
    crafted = {}
    for mode in ("batch-stats", "train", "eval"):
        state = {k: b.clone() for k, b in model[1].named_buffers()}
        torch.manual_seed(5)
        crafted[mode] = make_objective(_spec(objective="pgd", attack_model_mode=mode)).inputs(model, x, y, 10**6)
        moved = any(not torch.equal(b, state[k]) for k, b in model[1].named_buffers())
        assert moved == (mode == "train"), mode
        assert model.training  # the loop's mode is given back
        for k, b in model[1].named_buffers():
            b.copy_(state[k])
    assert all(torch.equal(b, before[k]) for k, b in model[1].named_buffers())
    assert torch.equal(crafted["batch-stats"], crafted["train"])
    assert not torch.equal(crafted["batch-stats"], crafted["eval"])


def test_the_paper_preset_crafts_with_batch_statistics():
    for table in ("table1a", "table2b"):
        for cell in grids.expand(grids.load_table(table), "paper", seeds=1).cells:
            if cell.spec is not None:
                assert cell.spec.adversarial_defense.attack_model_mode == "batch-stats", cell.label
