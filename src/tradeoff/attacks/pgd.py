"""Adversarial examples: one batched PGD used by training, evaluation and the defences.

L-inf or L2, random start or not, several restarts (keeping each image's strongest example),
cross-entropy or margin loss, untargeted, targeted, or one run towards each of the k wrong classes
the model scores highest (APGD-T's scheme), constant steps or a cosine schedule. FGSM is PGD with one step of size eps
and no random start; "fast" FGSM (Wong et al. 2020) is one step of 1.25 eps from a random start.
The model's mode (train/eval) is the caller's choice and is left as it was found.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from tradeoff.core.registry import Registry
from tradeoff.core.spec import AttackSpec


@dataclass(frozen=True)
class Norm:
    """A threat model: how a perturbation starts, steps and is projected back into the eps-ball."""

    random_start: Callable[[torch.Tensor, float], torch.Tensor]  # (x, eps) -> delta
    step: Callable[[torch.Tensor, float], torch.Tensor]  # (grad, step size) -> delta step
    ball: Callable[[torch.Tensor, float], torch.Tensor]  # (delta, eps) -> delta in the ball


def batch_norms(t: torch.Tensor) -> torch.Tensor:
    """Each example's L2 norm, shaped to broadcast over the example (never 0)."""
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))


def _l2_random_start(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Uniform in the L2 ball: a uniform direction, radius eps * u^(1/d)."""
    direction = torch.randn_like(x)
    direction = direction / batch_norms(direction)
    radius = torch.rand(x.shape[0], device=x.device) ** (1.0 / x[0].numel()) * eps
    return direction * radius.view(-1, *([1] * (x.dim() - 1)))


NORMS: Registry[Norm] = Registry("norm", listed=False)
NORMS.register("linf", description="L-infinity ball: sign-gradient steps, clipping")(Norm(
    random_start=lambda x, eps: torch.empty_like(x).uniform_(-eps, eps),
    step=lambda grad, size: size * grad.sign(),
    ball=lambda delta, eps: delta.clamp(-eps, eps)))
NORMS.register("l2", description="L2 ball: normalised-gradient steps, rescaling")(Norm(
    random_start=_l2_random_start,
    step=lambda grad, size: size * grad / batch_norms(grad),
    ball=lambda delta, eps: delta * (eps / batch_norms(delta)).clamp(max=1.0)))


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max_{j != y} z_j - z_y per example (positive = misclassified)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return other - true


# (logits, labels) -> the batch's summed loss that the attack ascends
Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

ATTACK_LOSSES: Registry[Callable] = Registry("attack loss", listed=False)
ATTACK_LOSSES.register("ce", description="cross-entropy, summed over the batch")(
    lambda logits, y: F.cross_entropy(logits, y, reduction="sum"))
ATTACK_LOSSES.register("margin", description="the margin max_{j!=y} z_j - z_y, summed (CW-style)")(
    lambda logits, y: margin(logits, y).sum())


def scaled_logit_gradient(loss: torch.Tensor, logits: torch.Tensor, out: torch.Tensor,
                          per_example: bool) -> torch.Tensor:
    """The loss's gradient at the logits times a power of two that brings its largest entry into
    [1, 2), in the model output's dtype: per example when examples do not interact (eval mode),
    else one power for the batch. Under fp16 a confident model's softmax gradient underflows to 0
    on its way back; the steps use only each example's sign or direction of the input gradient,
    and a power of two scales floating-point numbers exactly, so fp32 results are bit-identical to
    those of the unscaled gradient."""
    (g,) = torch.autograd.grad(loss, logits, retain_graph=True)
    peak = g.abs().amax(dim=1, keepdim=True) if per_example else g.abs().max()
    scale = torch.where(peak > 0, torch.exp2(-torch.floor(torch.log2(peak))), torch.ones_like(peak))
    return (g * scale).to(out.dtype)


def random_start(x: torch.Tensor, a: AttackSpec) -> torch.Tensor:
    if not a.random_start or a.eps == 0:
        return torch.zeros_like(x)
    return NORMS.get(a.norm).random_start(x, a.eps)


def project(delta: torch.Tensor, x: torch.Tensor, a: AttackSpec) -> torch.Tensor:
    """Onto the eps-ball of the norm, then so that x + delta stays in [0, 1]."""
    return (x + NORMS.get(a.norm).ball(delta, a.eps)).clamp(0, 1) - x


def step_size(a: AttackSpec, step: int) -> float:
    """The size of step ``step`` (from 0): ``a.step_size``, or under the cosine schedule
    ``a.step_size * (1 + cos(pi * step / a.steps)) / 2`` (large steps first, then small ones)."""
    if a.step_schedule == "cosine":
        return a.step_size * 0.5 * (1 + math.cos(math.pi * step / a.steps))
    return a.step_size


def gradient_step(grad: torch.Tensor, a: AttackSpec, step: int = 0) -> torch.Tensor:
    """Ascent step number ``step`` in the norm's steepest direction (its size: :func:`step_size`)."""
    return NORMS.get(a.norm).step(grad, step_size(a, step))


def random_wrong_labels(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    shift = torch.randint(1, num_classes, y.shape, device=y.device)
    return (y + shift) % num_classes


def top_wrong_classes(logits: torch.Tensor, y: torch.Tensor, k: int) -> list[torch.Tensor]:
    """Per example, the k wrong classes with the highest logits, best first: k label tensors."""
    ranked = logits.argsort(1, descending=True)
    wrong = ranked[ranked != y[:, None]].view(len(y), -1)
    return [wrong[:, j] for j in range(min(k, wrong.shape[1]))]


def perturb(model, x: torch.Tensor, y: torch.Tensor, a: AttackSpec,
            target: torch.Tensor | None = None, objective: Objective | None = None,
            start: torch.Tensor | None = None) -> torch.Tensor:
    """Adversarial examples for (x, y). ``a.targeted`` steps towards ``target`` (random wrong
    labels when not given); ``a.target_classes`` = k runs once towards each of the k wrong classes
    the model scores highest on the clean image, keeping each image's first misclassified example;
    otherwise away from y. ``objective`` (logits, y) -> the summed loss to ascend, a defence's own
    in place of ``a.loss`` (untargeted, one run); ``start``: the first perturbation (projected) in
    place of the random start. Returns a detached tensor."""
    if a.eps == 0 or a.steps == 0:
        return x.detach().clone()
    x = x.detach()
    if objective is not None or start is not None:
        return _pgd(model, x, y, a, None, objective, start)[0]
    if a.target_classes:
        with torch.no_grad():
            targets = top_wrong_classes(model(x).float(), y, a.target_classes)
    elif a.targeted:
        if target is None:
            with torch.no_grad():
                num_classes = model(x[:1]).shape[1]
            target = random_wrong_labels(y, num_classes)
        targets = [target]
    else:
        targets = [None]
    if len(targets) == 1 and a.restarts == 1:
        return _pgd(model, x, y, a, targets[0])[0]
    return _first_successes(model, x, y, a, targets)


def _first_successes(model, x: torch.Tensor, y: torch.Tensor, a: AttackSpec,
                     targets: list[torch.Tensor | None]) -> torch.Tensor:
    """Every run (each target, each restart), keeping each image's first successful example (the
    first run's where none succeeds). In eval mode a run attacks only the images no earlier run
    fooled, as AutoAttack does: the same per-image result, since an image's attack does not depend
    on the rest of its batch there, at the cost of the survivors only. In training mode the batch
    statistics do, so every run takes the whole batch."""
    if len(y) == 0:
        return x.clone()
    shrink = not model.training
    best, done = None, torch.zeros(len(y), dtype=torch.bool, device=x.device)
    everyone = torch.arange(len(y), device=x.device)
    for goal in targets:
        for _ in range(a.restarts):
            todo = (~done).nonzero().squeeze(1) if shrink else everyone
            if len(todo) == 0:
                return best
            candidate, success = _pgd(model, x[todo], y[todo], a, None if goal is None else goal[todo])
            if success is None:
                with torch.no_grad():
                    pred = model(candidate).argmax(1)
                success = (pred == goal[todo]) if a.targeted and not a.target_classes else (pred != y[todo])
            if best is None:
                best = candidate
            else:
                take = success & ~done[todo]
                best[todo[take]] = candidate[take]
            done[todo[success]] = True
    return best


def _pgd(model, x: torch.Tensor, y: torch.Tensor, a: AttackSpec, target: torch.Tensor | None,
         objective: Objective | None = None, start: torch.Tensor | None = None
         ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One run from a random start (or ``start``): towards ``target`` when given, else away from
    y, ascending ``objective`` (default: ``a.loss``). Returns the examples and, under
    ``a.first_success``, which of them fool the model (known from the run's own forward passes;
    None otherwise)."""
    objective = objective or ATTACK_LOSSES.get(a.loss)
    delta = project(random_start(x, a) if start is None else start.expand_as(x).clone(), x, a)
    kept = FirstSuccess(y, target if a.targeted and not a.target_classes else None) if a.first_success else None
    for step in range(a.steps):
        delta.requires_grad_(True)
        with torch.enable_grad():
            out = model(x + delta)
            logits = out.float()  # the loss in fp32 under fp16/bf16 autocast
            loss = -objective(logits, target) if target is not None else objective(logits, y)
            scaled = scaled_logit_gradient(loss, logits, out, per_example=not model.training)
            (grad,) = torch.autograd.grad(out, delta, grad_outputs=scaled)
        if kept is not None:
            kept.update(delta.detach(), logits.detach())
        delta = project(delta.detach() + gradient_step(grad, a, step), x, a)
    if kept is not None:
        with torch.no_grad():
            kept.update(delta, model(x + delta).float())
        return (x + kept.result(delta)).detach(), kept.found
    return (x + delta).detach(), None


class FirstSuccess:
    """Each image's first iterate that fools the model (misclassified; for a targeted run, classified
    as its target), from the logits each step computes anyway: an image counts as broken when any
    iterate breaks it, as AutoAttack counts it."""

    def __init__(self, y: torch.Tensor, target: torch.Tensor | None):
        self.y, self.target = y, target
        self.found = torch.zeros(len(y), dtype=torch.bool, device=y.device)
        self.delta: torch.Tensor | None = None

    def update(self, delta: torch.Tensor, logits: torch.Tensor) -> None:
        pred = logits.argmax(1)
        fooled = (pred == self.target) if self.target is not None else (pred != self.y)
        new = fooled & ~self.found
        if new.any():
            self.delta = delta.clone() if self.delta is None else torch.where(
                new.view(-1, *[1] * (delta.dim() - 1)), delta, self.delta)
            self.found |= new

    def result(self, last: torch.Tensor) -> torch.Tensor:
        """The first fooling iterate where there is one, else ``last``."""
        if self.delta is None:
            return last
        return torch.where(self.found.view(-1, *[1] * (last.dim() - 1)), self.delta, last)


ATTACKS: Registry[Callable] = Registry("attack")
ATTACKS.register("pgd", options=AttackSpec, description="projected gradient descent, L-inf or L2, with restarts "
                 "(FGSM: steps 1, step_size eps, no random start)")(perturb)


LOSS_NAMES = {"ce": "cross-entropy loss", "margin": "margin loss"}
NORM_NAMES = {"linf": "Linf", "l2": "L2"}


def _budget(value: float) -> str:
    """0.4 -> "0.4"; 0.0313725... -> "8/255" (budgets in 255ths, as papers write them)."""
    if abs(value - round(value, 3)) < 1e-9:
        return f"{value:g}"
    in_255ths = round(value * 255, 1)
    if abs(value * 255 - in_255ths) < 1e-4:
        return f"{in_255ths:g}/255"
    return f"{value:.4g}"


def describe(a: AttackSpec) -> str:
    """One line naming a resolved attack, as a table's caption gives it: "PGD-20, margin loss,
    1 restart, Linf eps 0.4, step 0.1" (FGSM: one step of eps without a random start)."""
    fgsm = a.steps == 1 and not a.random_start and a.step_size is not None and a.step_size >= a.eps
    parts = ["FGSM" if fgsm else f"PGD-{a.steps}", LOSS_NAMES.get(a.loss, f"{a.loss} loss")]
    if not fgsm:
        parts.append(f"{a.restarts} restart{'s' if a.restarts != 1 else ''}")
    budget = f"{NORM_NAMES.get(a.norm, a.norm)} eps {_budget(a.eps)}"
    if not fgsm:
        budget += f", step {_budget(a.step_size)}" + ("" if a.random_start else ", no random start")
    if a.step_schedule == "cosine":
        budget = budget.replace(", step ", ", cosine step from ")
    parts.append(budget)
    if a.target_classes:
        parts.append(f"towards each of the top {a.target_classes} wrong classes")
    elif a.targeted:
        parts.append("targeted")
    if a.first_success and not fgsm:
        parts.append("each image's first fooling iterate kept")
    return ", ".join(parts)
