"""Training objectives, by name. An objective turns a batch into a loss; regularisers compose
on top of any objective (see :func:`make_objective`).

An objective may ask the loop to replay each minibatch (``replays``, for free adversarial
training) and may look at input gradients after the backward pass (``after_backward``).
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from tradeoff.attacks import perturb
from tradeoff.registry import Registry

OBJECTIVES: Registry = Registry("adversarial defence")


@contextmanager
def model_mode(model, training: bool):
    """Temporarily put the model in train or eval mode."""
    was = model.training
    model.train(training)
    try:
        yield
    finally:
        model.train(was)


class Objective:
    replays = 1
    attack_norm: str | None = None  # set: resolve() forces defense.attack.norm to it
    total_steps: int = 0  # set by the training loop before the first step (schedules read it)

    @classmethod
    def label(cls, spec) -> str:
        """This objective's part of the ``defense`` label in summary.csv."""
        return spec.defense.adversarial

    def __init__(self, spec):
        self.spec = spec

    def inputs(self, model, x, y, step: int) -> torch.Tensor:
        """The images the loss is computed on (clean here; adversarial in subclasses)."""
        return x

    def loss(self, model, x, y, step: int):
        """(loss, logits, the inputs used)."""
        inputs = self.inputs(model, x, y, step)
        logits = model(inputs)
        return F.cross_entropy(logits, y), logits, inputs

    def after_backward(self) -> None:
        pass

    def ramped(self, a, step: int):
        """``a`` with eps (and step size) scaled by the eps ramp at ``step``: linear from 0 to the
        full eps over the first ``defense.eps_ramp`` of training. Small CNNs trained at MNIST's
        eps 0.3 from the first step often never leave chance level; the ramp lets them learn the
        clean task first."""
        fraction = self.spec.defense.eps_ramp
        if fraction <= 0 or self.total_steps <= 0:
            return a
        t = min(1.0, (step + 1) / (fraction * self.total_steps))
        return a if t >= 1.0 else dataclasses.replace(a, eps=a.eps * t, step_size=a.step_size * t)


@OBJECTIVES.register("none")
class Standard(Objective):
    """Plain empirical risk minimisation."""


@OBJECTIVES.register("pgd")
class PGDTraining(Objective):
    """Madry et al.: every batch 100% adversarial, a fresh random start for every batch."""

    def attack_spec(self):
        return self.spec.defense.attack

    def inputs(self, model, x, y, step):
        with model_mode(model, self.spec.train.attack_model_mode == "train"):
            return perturb(model, x, y, self.ramped(self.attack_spec(), step))

    @classmethod
    def label(cls, spec) -> str:
        name = spec.defense.adversarial
        return "l2-pgd" if name == "pgd" and spec.defense.attack.norm == "l2" else name


def defense_label(spec) -> str:
    """The short name of the adversarial defence, as reported in summary.csv (e.g. 'denoise+pgd')."""
    parts = []
    if spec.defense.denoise:
        parts.append("denoise")
    if spec.defense.lipschitz > 0:
        parts.append("lipschitz")
    if spec.defense.adversarial != "none":
        label = getattr(OBJECTIVES.get(spec.defense.adversarial), "label", None)
        parts.append(label(spec) if label else spec.defense.adversarial)
    return "+".join(parts) or "none"


REGULARIZERS: Registry = Registry("regulariser")


class Regularized(Objective):
    """Adds ``coefficient * regulariser(model, inputs)`` to any objective's loss."""

    def __init__(self, base: Objective, regularizer, coefficient: float):
        super().__init__(base.spec)
        self.base, self.regularizer, self.coefficient = base, regularizer, coefficient
        self.replays = base.replays

    @property
    def total_steps(self) -> int:
        return self.base.total_steps

    @total_steps.setter
    def total_steps(self, value: int) -> None:
        self.base.total_steps = value

    def loss(self, model, x, y, step):
        loss, logits, inputs = self.base.loss(model, x, y, step)
        return loss + self.coefficient * self.regularizer(model, inputs), logits, inputs

    def after_backward(self):
        self.base.after_backward()


# Modules that register more objectives and regularisers (imported for their side effect).
from tradeoff.objectives import adversarial as _adversarial  # noqa: E402,F401
from tradeoff.objectives import regularizers as _regularizers  # noqa: E402,F401
from tradeoff.objectives import ibp as _ibp  # noqa: E402,F401


def make_objective(spec) -> Objective:
    objective = OBJECTIVES.get(spec.defense.adversarial)(spec)
    if spec.defense.lipschitz > 0:
        objective = Regularized(objective, REGULARIZERS.get("cross-lipschitz"), spec.defense.lipschitz)
    return objective
