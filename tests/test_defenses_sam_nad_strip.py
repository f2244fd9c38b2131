"""FT-SAM, NAD and STRIP: each against an independent reference (adaptive SAM's closed form on a
quadratic, the attention-distillation loss written out in numpy, STRIP's entropy on a hand-built
superimposition) and end to end on real MNIST with a planted sticker backdoor."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from test_folder_data import make_folder_dataset
from tradeoff.backdoor_defenses import BACKDOOR_DEFENSES
from tradeoff.backdoor_defenses.ft_sam import AdaptiveSAM
from tradeoff.backdoor_defenses.nad import attention_loss, feature_groups
from tradeoff.backdoor_defenses.strip import blend, entropies
from tradeoff.cli import main
from tradeoff.config.build import load_spec
from tradeoff.models.base import build_model
from tradeoff.pipeline.experiment import run_experiment


def test_adaptive_sam_step_equals_its_closed_form_on_a_quadratic():
    """On L(w) = 1/2 w^T A w - b^T w (gradient A w - b), one AdaptiveSAM step with plain SGD equals
    ASAM's formula computed by hand in fp64 numpy: e = rho T^2 g / ||T g|| with T = |w| + eta,
    then w - lr (A (w + e) - b)."""
    rng = np.random.default_rng(0)
    m = rng.normal(size=(5, 5))
    a, b, w0 = m @ m.T + np.eye(5), rng.normal(size=5), rng.normal(size=5)
    rho, eta, lr = 2.0, 0.01, 0.1
    g = a @ w0 - b
    t = np.abs(w0) + eta
    e = rho * t * t * g / np.linalg.norm(t * g)
    expected = w0 - lr * (a @ (w0 + e) - b)

    w = nn.Parameter(torch.tensor(w0))
    A, B = torch.tensor(a), torch.tensor(b)
    optimizer = AdaptiveSAM([w], torch.optim.SGD, rho, eta, lr=lr)

    def closure():
        optimizer.zero_grad()
        loss = 0.5 * w @ A @ w - B @ w
        loss.backward()
        return loss

    optimizer.step(closure)
    np.testing.assert_allclose(w.detach().numpy(), expected, rtol=1e-12)


def test_nad_attention_loss_equals_the_formula_by_hand():
    """The attention loss of two feature groups equals, in numpy: per group and image, the map
    mean_c |a|^p flattened and divided by its L2 norm; beta * mean of the squared difference of the
    student's and teacher's maps; summed over the groups."""
    g = torch.Generator().manual_seed(0)
    student = [torch.randn(3, 4, 5, 5, generator=g, dtype=torch.float64), torch.randn(3, 6, 2, 2, generator=g,
                                                                                        dtype=torch.float64)]
    teacher = [torch.randn_like(s) for s in student]
    beta, p = 500.0, 2.0

    def by_hand(a):
        m = (np.abs(a) ** p).mean(axis=1).reshape(len(a), -1)
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    expected = sum(beta * ((by_hand(s.numpy()) - by_hand(t.numpy())) ** 2).mean() for s, t in zip(student, teacher))
    assert attention_loss(student, teacher, beta, p).item() == pytest.approx(expected, rel=1e-12)


def test_nad_feature_groups_are_one_per_resolution():
    """The small CNN's groups end where the spatial size changes (before each pooling, and the
    last pooled map); a pre-activation ResNet's are its stages' last outputs (one per resolution,
    checked against the shapes each module of ``features`` produces)."""
    cnn = build_model("small-cnn", (1, 28, 28), 10).eval()
    kinds = [type(cnn.features[i]).__name__ for i in feature_groups(cnn, torch.zeros(1, 1, 28, 28))]
    assert kinds[-1] == "MaxPool2d" and len(kinds) >= 2
    resnet = build_model("preact-resnet-small", (3, 32, 32), 10).eval()
    groups = feature_groups(resnet, torch.zeros(1, 3, 32, 32))
    x, sizes = torch.zeros(1, 3, 32, 32), []
    with torch.no_grad():
        for module in resnet.features:
            x = module(x)
            sizes.append(tuple(x.shape[2:]) if x.dim() == 4 else None)
    assert len({sizes[i] for i in groups}) == len(groups) == len({s for s in sizes if s is not None})


def test_strip_entropy_on_a_hand_built_superimposition():
    """Blends are the clipped pixel sums, and the entropy is that of softmax of the model on them,
    written out: a model answering the logits (log 0.5, log 0.5) on the blend of a dark image and
    (log 1, -inf) otherwise gives ln 2 and 0 nats."""
    x = torch.tensor([[[[0.2, 0.9]]], [[[0.0, 0.0]]]])
    pool = torch.tensor([[[[0.5, 0.5]]]])
    blends = blend(x, pool.unsqueeze(0).expand(2, 1, 1, 1, 2))
    assert torch.allclose(blends, torch.tensor([[[[0.7, 1.0]]], [[[0.5, 0.5]]]]))

    def model(images):
        dark = images.flatten(1).sum(1) < 1.2
        uniform = torch.log(torch.tensor([0.5, 0.5]))
        certain = torch.tensor([0.0, -1e9])
        return torch.where(dark[:, None], uniform, certain)

    h = entropies(model, x, pool, 3, torch.Generator().manual_seed(0))
    assert h[0].item() == pytest.approx(0.0, abs=1e-9) and h[1].item() == pytest.approx(math.log(2), rel=1e-6)


def test_ft_sam_nad_and_strip_on_a_planted_mnist_sticker_backdoor(mnist_root, one_thread, capsys):
    """Real MNIST, a sticker backdoor planted by dirty-label poisoning: FT-SAM and NAD (on the
    held-out training images only) lower its attack success and report robustness, DER and
    seconds; STRIP's thresholds come from held-out images, its false-acceptance rate on triggered
    test images is below 1 and it separates them from clean ones; all three are listed."""
    spec = load_spec(None, {
        "data": {"root": mnist_root, "train_subset": 1000, "test_subset": 300, "holdout_per_class": 10},
        "poison": {"method": "dirty-label", "fraction_of_training_set": 0.1},
        "model": {"name": "small-cnn"}, "train": {"steps": 120, "batch_size": 50, "lr": 0.003},
        "eval": {"adversarial": True, "attack": {"steps": 2}, "masking_checks": False, "saliency": False},
        "backdoor_defenses": [
            {"name": "ft-sam", "tune_epochs": 5, "tune_batch_size": 20, "tune_lr": 0.05},
            {"name": "nad", "teacher_epochs": 5, "tune_epochs": 5, "tune_batch_size": 20, "tune_lr": 0.05},
            {"name": "strip", "overlays": 10}]})
    m = run_experiment(spec, show_progress=False).metrics
    assert m["backdoor_success_rate"] > 0.5, m["backdoor_success_rate"]
    for prefix in ("ft_sam", "nad"):
        assert f"{prefix}_error" not in m, m.get(f"{prefix}_error")
        assert m[f"{prefix}_clean_data"] == "100 held-out training images"
        assert m[f"{prefix}_backdoor_success_rate_after"] < m[f"{prefix}_backdoor_success_rate_before"]
        assert m[f"{prefix}_adversarial_robustness_after"] is not None and m[f"{prefix}_seconds"] > 0
    assert m["ft_sam_variant"] == "adaptive-sam" and m["nad_feature_groups"]
    assert "strip_error" not in m, m.get("strip_error")
    assert m["strip_threshold_1pct"] <= m["strip_threshold_5pct"]
    assert m["strip_far_5pct"] <= m["strip_far_1pct"] < 1 and m["strip_auroc"] > 0.5
    assert main(["list", "backdoor-defenses"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("ft-sam", "nad", "strip")) and "rho = 2.0" in listed
    assert {"ft-sam", "nad", "strip"} <= set(BACKDOOR_DEFENSES.names())


def test_on_streamed_data_in_a_run_and_on_its_folder(tmp_path):
    """A streamed (ImageFolder) run with a per-class holdout runs FT-SAM, NAD and STRIP as steps,
    each on the 9 held-out images; `tradeoff defend` on the finished folder runs them again and
    merges their metrics (the same FT-SAM numbers: the run rebuilt, the tuning seeded); a folder
    trained without a holdout is refused in one sentence (exit 2)."""
    make_folder_dataset(tmp_path, "imagenet", per_class=12, size=36)
    data = {"dataset": "imagenet", "root": str(tmp_path), "image_size": 32, "workers": 0, "holdout_per_class": 3}
    base = {"data": data, "poison": {"method": "dirty-label", "fraction_of_training_set": 0.2, "target": 1},
            "model": {"name": "small-cnn"}, "train": {"steps": 2, "batch_size": 8}, "eval": {"adversarial": False}}
    spec = load_spec(None, {**base, "backdoor_defenses": [
        {"name": "ft-sam", "tune_epochs": 1, "tune_batch_size": 4},
        {"name": "nad", "teacher_epochs": 1, "tune_epochs": 1, "tune_batch_size": 4},
        {"name": "strip", "overlays": 4}]})
    spec.name = "streamed"
    m = run_experiment(spec, out_dir=tmp_path / "runs", show_progress=False).metrics
    assert not [k for k in m if k.endswith("_error")], {k: v for k, v in m.items() if k.endswith("_error")}
    assert m["ft_sam_clean_data"] == m["nad_clean_data"] == "9 held-out training images"
    assert m["strip_clean_data"].startswith("4 held-out overlays, 5 held-out images")
    folder = tmp_path / "runs" / "streamed"
    assert main(["defend", str(folder), "--defense", "ft-sam", "--option", "tune_epochs=1",
                 "--option", "tune_batch_size=4", "--quiet"]) == 0
    again = json.loads((folder / "metrics.json").read_text())
    assert again["ft_sam_backdoor_success_rate_after"] == m["ft_sam_backdoor_success_rate_after"]
    assert main(["defend", str(folder), "--defense", "strip", "--option", "overlays=4", "--quiet"]) == 0
    assert "strip_auroc" in json.loads((folder / "metrics.json").read_text())

    plain = load_spec(None, {**base, "data": {k: v for k, v in data.items() if k != "holdout_per_class"}})
    plain.name = "plain"
    run_experiment(plain, out_dir=tmp_path / "runs", show_progress=False)
    assert main(["defend", str(tmp_path / "runs" / "plain"), "--defense", "nad", "--quiet"]) == 2
