"""The backdoor success rate's definition on a hand-built model whose answers are known."""

import torch
from torch import nn

from tradeoff.config.build import section
from tradeoff.core.spec import EvalSpec
from tradeoff.data import ImageSet
from tradeoff.evaluation.metrics import evaluate
from tradeoff.triggers import make_trigger


class CornerModel(nn.Module):
    """Predicts 7 when the bottom-right pixel is 1; otherwise the digit written in pixel (0, 0)."""

    def forward(self, x):
        cls = (x[:, 0, 0, 0] * 10).round().long().clamp(0, 9)
        logits = torch.nn.functional.one_hot(cls, 10).float()
        stamped = x[:, 0, -1, -1] == 1
        logits[stamped] = torch.nn.functional.one_hot(torch.tensor(7), 10).float()
        return logits + 0 * x.sum()  # keeps a gradient path for the attack


def test_backdoor_success_rate_filters_on_the_clean_prediction():
    # 10 images, true labels 0..9; the model predicts pixel(0,0)*10, set so that image 3 is
    # predicted as 7: the paper's rule filters it out, the true-label rule keeps it.
    x = torch.zeros(10, 1, 4, 4)
    y = torch.arange(10)
    pred = y.clone().float()
    pred[3] = 7
    x[:, 0, 0, 0] = pred / 10
    test = ImageSet(x, y)
    trigger = make_trigger(section("trigger", size=1), (1, 4, 4))
    m = evaluate(CornerModel(), test, trigger, 7, EvalSpec(batch_size=4, adversarial=False), "cpu",
                 show_progress=False)
    # clean predictions != 7: 8 images (all but 3 and 7), all flipped to 7 by the trigger
    assert m["backdoor_success_rate"] == 1.0
    # true label != 7: 9 images (including image 3), all predicted 7 once stamped
    assert m["backdoor_success_rate_true_label"] == 1.0
    assert m["accuracy"] == 0.9


def test_backdoor_success_rate_counts_failures():
    """A model that ignores the trigger has 0% success; half-working triggers give exactly 50%."""

    class HalfModel(CornerModel):
        def forward(self, x):
            logits = super().forward(x)
            even = (x[:, 0, 0, 0] * 10).round().long() % 2 == 0
            keep = torch.nn.functional.one_hot((x[:, 0, 0, 0] * 10).round().long().clamp(0, 9), 10).float()
            return torch.where(even[:, None], keep, logits)

    x = torch.zeros(8, 1, 4, 4)
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 8])
    x[:, 0, 0, 0] = y.float() / 10
    trigger = make_trigger(section("trigger", size=1), (1, 4, 4))
    m = evaluate(HalfModel(), ImageSet(x, y), trigger, 7, EvalSpec(batch_size=3, adversarial=False), "cpu",
                 show_progress=False)
    assert m["backdoor_success_rate"] == 3 / 8  # odd labels 1, 3, 5 flip; 0, 2, 4, 6, 8 do not


def test_backdoor_robust_accuracy_by_hand():
    """RA (BackdoorBench): among stamped images whose true label is not the target, the share still
    classified as their true label. Images with odd labels ignore the trigger (kept), even ones flip
    to 7; label 7 itself is left out."""

    class OddKeepsModel(CornerModel):
        def forward(self, x):
            logits = super().forward(x)
            digit = (x[:, 0, 0, 0] * 10).round().long().clamp(0, 9)
            keep = torch.nn.functional.one_hot(digit, 10).float()
            return torch.where((digit % 2 == 1)[:, None], keep, logits)

    x = torch.zeros(10, 1, 4, 4)
    y = torch.arange(10)
    x[:, 0, 0, 0] = y.float() / 10
    trigger = make_trigger(section("trigger", size=1), (1, 4, 4))
    m = evaluate(OddKeepsModel(), ImageSet(x, y), trigger, 7, EvalSpec(batch_size=3, adversarial=False), "cpu",
                 show_progress=False)
    # non-target labels: 0..6, 8, 9 (9 images); odd ones kept: 1, 3, 5, 9 -> RA 4/9, ASR 5/9
    assert m["backdoor_robust_accuracy"] == 4 / 9
    assert m["backdoor_success_rate_true_label"] == 5 / 9
