"""Interval bound propagation (tradeoff.models.bounds): soundness, exactness and agreement with an
independent IBP implementation (the Adversarial Robustness Toolbox's interval domain)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tradeoff.core.errors import TradeoffError
from tradeoff.models import FeatureClassifier, build_model
from tradeoff.models.bounds import (
    certified,
    input_box,
    interval_forward,
    logit_bounds,
    margin_bounds,
    recording_relu_inputs,
)
from tradeoff.models.resnet import Normalize, PerImageStandardize

EPS = 0.05


def random_net(seed: int) -> FeatureClassifier:
    """A small network using every layer type the bounds support (ends in ReLU, like the IBP nets)."""
    torch.manual_seed(seed)
    features = nn.Sequential(
        Normalize((0.3,), (0.7,)),
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1, padding_mode="replicate"), nn.LeakyReLU(0.1),
        nn.MaxPool2d(2), nn.Conv2d(6, 6, 2), nn.Tanh(), nn.AvgPool2d(1),
        nn.Sequential(nn.Flatten(), nn.Identity()), nn.Linear(6, 16), nn.Sigmoid(), nn.Linear(16, 12), nn.ReLU(),
    )
    return FeatureClassifier(features, nn.Linear(12, 5)).eval()


def margins(model, x, y):
    z = model(x)
    return z - z.gather(1, y[:, None])


def data(seed: int, n: int = 6):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 5, (n,), generator=g)


@pytest.mark.parametrize("seed", range(2))
def test_sampled_points_never_exceed_the_bounds(seed):
    """Brute force: margins z_j - z_y at 1,000 random points and all-corner sign patterns of the
    clipped eps-box lie inside the computed margin bounds, and logits inside the logit bounds."""
    model, (x, y) = random_net(seed), data(seed)
    with torch.no_grad():
        lo, hi = margin_bounds(model, x, y, EPS)
        zlo, zhi = logit_bounds(model, x, EPS)
        box_lo, box_hi = input_box(x, EPS)
        for _ in range(10):
            u = torch.rand(100, *x.shape)
            u = torch.where(torch.rand_like(u) < 0.5, u.round(), u)  # half of the pixels at a corner
            pts = (box_lo + u * (box_hi - box_lo)).flatten(0, 1)
            ys = y.repeat(100)
            m = margins(model, pts, ys).view(100, *lo.shape)
            z = model(pts).view(100, *zlo.shape)
            assert (m <= hi + 1e-5).all() and (m >= lo - 1e-5).all()
            assert (z <= zhi + 1e-5).all() and (z >= zlo - 1e-5).all()


@pytest.mark.parametrize("seed", range(2))
def test_pgd_maximising_each_margin_stays_below_the_bound(seed):
    """Gradient ascent on every margin z_j - z_y separately (60 sign steps inside the clipped
    eps-box) never exceeds the upper bound; descent never goes below the lower bound."""
    model, (x, y) = random_net(seed), data(seed)
    k = 5
    with torch.no_grad():
        lo, hi = margin_bounds(model, x, y, EPS)
    box_lo, box_hi = input_box(x, EPS)
    xs, ys = x.repeat(k, 1, 1, 1), y.repeat(k)
    js = torch.arange(k).repeat_interleave(len(y))
    for sign in (1.0, -1.0):
        delta = torch.empty_like(xs).uniform_(-EPS, EPS)
        for _ in range(60):
            delta.requires_grad_(True)
            pt = torch.max(torch.min(xs + delta, box_hi.repeat(k, 1, 1, 1)), box_lo.repeat(k, 1, 1, 1))
            m = margins(model, pt, ys).gather(1, js[:, None]).sum()
            (g,) = torch.autograd.grad(sign * m, delta)
            delta = (delta.detach() + 0.008 * g.sign()).clamp(-EPS, EPS)
        with torch.no_grad():
            pt = torch.max(torch.min(xs + delta, box_hi.repeat(k, 1, 1, 1)), box_lo.repeat(k, 1, 1, 1))
            reached = margins(model, pt, ys).gather(1, js[:, None]).view(k, -1).T  # (n, k)
        if sign > 0:
            assert (reached <= hi + 1e-5).all()
        else:
            assert (reached >= lo - 1e-5).all()


def test_single_linear_layer_bounds_are_exact():
    """For a linear network the margin bound is attained: the box corner chosen by the sign of
    W_j - W_y (and the opposite corner) gives exactly the upper (lower) bound of margin j."""
    torch.manual_seed(0)
    model = FeatureClassifier(nn.Sequential(nn.Flatten()), nn.Linear(64, 5)).double().eval()
    x, y = data(1)
    x = x.double()
    lo, hi = margin_bounds(model, x, y, EPS)
    box_lo, box_hi = (b.flatten(1) for b in input_box(x, EPS))
    w = model.classifier.weight
    for j in range(5):
        cw = w[j] - w[y]  # (n, 64)
        top = torch.where(cw > 0, box_hi, box_lo).view_as(x)
        bottom = torch.where(cw > 0, box_lo, box_hi).view_as(x)
        torch.testing.assert_close(margins(model, top, y)[:, j], hi[:, j])
        torch.testing.assert_close(margins(model, bottom, y)[:, j], lo[:, j])


@pytest.mark.parametrize("name", ["ibp-small", "ibp-large"])
def test_bounds_shrink_to_the_nominal_output(name):
    """As eps -> 0 the bounds close in on the nominal margins (equal at eps = 0, within O(eps)
    after), and they are nested: a smaller box never gives wider bounds."""
    torch.manual_seed(0)
    model = build_model(name, (1, 28, 28), 10).double().eval()
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    y = torch.arange(4)
    nominal = margins(model, x, y)
    with torch.no_grad():
        lo0, hi0 = margin_bounds(model, x, y, 0.0)
        torch.testing.assert_close(lo0, nominal)
        torch.testing.assert_close(hi0, nominal)
        widths = []
        for eps in (1e-2, 1e-4, 1e-6, 1e-8):
            lo, hi = margin_bounds(model, x, y, eps)
            assert (lo <= nominal + 1e-12).all() and (hi >= nominal - 1e-12).all()
            widths.append((hi - lo).max().item())
        assert all(a >= b for a, b in zip(widths, widths[1:]))
        assert widths[-1] <= 1e-5 * widths[0]  # linear in eps near 0: 1e-8 / 1e-2 = 1e-6


def test_folding_the_last_layer_is_tighter_than_logit_differences():
    """The folded margin bound is never looser than the naive one from logit intervals
    (upper(z_j) - lower(z_y)), and is strictly tighter somewhere."""
    model, (x, y) = random_net(0), data(0)
    with torch.no_grad():
        lo, hi = margin_bounds(model, x, y, EPS)
        zlo, zhi = logit_bounds(model, x, EPS)
    naive = zhi - zlo.gather(1, y[:, None])
    naive = naive.masked_fill(F.one_hot(y, 5).bool(), 0.0)
    assert (hi <= naive + 1e-6).all()
    assert (hi < naive - 1e-4).any()


def test_matches_the_adversarial_robustness_toolbox_interval_domain():
    """Logit intervals equal those of ART's PyTorchIBPClassifier (an independent IBP code that
    rebuilds conv layers as dense matrices) on a conv-ReLU-conv-ReLU-FC-ReLU-FC network."""
    pytest.importorskip("art")
    from art.estimators.certification.interval import PyTorchIBPClassifier

    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.ReLU(),
                             nn.Flatten(), nn.Linear(16, 10), nn.ReLU())
    model = FeatureClassifier(features, nn.Linear(10, 4)).eval()

    class Flat(nn.Module):  # ART needs the layers as direct children, with no Flatten module
        def __init__(self):
            super().__init__()
            self.layers = [m for m in [*features, model.classifier] if not isinstance(m, nn.Flatten)]
            for i, m in enumerate(self.layers):
                self.add_module(f"l{i}", m)

        def forward(self, x):
            return model(x)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art_model = PyTorchIBPClassifier(model=Flat(), loss=nn.CrossEntropyLoss(), input_shape=(1, 8, 8),
                                         nb_classes=4, clip_values=(0.0, 1.0), device_type="cpu")
    x, _ = data(3)
    ref = art_model.predict_intervals(x.numpy(), bounds=EPS, limits=[0.0, 1.0])  # (n, 2, K)
    with torch.no_grad():
        lo, hi = logit_bounds(model, x, EPS)
    np.testing.assert_allclose(lo.numpy(), ref[:, 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(hi.numpy(), ref[:, 1], rtol=1e-4, atol=1e-5)


def test_certified_images_resist_pgd():
    """An image certified at eps is never misclassified by PGD at that eps (brute-force check of
    the certificate on an untrained random net with a tiny eps where some images certify)."""
    from tradeoff.attacks.pgd import perturb
    from tradeoff.core.spec import AttackSpec

    model, (x, y) = random_net(1), data(5, n=40)
    with torch.no_grad():
        y = model(x).argmax(1)  # label = prediction, so small boxes certify
    eps = 1e-3
    cert = certified(model, x, y, eps)
    assert cert.any()
    adv = perturb(model, x, y, AttackSpec(eps=eps, step_size=eps / 4, steps=20, restarts=2, loss="margin"))
    with torch.no_grad():
        assert (model(adv).argmax(1)[cert] == y[cert]).all()


def test_unsupported_layer_is_named():
    """A layer with no interval rule raises TradeoffError naming it (not a silent wrong bound)."""
    model = FeatureClassifier(nn.Sequential(PerImageStandardize(), nn.Flatten()), nn.Linear(64, 3))
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(TradeoffError, match="PerImageStandardize"):
        margin_bounds(model, x, torch.zeros(2, dtype=torch.long), EPS)
    with pytest.raises(TradeoffError, match="BatchNorm2d"):
        interval_forward(nn.BatchNorm2d(1), x, x)
    with pytest.raises(TradeoffError, match="linear 'classifier'"):
        margin_bounds(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), x, torch.zeros(2, dtype=torch.long), EPS)


def test_recorded_relu_inputs_are_the_pre_activation_bounds():
    """Inside recording_relu_inputs each ReLU's input bounds are kept in network order: they equal
    a float64 lower/upper-form propagation (W+ u + W- l) up to that ReLU, hold the
    pre-activations of 500 random points of the box, and nothing is recorded outside the block."""
    torch.manual_seed(0)
    model = build_model("ibp-small", (1, 16, 16), 10).eval()
    x, y = torch.rand(4, 1, 16, 16), torch.randint(0, 10, (4,))
    with torch.no_grad(), recording_relu_inputs() as record:
        margin_bounds(model, x, y, 0.1)
    relus = [i for i, m in enumerate(model.features) if isinstance(m, nn.ReLU)]
    assert len(record) == len(relus) == 3
    lo, hi = input_box(x.double(), 0.1)
    bounds_at = []
    for layer in model.features:
        if isinstance(layer, nn.ReLU):
            bounds_at.append((lo, hi))
            lo, hi = lo.clamp(min=0), hi.clamp(min=0)
        elif isinstance(layer, (nn.Conv2d, nn.Linear)):
            w, b = layer.weight.double(), layer.bias.double()
            op = ((lambda t, k: F.conv2d(t, k, None, layer.stride, layer.padding)) if isinstance(layer, nn.Conv2d)
                  else (lambda t, k: t @ k.T))
            shape = (1, -1, *[1] * (lo.dim() - 2))
            lo, hi = (op(lo, w.clamp(min=0)) + op(hi, w.clamp(max=0)) + b.view(shape),
                      op(hi, w.clamp(min=0)) + op(lo, w.clamp(max=0)) + b.view(shape))
        elif isinstance(layer, Normalize):
            lo, hi = (lo - layer.mean.double()) / layer.std.double(), (hi - layer.mean.double()) / layer.std.double()
        else:
            lo, hi = layer(lo), layer(hi)
    box_lo, box_hi = input_box(x, 0.1)
    points = box_lo + torch.rand(500, *x.shape) * (box_hi - box_lo)
    for (lower, upper), (ref_lo, ref_hi), index in zip(record, bounds_at, relus):
        torch.testing.assert_close(lower.double(), ref_lo, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(upper.double(), ref_hi, rtol=1e-5, atol=1e-5)
        with torch.no_grad():
            pre = model.features[:index](points.flatten(0, 1)).view(500, *lower.shape)
        assert (pre >= lower - 1e-5).all() and (pre <= upper + 1e-5).all()
    with torch.no_grad():
        margin_bounds(model, x, y, 0.1)
    assert len(record) == 3
