"""Learning-rate policies and gradient clipping against hand-computed values, and their validation."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tradeoff.adversarial_defenses import make_objective
from tradeoff.config.build import load_spec
from tradeoff.core.errors import TradeoffError
from tradeoff.data.batches import InMemoryBatches
from tradeoff.training.loop import piecewise_lr, train_model, triangular_lr


def test_piecewise_schedule_in_steps_and_epochs():
    spec = load_spec(None, ["train.lr=0.1", "train.lr_schedule=[[10, 0.01], [20, 0.001]]"]).train
    assert [piecewise_lr(t, 100, spec) for t in (0, 9, 10, 19, 20, 99)] == [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    # in epochs of 5 steps: the boundaries move to steps 50 and 100
    assert [piecewise_lr(t, 200, spec, 5) for t in (49, 50, 99, 100)] == [0.1, 0.01, 0.01, 0.001]


def test_triangular_schedule_rises_to_the_peak_then_falls_to_zero():
    spec = load_spec(None, ["train.lr_policy=triangular", "train.lr=0.01", "train.lr_peak=0.4"]).train
    values = [triangular_lr(t, 100, spec) for t in (0, 20, 40, 70, 100)]
    assert values == pytest.approx([0.0, 0.005, 0.01, 0.005, 0.0])


def test_unknown_policy_is_a_clear_error():
    with pytest.raises(TradeoffError, match="unknown learning-rate policy 'cosine'"):
        load_spec(None, ["train.lr_policy=cosine"])
    with pytest.raises(TradeoffError, match="train.lr_peak must be in"):
        load_spec(None, ["train.lr_peak=1.5"])


def test_grad_clip_scales_each_step_to_the_norm_a_hand_computation_gives():
    """train.grad_clip: one SGD step (lr 0.1, no momentum or decay) on a linear model moves the
    weights by lr * g * min(1, c / |g|), with the gradient g and its global norm computed by hand
    from the closed-form cross-entropy gradient; off (0) the step is the plain one."""
    torch.manual_seed(0)
    x, y = torch.randn(20, 1, 2, 2) * 5, torch.randint(0, 3, (20,))
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    probabilities = torch.softmax(model(x), 1).detach()
    residual = (probabilities - F.one_hot(y, 3).float()) / len(y)
    grads = {"1.weight": residual.T @ x.flatten(1), "1.bias": residual.sum(0)}
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads.values())).item()
    assert norm > 1.0  # the clip below bites
    for clip, scale in ((0.0, 1.0), (1.0, 1.0 / norm)):
        model.load_state_dict(start)
        spec = load_spec(None, {"train": {"steps": 1, "batch_size": 20, "optimizer": "sgd", "lr": 0.1,
                                          "momentum": 0.0, "weight_decay": 0.0, "grad_clip": clip}}).train
        train_model(model, InMemoryBatches(x, y, 20, False, 0), make_objective(load_spec(None, {})), spec,
                    torch.device("cpu"), log=lambda m: None, show_progress=False)
        for key, g in grads.items():
            torch.testing.assert_close(model.state_dict()[key], start[key] - 0.1 * scale * g, rtol=1e-5, atol=1e-6)
