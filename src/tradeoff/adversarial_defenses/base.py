"""The training-objective base: an objective turns a batch into a loss; regularisers compose on
top of any objective (see :func:`make_objective`).

An objective may ask the loop to replay each minibatch (``replays``, for free adversarial
training) and may look at input gradients after the backward pass (``after_backward``).
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from tradeoff.core.registry import Registry
from tradeoff.models.mode import model_mode

OBJECTIVES: Registry = Registry("training objective", plural="objectives")


@contextmanager
def batch_statistics_only(model):
    """Train mode (batch-norm layers normalise with the batch's statistics) with every running
    statistic restored afterwards: the original's crafting passes, whose TensorFlow update ops ran
    only with the training step."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [{k: b.clone() for k, b in m.named_buffers(recurse=False)} for m in norms]
    try:
        with model_mode(model, True):
            yield
    finally:
        with torch.no_grad():
            for m, buffers in zip(norms, saved):
                for k, b in m.named_buffers(recurse=False):
                    b.copy_(buffers[k])


# The model's state while an objective crafts training examples: name -> context manager factory.
ATTACK_MODEL_MODES: Registry = Registry("attack model mode", listed=False)
ATTACK_MODEL_MODES.register("eval", description="running batch-norm statistics, no dropout")(
    lambda model: model_mode(model, False))
ATTACK_MODEL_MODES.register("train", description="PyTorch's train mode (batch statistics; updates running ones)")(
    lambda model: model_mode(model, True))
ATTACK_MODEL_MODES.register("batch-stats", description="batch statistics, running ones left as they were "
                            "(the original's TensorFlow code)")(batch_statistics_only)


class Objective:
    replays = 1
    attack_norm: str | None = None  # set: resolve() forces adversarial_defense.attack.norm to it
    total_steps: int = 0  # set by the training loop before the first step (schedules read it)

    @classmethod
    def label(cls, spec) -> str:
        """This objective's part of the ``adversarial_defense`` label in summary.csv."""
        return spec.adversarial_defense.objective

    @classmethod
    def weighted_label(cls, spec, weight: str) -> str:
        """The objective's name, with ``-l2`` for the L2 norm and the ``weight`` option when it
        is not its default (e.g. 'trades-l2-beta1' for ``trades_beta: 1``)."""
        d = spec.adversarial_defense
        options = OBJECTIVES.options_or_default(d.objective, d.options)
        value, default = getattr(options, weight), getattr(type(options), weight)
        return (d.objective + ("-l2" if d.attack.norm == "l2" else "")
                + (f"-{weight.split('_')[-1]}{value:g}" if value != default else ""))

    def __init__(self, spec):
        self.spec = spec
        self.defense = spec.adversarial_defense
        self.options = OBJECTIVES.options_or_default(self.defense.objective, self.defense.options)

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

    def state_dict(self) -> dict[str, torch.Tensor]:
        """State carried from one minibatch to the next (saved in snapshots)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass

    def ramp_fraction(self, step: int) -> float:
        """The share of the full eps at ``step`` under ``adversarial_defense.eps_ramp``: linear
        from 0 to 1 over that fraction of training, then 1 (always 1 without a ramp). Small CNNs
        trained at MNIST's eps 0.3 from the first step often never leave chance level; the ramp
        lets them learn the clean task first."""
        fraction = self.defense.eps_ramp
        if fraction <= 0 or self.total_steps <= 0:
            return 1.0
        return min(1.0, (step + 1) / (fraction * self.total_steps))

    def ramped(self, a, step: int):
        """``a`` with eps (and step size) scaled by :meth:`ramp_fraction` at ``step``."""
        t = self.ramp_fraction(step)
        return a if t >= 1.0 else dataclasses.replace(a, eps=a.eps * t, step_size=a.step_size * t)


@OBJECTIVES.register("none")
class Standard(Objective):
    """Plain empirical risk minimisation."""


def adversarial_defense_label(spec) -> str:
    """The short name of the adversarial defence, as reported in summary.csv (e.g. 'denoise+pgd')."""
    d = spec.adversarial_defense
    parts = []
    if d.denoise:
        parts.append("denoise")
    if d.lipschitz > 0:
        parts.append("lipschitz")
    if d.objective != "none":
        parts.append(OBJECTIVES.get(d.objective).label(spec))
    return "+".join(parts) or "none"


REGULARIZERS: Registry = Registry("regulariser", listed=False)


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

    def state_dict(self):
        return self.base.state_dict()

    def load_state_dict(self, state):
        self.base.load_state_dict(state)


def make_objective(spec) -> Objective:
    d = spec.adversarial_defense
    objective = OBJECTIVES.get(d.objective)(spec)
    if d.lipschitz > 0:
        objective = Regularized(objective, REGULARIZERS.get("cross-lipschitz"), d.lipschitz)
    return objective
