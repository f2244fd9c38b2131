"""TRADES (Zhang et al. 2019, "Theoretically principled trade-off between robustness and accuracy").

loss = CE(f(x), y) + beta * mean_i KL(p(x_i) || p(x'_i)), p = softmax(f), where x' maximises the
KL within the eps-ball: PGD on the KL (the norm's steps, eps, step size and step count of
``adversarial_defense.attack``) from x + ``trades_start`` * N(0, 1); the clean probabilities are held fixed
while crafting. A random start uniform in the ball is not used: the KL's gradient at x is zero,
so the ascent needs a nudge, and TRADES defines it as this small Gaussian one; ``attack.loss``,
``attack.targeted`` and ``attack.restarts`` do not apply to the KL ascent.

Both terms are differentiated in full (the clean probabilities inside the KL included), as in
the paper's objective. The loop's accuracy is that of the crafted examples, as for PGD training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tradeoff.adversarial_defenses.base import ATTACK_MODEL_MODES, OBJECTIVES, Objective
from tradeoff.attacks.pgd import gradient_step, project, scaled_logit_gradient
from tradeoff.core.spec import AttackSpec, option


def kl_divergence(clean_logits: torch.Tensor, adversarial_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(clean) || softmax(adversarial)) per example, from log-probabilities."""
    log_p = F.log_softmax(clean_logits, dim=1)
    log_q = F.log_softmax(adversarial_logits, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def trades_loss(clean_logits: torch.Tensor, adversarial_logits: torch.Tensor, y: torch.Tensor,
                beta: float) -> torch.Tensor:
    """CE(f(x), y) + beta * KL(p(x) || p(x')), both averaged over the batch."""
    return F.cross_entropy(clean_logits, y) + beta * kl_divergence(clean_logits, adversarial_logits).mean()


def kl_ascent(model, x: torch.Tensor, a: AttackSpec, start: float) -> torch.Tensor:
    """x' in the eps-ball of ``a.norm`` (and in [0, 1]) after ``a.steps`` ascent steps on
    sum_i KL(p(x_i) || p(x'_i)) from x + ``start`` * N(0, 1). Returns a detached tensor."""
    x = x.detach()
    if a.eps == 0 or a.steps == 0:
        return x.clone()
    with torch.no_grad():
        clean = model(x).float()
    delta = project(start * torch.randn_like(x), x, a)
    for _ in range(a.steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            out = model(x + delta)
            logits = out.float()  # the loss in fp32 under fp16/bf16 autocast
            loss = kl_divergence(clean, logits).sum()
            scaled = scaled_logit_gradient(loss, logits, out, per_example=not model.training)
            (grad,) = torch.autograd.grad(out, delta, grad_outputs=scaled)
        delta = project(delta.detach() + gradient_step(grad, a), x, a)
    return (x + delta).detach()


@dataclass
class TRADESOptions:
    trades_beta: float = option(6.0, doc="weight of the KL term (Zhang et al.'s 1/lambda; their CIFAR-10 value)",
                                min=0)
    trades_start: float = option(0.001, doc="standard deviation of the Gaussian start of the KL ascent", above=0)


@OBJECTIVES.register("trades", options=TRADESOptions)
class TRADESTraining(Objective):
    """Zhang et al. 2019: clean cross-entropy plus beta x the KL to the example that maximises it."""

    @classmethod
    def label(cls, spec) -> str:
        """'trades', with the norm when L2 and beta when not the default (e.g. 'trades-l2-beta1')."""
        return cls.weighted_label(spec, "trades_beta")

    def inputs(self, model, x, y, step):
        with ATTACK_MODEL_MODES.get(self.defense.attack_model_mode)(model):
            return kl_ascent(model, x, self.ramped(self.defense.attack, step), self.options.trades_start)

    def loss(self, model, x, y, step):
        adversarial = self.inputs(model, x, y, step)
        clean_logits, adversarial_logits = model(x), model(adversarial)
        return trades_loss(clean_logits, adversarial_logits, y, self.options.trades_beta), adversarial_logits, adversarial
