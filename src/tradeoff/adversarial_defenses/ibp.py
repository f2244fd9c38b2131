"""IBP certified training (Gowal et al. 2018).

loss = (1 - kappa) * CE(z(x), y) + kappa * CE(z_hat, y), where ``z_hat_j`` is the upper bound on
``z_j - z_y`` over the eps-box (0 at y). Both the training eps and kappa stay at 0 for
``ibp_warmup_steps`` steps, then rise linearly over ``ibp_ramp_steps`` steps to ``ibp_eps`` and
``ibp_final_mix`` (the protocol: 0 -> eps and nominal weight 1 -> 0.5).
"""

from __future__ import annotations

import torch.nn.functional as F

from dataclasses import dataclass
from typing import Optional

from tradeoff.adversarial_defenses.base import OBJECTIVES, Objective
from tradeoff.bounds import worst_case_logits
from tradeoff.spec import option


def ramp(step: int, warmup: int, length: int) -> float:
    """0 until ``warmup``, then linear to 1 over ``length`` steps, then 1."""
    if step < warmup:
        return 0.0
    if length <= 0:
        return 1.0
    return min(1.0, (step - warmup) / length)


@dataclass
class IBPOptions:
    ibp_eps: Optional[float] = option(None, doc="training eps; unset: adversarial_defense.attack.eps", min=0)
    ibp_warmup_steps: int = option(2000, doc="steps at eps 0 and nominal loss only", min=0)
    ibp_ramp_steps: int = option(10000, doc="steps of the linear ramp of eps and the loss mix", min=0)
    ibp_final_mix: float = option(0.5, doc="weight of the verified loss after the ramp", min=0, max=1)


@OBJECTIVES.register("ibp", options=IBPOptions)
class IBPTraining(Objective):
    """Nominal cross-entropy mixed with the verified cross-entropy over worst-case margins."""

    @classmethod
    def label(cls, spec) -> str:
        """'none' at a training eps of 0 (Table 1(b)'s no-defence rows): the loss is the nominal one."""
        eps = spec.adversarial_defense.options.ibp_eps
        return "none" if eps == 0 else "ibp"

    def train_eps(self) -> float:
        eps = self.options.ibp_eps
        return eps if eps is not None else self.defense.attack.eps

    def schedule(self, step: int) -> tuple[float, float]:
        """(training eps, weight of the verified loss) at global step ``step``."""
        o = self.options
        t = ramp(step, o.ibp_warmup_steps, o.ibp_ramp_steps)
        return t * self.train_eps(), t * o.ibp_final_mix

    def loss(self, model, x, y, step):
        eps, kappa = self.schedule(step)
        logits = model(x)
        nominal = F.cross_entropy(logits, y)
        if kappa == 0 or eps == 0:  # at eps 0 the verified loss equals the nominal one: skip the bounds
            return nominal, logits, x
        verified = F.cross_entropy(worst_case_logits(model, x, y, eps), y)
        return (1 - kappa) * nominal + kappa * verified, logits, x
