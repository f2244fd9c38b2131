"""Adversarial training: objectives that train on adversarial examples crafted by the one PGD.

- ``pgd``: Madry et al., every batch 100% adversarial, a fresh random start for every batch.

- ``fgsm``: one signed-gradient step of size eps from the clean image (Supplement 2); with
  ``adversarial_defense.attack.targeted`` it is the original's variant, one step towards a random wrong label.
- ``l2-pgd``: PGD in the L2 ball (Supplement 3); the same as ``pgd`` with ``adversarial_defense.attack.norm: l2``
  (:func:`tradeoff.config.resolve.resolve` sets the norm, so the eps/step defaults are the L2 ones).
- ``fast``: FGSM from a uniform random start with a step of ``adversarial_defense.fast_step`` (1.25) x eps
  (Wong et al. 2020).
- ``free``: minibatch replay (Shafahi et al. 2019), one backward pass for both the weights and
  the perturbation, the perturbation carried over from replay to replay and batch to batch.

All of them take eps (and the norm, loss and targeting) from ``adversarial_defense.attack``; FGSM and fast
training ignore its step count, step size and random start, which define them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from tradeoff.adversarial_defenses.base import ATTACK_MODEL_MODES, OBJECTIVES, Objective
from tradeoff.attacks.pgd import gradient_step, perturb, project
from tradeoff.core.spec import option


@OBJECTIVES.register("pgd")
class PGDTraining(Objective):
    """Madry et al.: every batch 100% adversarial, a fresh random start for every batch."""

    def attack_spec(self):
        return self.defense.attack

    def inputs(self, model, x, y, step):
        with ATTACK_MODEL_MODES.get(self.defense.attack_model_mode)(model):
            return perturb(model, x, y, self.ramped(self.attack_spec(), step))

    @classmethod
    def label(cls, spec) -> str:
        d = spec.adversarial_defense
        return "l2-pgd" if d.objective == "pgd" and d.attack.norm == "l2" else d.objective


@OBJECTIVES.register("fgsm")
class FGSMTraining(PGDTraining):
    """Every batch replaced by its FGSM example: x + eps * sign(grad), no random start."""

    def attack_spec(self):
        a = self.defense.attack
        return dataclasses.replace(a, steps=1, step_size=a.eps, random_start=False, restarts=1)

    @classmethod
    def label(cls, spec) -> str:
        a = spec.adversarial_defense.attack
        return "fgsm" + ("-l2" if a.norm == "l2" else "") + ("-targeted" if a.targeted else "")


@OBJECTIVES.register("l2-pgd")
class L2PGDTraining(PGDTraining):
    """Madry et al. PGD training in the L2 ball: normalised-gradient steps, projection onto the
    ball and [0, 1]."""

    attack_norm = "l2"

    def attack_spec(self):
        return dataclasses.replace(self.defense.attack, norm="l2")


@dataclass
class FastOptions:
    fast_step: float = option(1.25, doc="step = fast_step x eps (Wong et al. 2020)", above=0)


@OBJECTIVES.register("fast", options=FastOptions)
class FastTraining(PGDTraining):
    """Wong et al. 2020 ("fast is better than free"): one step of ``fast_step`` x eps from a
    uniform random start in the eps-ball, projected back onto the ball and [0, 1]."""

    def attack_spec(self):
        a = self.defense.attack
        return dataclasses.replace(a, steps=1, step_size=self.options.fast_step * a.eps, random_start=True,
                                   restarts=1)

    @classmethod
    def label(cls, spec) -> str:
        return "fast-l2" if spec.adversarial_defense.attack.norm == "l2" else "fast"


@dataclass
class FreeOptions:
    replays: int = option(4, doc="minibatch replays; epochs/steps are divided by them", min=1)


@OBJECTIVES.register("free", options=FreeOptions)
class FreeTraining(Objective):
    """Shafahi et al. 2019: each minibatch replayed ``replays`` times, one backward pass for both
    the weights and the perturbation.

    Every replay's backward pass gives the weight gradient *and* the input gradient, which moves
    the shared perturbation by one signed step of eps (the paper's step), projected onto the
    eps-ball and [0, 1]. The perturbation starts at zero and is carried over to the next minibatch.
    The step follows the training loss's own input gradient, so ``attack.loss`` and
    ``attack.targeted`` do not apply.

    Budget: the training loop divides the spec's epochs (or steps) by the number of replays, so
    free training makes as many passes over minibatches (and optimiser updates) as standard
    training with the same spec, as in Shafahi et al.
    """

    def __init__(self, spec):
        super().__init__(spec)
        self.replays = self.options.replays
        self.delta: torch.Tensor | None = None  # carried perturbation (detached)
        self._live: torch.Tensor | None = None  # this replay's perturbation (a leaf with grad)
        self._x: torch.Tensor | None = None
        self._attack = spec.adversarial_defense.attack  # this minibatch's (ramped) attack

    def inputs(self, model, x, y, step):
        a = self.ramped(self.defense.attack, step)
        self._attack = dataclasses.replace(a, step_size=a.eps)
        x = x.detach()
        if self.delta is None or self.delta.shape[1:] != x.shape[1:] or len(self.delta) < len(x):
            self.delta = torch.zeros_like(x)
        self.delta = self.delta.to(x.device)  # no-op, except after a resume from a snapshot
        self._x = x
        self._live = project(self.delta[:len(x)], x, a).requires_grad_(True)
        return x + self._live

    def after_backward(self):
        if self._live is None or self._live.grad is None:
            return
        a = self._attack
        self.delta = project(self._live.detach() + gradient_step(self._live.grad, a), self._x, a)
        self._live = None

    def state_dict(self):
        return {} if self.delta is None else {"delta": self.delta}

    def load_state_dict(self, state):
        self.delta = state.get("delta")
