"""Adversarial examples: one batched PGD used by training, evaluation and the defences.

L-inf or L2, random start or not, several restarts (keeping each image's strongest example),
cross-entropy or margin loss, untargeted or targeted. FGSM is PGD with one step of size eps
and no random start; "fast" FGSM (Wong et al. 2020) is one step of 1.25 eps from a random start.
The model's mode (train/eval) is the caller's choice and is left as it was found.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tradeoff.spec import AttackSpec

def fgsm_spec(eps: float, random_start: bool = False, step_factor: float = 1.0, norm: str = "linf") -> AttackSpec:
    return AttackSpec(norm=norm, eps=eps, step_size=step_factor * eps, steps=1, random_start=random_start)

def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """max_{j != y} z_j - z_y per example (positive = misclassified)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return other - true

def _objective(logits, y, loss: str) -> torch.Tensor:
    if loss == "margin":
        return margin(logits, y).sum()
    return F.cross_entropy(logits, y, reduction="sum")

def _l2_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))

def _random_start(x: torch.Tensor, a: AttackSpec) -> torch.Tensor:
    if not a.random_start or a.eps == 0:
        return torch.zeros_like(x)
    if a.norm == "linf":
        return torch.empty_like(x).uniform_(-a.eps, a.eps)
    direction = torch.randn_like(x)
    direction = direction / _l2_norm(direction)
    radius = torch.rand(x.shape[0], device=x.device) ** (1.0 / x[0].numel()) * a.eps
    return direction * radius.view(-1, *([1] * (x.dim() - 1)))

def project(delta: torch.Tensor, x: torch.Tensor, a: AttackSpec) -> torch.Tensor:
    """Onto the eps-ball of the norm, then so that x + delta stays in [0, 1]."""
    if a.norm == "linf":
        delta = delta.clamp(-a.eps, a.eps)
    else:
        delta = delta * (a.eps / _l2_norm(delta)).clamp(max=1.0)
    return (x + delta).clamp(0, 1) - x

def _step(grad: torch.Tensor, a: AttackSpec) -> torch.Tensor:
    if a.norm == "linf":
        return a.step_size * grad.sign()
    return a.step_size * grad / _l2_norm(grad)

def random_wrong_labels(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    shift = torch.randint(1, num_classes, y.shape, device=y.device)
    return (y + shift) % num_classes

def perturb(model, x: torch.Tensor, y: torch.Tensor, a: AttackSpec,
            target: torch.Tensor | None = None) -> torch.Tensor:
    """Adversarial examples for (x, y). ``a.targeted`` steps towards ``target`` (random wrong
    labels when not given); otherwise away from y. Returns a detached tensor."""
    if a.eps == 0 or a.steps == 0:
        return x.detach().clone()
    x = x.detach()
    if a.targeted and target is None:
        with torch.no_grad():
            num_classes = model(x[:1]).shape[1]
        target = random_wrong_labels(y, num_classes)
    best = None
    for restart in range(a.restarts):
        delta = project(_random_start(x, a), x, a)
        for _ in range(a.steps):
            delta.requires_grad_(True)
            with torch.enable_grad():
                logits = model(x + delta)
                loss = (-_objective(logits, target, a.loss) if a.targeted else _objective(logits, y, a.loss))
                (grad,) = torch.autograd.grad(loss, delta)
            delta = project(delta.detach() + _step(grad, a), x, a)
        candidate = (x + delta).detach()
        if a.restarts == 1:
            return candidate
        with torch.no_grad():
            pred = model(candidate).argmax(1)
            success = (pred == target) if a.targeted else (pred != y)
        if best is None:
            best, done = candidate, success
        else:
            take = success & ~done
            best = torch.where(take.view(-1, *([1] * (x.dim() - 1))), candidate, best)
            done = done | success
    return best
