"""IBP certified training (Gowal et al. 2018).

loss = (1 - kappa) * CE(z(x), y) + kappa * CE(z_hat, y), where ``z_hat_j`` is the upper bound on
``z_j - z_y`` over the eps-box (0 at y). Both the training eps and kappa stay at 0 for
``ibp_warmup_steps`` steps, then rise linearly over ``ibp_ramp_steps`` steps to ``ibp_eps`` and
``ibp_final_mix`` (the protocol: 0 -> eps and nominal weight 1 -> 0.5). ``adversarial_defense.eps_ramp``
is honoured as a cap on the training eps: the eps at a step is the smaller of the two schedules'
(where IBP's own ramp is the slower one, as in every table, the ramp changes nothing).

While eps ramps up, ``ibp_warmup_regularizer`` > 0 adds Shi et al. (2021)'s warm-up regularisers
(:func:`warmup_regularizer`) with weight ``ibp_warmup_regularizer * (1 - eps_t / eps)``; with
``model.init: ibp`` this is their fast IBP training (without its batch norm).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from tradeoff.adversarial_defenses.base import OBJECTIVES, Objective
from tradeoff.core.registry import SyntheticCut
from tradeoff.core.spec import option
from tradeoff.models.bounds import Bounds, input_box, recording_relu_inputs, worst_case_logits


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
    ibp_warmup_regularizer: float = option(0.0, doc="weight of the warm-up regularisers at the ramp's start, "
                                                    "falling to 0 at full eps (Shi et al. 2021: 0.5; 0: off)", min=0)
    ibp_regularizer_tolerance: float = option(0.5, doc="the regularisers' tolerance tau", above=0, max=1)


def _balance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """min(a, b) / max(a, b) for non-negative a, b: 1 when equal, 0 when one side is empty."""
    return torch.minimum(a, b) / torch.maximum(a, b).clamp(min=1e-12)


def warmup_regularizer(relu_inputs: list[Bounds], input_radius: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Shi et al. (2021)'s warm-up regularisers, averaged over the ReLU layers, each term
    ``relu(tau - ratio) / tau`` for a ratio that is 1 when all is well:

    - tightness: the mean radius of the input box over the mean radius of the layer's
      pre-activation bounds (bounds that grow by more than 1/tau are penalised);
    - balance: over the stably active (lower > 0) and stably inactive (upper < 0) units, the
      ratio of their mean centre magnitudes (each summed over the layer, divided by its size) and
      of their summed squared deviations from the layer's mean centre (IBP training otherwise
      kills far more units than it keeps alive); left out for a layer without stably active or
      without stably inactive units, as in the authors' formulation, where the ratio is not finite."""
    total = input_radius.new_zeros(())
    for lower, upper in relu_inputs:
        center, radius = (upper + lower) / 2, (upper - lower) / 2
        total = total + F.relu(tolerance - input_radius / radius.mean().clamp(min=1e-12)) / tolerance
        active, inactive = (lower > 0).float(), (upper < 0).float()
        spread = (center - center.mean()) ** 2
        means = _balance((center * active).mean(), -(center * inactive).mean())
        variances = _balance((spread * active).sum(), (spread * inactive).sum())
        both_sides = active.amax() * inactive.amax()  # 0 when a side is empty: no ratio to balance
        total = total + both_sides * (F.relu(tolerance - means) + F.relu(tolerance - variances)) / tolerance
    return total / max(1, len(relu_inputs))


# on generated data (a few steps): a warm-up of one step, a ramp of one
@OBJECTIVES.register("ibp", options=IBPOptions,
                     synthetic=SyntheticCut(options={"ibp_warmup_steps": 1, "ibp_ramp_steps": 1}))
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
        """(training eps, weight of the verified loss) at global step ``step``; the eps never
        exceeds the run's eps ramp (:meth:`~tradeoff.adversarial_defenses.base.Objective.ramp_fraction`)."""
        o = self.options
        t = ramp(step, o.ibp_warmup_steps, o.ibp_ramp_steps)
        return min(t, self.ramp_fraction(step)) * self.train_eps(), t * o.ibp_final_mix

    def loss(self, model, x, y, step):
        eps, kappa = self.schedule(step)
        logits = model(x)
        nominal = F.cross_entropy(logits, y)
        if kappa == 0 or eps == 0:  # at eps 0 the verified loss equals the nominal one: skip the bounds
            return nominal, logits, x
        with recording_relu_inputs() as relu_inputs:
            verified = F.cross_entropy(worst_case_logits(model, x, y, eps), y)
        loss = (1 - kappa) * nominal + kappa * verified
        weight = self.options.ibp_warmup_regularizer * (1 - eps / self.train_eps())
        if weight > 0:
            lower, upper = input_box(x, eps)
            regularizer = warmup_regularizer(relu_inputs, ((upper - lower) / 2).mean(),
                                             self.options.ibp_regularizer_tolerance)
            loss = loss + weight * regularizer
        return loss, logits, x
