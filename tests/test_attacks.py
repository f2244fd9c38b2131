"""PGD: stays inside the eps-ball and [0, 1], beats random noise of the same size."""

import dataclasses

import pytest
import torch
from torch import nn

from tradeoff.attacks.pgd import margin, perturb, project, random_start
from tradeoff.core.spec import AttackSpec


def _model_and_data(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    x = torch.rand(200, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)  # clean accuracy 100% by construction
    return model, x, y


def test_linf_pgd_stays_in_the_ball_and_the_box():
    model, x, y = _model_and_data()
    a = AttackSpec(norm="linf", eps=0.1, step_size=0.05, steps=10)
    adv = perturb(model, x, y, a)
    assert (adv - x).abs().max() <= 0.1 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1


def test_l2_pgd_stays_in_the_ball_and_the_box():
    model, x, y = _model_and_data()
    a = AttackSpec(norm="l2", eps=0.5, step_size=0.2, steps=10)
    adv = perturb(model, x, y, a)
    assert (adv - x).flatten(1).norm(dim=1).max() <= 0.5 + 1e-5
    assert adv.min() >= 0 and adv.max() <= 1


def test_pgd_beats_random_noise_of_the_same_budget():
    """Accuracy under PGD is far below accuracy under uniform noise in the same eps-ball."""
    model, x, y = _model_and_data()
    eps = 0.1
    adv = perturb(model, x, y, AttackSpec(eps=eps, step_size=0.025, steps=10))
    noisy = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    with torch.no_grad():
        acc_adv = (model(adv).argmax(1) == y).float().mean()
        acc_noise = (model(noisy).argmax(1) == y).float().mean()
    assert acc_noise > 0.8 and acc_adv < acc_noise - 0.3


def test_restarts_never_weaken_the_attack_and_the_model_mode_is_kept():
    model, x, y = _model_and_data(1)
    model.train()
    one = perturb(model, x, y, AttackSpec(eps=0.05, step_size=0.02, steps=5, restarts=1))
    torch.manual_seed(0)
    many = perturb(model, x, y, AttackSpec(eps=0.05, step_size=0.02, steps=5, restarts=4))
    assert model.training
    with torch.no_grad():
        assert (model(many).argmax(1) != y).sum() >= (model(one).argmax(1) != y).sum() - 5


def test_margin_matches_a_brute_force_loop():
    logits = torch.randn(7, 5)
    y = torch.randint(0, 5, (7,))
    expected = torch.tensor([max(logits[i, j] for j in range(5) if j != y[i]) - logits[i, y[i]] for i in range(7)])
    assert torch.allclose(margin(logits, y), expected)


def test_targeted_steps_move_towards_the_target():
    model, x, y = _model_and_data(2)
    target = (y + 1) % 10
    adv = perturb(model, x, y, AttackSpec(eps=0.3, step_size=0.05, steps=20, targeted=True), target=target)
    with torch.no_grad():
        assert (model(adv).argmax(1) == target).float().mean() > (model(x).argmax(1) == target).float().mean() + 0.3


def test_pgd_under_fp16_autocast_agrees_with_fp32():
    """fp16 evaluation does not weaken the attack: on a confident model (logits x 100, whose
    softmax gradients underflow in fp16 without the attack's gradient scaling) robust accuracy
    under fp16 autocast is within 1 point of fp32's, on 500 random images."""
    from tradeoff.core.device import autocast_for

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10))

    class Confident(nn.Module):
        def forward(self, x):
            return 100 * net(x)

    model = Confident().eval()
    x = torch.rand(500, 1, 16, 16)
    y = model(x).argmax(1)
    a = AttackSpec(eps=0.05, step_size=0.01, steps=10, random_start=False)
    robust = {}
    for precision in ("fp32", "fp16"):
        with autocast_for(torch.device("cpu"), precision):
            adv = perturb(model, x, y, a)
        with torch.no_grad():
            robust[precision] = (model(adv).argmax(1) == y).float().mean().item()
    assert robust["fp32"] < 0.5  # the attack works at this budget
    assert abs(robust["fp16"] - robust["fp32"]) <= 0.01, robust


def test_gradient_scaling_leaves_fp32_attacks_bit_identical():
    """The power-of-two scaling of the attack's gradient changes nothing in fp32: the examples
    equal those of a plain PGD loop written here (sign steps of the unscaled CE gradient)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    x, y = torch.rand(64, 1, 8, 8), torch.randint(0, 10, (64,))
    a = AttackSpec(eps=0.1, step_size=0.02, steps=5, random_start=False)
    delta = torch.zeros_like(x)
    for _ in range(5):
        delta.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(x + delta), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, delta)
        delta = ((x + (delta.detach() + 0.02 * g.sign()).clamp(-0.1, 0.1)).clamp(0, 1) - x)
    assert torch.equal(perturb(model, x, y, a), (x + delta).detach())


@pytest.mark.parametrize("first_success", [False, True])
def test_target_classes_keep_the_first_success_of_independent_targeted_runs(first_success):
    """target_classes=3 equals, image by image, the first misclassifying result of three separate
    targeted runs on the whole batch towards the 1st, 2nd and 3rd highest-scoring wrong class
    (ranked by a loop), though each later run attacks only the images the earlier ones left
    standing (without a random start, so that the runs are deterministic). With ``first_success``
    a run's own record of which images it fooled stands in for a forward pass on its result: the
    same choice as the loop's, which asks the model."""
    model, x, y = _model_and_data()
    a = AttackSpec(eps=0.05, step_size=0.05, steps=5, loss="margin", target_classes=3, step_schedule="cosine",
                   random_start=False, first_success=first_success)
    torch.manual_seed(1)
    adv = perturb(model, x, y, a)

    with torch.no_grad():
        logits = model(x)
    ranked = [[c for c in logits[i].argsort(descending=True).tolist() if c != y[i]][:3] for i in range(len(y))]
    torch.manual_seed(1)
    expected, done = None, torch.zeros(len(y), dtype=torch.bool)
    for j in range(3):
        goal = torch.tensor([r[j] for r in ranked])
        run = perturb(model, x, y, AttackSpec(eps=0.05, step_size=0.05, steps=5, loss="margin", targeted=True,
                                              step_schedule="cosine", random_start=False,
                                              first_success=first_success), target=goal)
        with torch.no_grad():
            fooled = model(run).argmax(1) != y
        if expected is None:
            expected = run.clone()
        take = fooled & ~done
        expected[take] = run[take]
        done |= fooled
    assert torch.equal(adv, expected)
    assert 0 < done.float().mean() < 1  # some images fall, some hold: the choice per image matters


def test_cosine_schedule_falls_from_step_size_to_zero():
    """Step t of T has size step_size * (1 + cos(pi t / T)) / 2; constant without the schedule."""
    from tradeoff.attacks.pgd import step_size

    a = AttackSpec(eps=0.3, step_size=0.3, steps=4, step_schedule="cosine")
    assert [round(step_size(a, t), 6) for t in range(4)] == [0.3, 0.256066, 0.15, 0.043934]
    assert step_size(AttackSpec(eps=0.3, step_size=0.3, steps=4), 3) == 0.3


def test_first_success_returns_the_first_fooling_iterate_of_the_same_trajectory():
    """Brute force over the trajectory: with a constant step, PGD-k from the same random start is
    the k-th iterate of PGD-n; with ``first_success`` each image gets the first of those iterates
    that fools the model (the last where none does), and an image is fooled exactly when some
    iterate fools it."""
    model, x, y = _model_and_data(1)
    a = AttackSpec(norm="linf", eps=0.15, step_size=0.15, steps=8)  # steps as large as eps: iterates oscillate
    iterates = []
    for k in range(a.steps + 1):
        torch.manual_seed(7)
        if k == 0:
            iterates.append(x + project(random_start(x, a), x, a))
        else:
            iterates.append(perturb(model, x, y, dataclasses.replace(a, steps=k)))
    with torch.no_grad():
        fooled = torch.stack([model(it).argmax(1) != y for it in iterates])  # (steps + 1, images)
    torch.manual_seed(7)
    kept = perturb(model, x, y, dataclasses.replace(a, first_success=True))
    first = torch.where(fooled.any(0), fooled.float().argmax(0), torch.full_like(y, a.steps))
    expected = torch.stack(iterates)[first, torch.arange(len(y))]
    assert torch.allclose(kept, expected, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(model(kept).argmax(1) != y, fooled.any(0))
    assert 0 < int(fooled.any(0).sum()) and int((fooled.any(0) & ~fooled[-1]).sum()) > 0  # the case it is for
