"""MART (Wang et al. 2020, "Improving adversarial robustness requires revisiting misclassified
examples").

x' is PGD on the cross-entropy, exactly as PGD training crafts it (every option of
``adversarial_defense.attack`` applies: norm, eps, step, steps, random start, restarts, loss, targeting). Then

    loss = mean_i BCE(p(x'_i), y_i) + lambda * mean_i KL(p(x_i) || p(x'_i)) * (1 - p_{y_i}(x_i)),
    BCE(p(x'), y) = -log p_y(x') - log(1 - max_{k != y} p_k(x')),

p = softmax(f). lambda defaults to 5, the paper's value for ResNet-18 (6 for its WideResNet); the
models here are small ones. ``log(1 - p_k)`` is computed as logsumexp over the logits without k
minus logsumexp over all of them, so it needs no epsilon. Every factor is differentiated, the
weight 1 - p_y(x) included, as the objective is written. The loop's accuracy is that of the
crafted examples, as for PGD training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tradeoff.adversarial_defenses.adversarial import PGDTraining
from tradeoff.adversarial_defenses.base import OBJECTIVES
from tradeoff.adversarial_defenses.trades import kl_divergence
from tradeoff.core.spec import option


def boosted_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-log p_y - log(1 - max_{k != y} p_k) per example (MART's BCE)."""
    true = F.one_hot(y, logits.shape[1]).bool()
    runner_up = logits.masked_fill(true, float("-inf")).argmax(dim=1)  # the most likely wrong class
    without_runner_up = logits.masked_fill(F.one_hot(runner_up, logits.shape[1]).bool(), float("-inf"))
    log_all = torch.logsumexp(logits, dim=1)
    log_not_runner_up = torch.logsumexp(without_runner_up, dim=1) - log_all  # log(1 - p_k)
    return F.cross_entropy(logits, y, reduction="none") - log_not_runner_up


def mart_loss(clean_logits: torch.Tensor, adversarial_logits: torch.Tensor, y: torch.Tensor,
              lam: float) -> torch.Tensor:
    """BCE(p(x'), y) + lam * KL(p(x) || p(x')) * (1 - p_y(x)), averaged over the batch."""
    p_true = F.softmax(clean_logits, dim=1).gather(1, y[:, None]).squeeze(1)
    robust = kl_divergence(clean_logits, adversarial_logits) * (1 - p_true)
    return (boosted_cross_entropy(adversarial_logits, y) + lam * robust).mean()


@dataclass
class MARTOptions:
    mart_lambda: float = option(5.0, doc="weight of the misclassification-aware KL term (Wang et al.: 5 for "
                                         "ResNet-18, 6 for WideResNet)", min=0)


@OBJECTIVES.register("mart", options=MARTOptions)
class MARTTraining(PGDTraining):
    """Wang et al. 2020: boosted cross-entropy on PGD examples plus lambda x the KL to them,
    weighted by how badly the clean image is classified."""

    @classmethod
    def label(cls, spec) -> str:
        """'mart', with the norm when L2 and lambda when not the default (e.g. 'mart-lambda6')."""
        return cls.weighted_label(spec, "mart_lambda")

    def loss(self, model, x, y, step):
        adversarial = self.inputs(model, x, y, step)
        clean_logits, adversarial_logits = model(x), model(adversarial)
        return mart_loss(clean_logits, adversarial_logits, y, self.options.mart_lambda), adversarial_logits, adversarial
