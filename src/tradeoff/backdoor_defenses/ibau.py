"""I-BAU (Zeng et al., ICLR 2022): adversarial unlearning of backdoors via the implicit hypergradient.

The minimax problem min_theta max_delta L(f_theta(x + delta), y) over one universal perturbation
delta (one image's shape, shared by every image) is solved in ``rounds`` rounds. Each round, on
the defender's clean images, in seeded batches without augmentation:

1. the universal perturbation: from zero, one SGD step (``perturbation_lr``) per batch on
   -CE(f(x + delta), f's clean prediction) + ``perturbation_l2`` |delta|_2^2;
2. unlearning: per batch, one Adam step (``lr``) of the model along the implicit hypergradient of
   the outer loss CE(f(x + delta*(theta)), y), where ``perturbed_fraction`` of the batch carries
   delta (at least one image) and delta*(theta) is the fixed point of the inner map
   Phi(delta, theta) = delta - ``inner_step`` * grad_delta [-CE(f(x + delta), y) + l2 |delta|^2]
   on the same batch. The hypergradient d/dtheta L1(delta*(theta), theta) =
   dL1/dtheta + (dPhi/dtheta)^T v, v = (I - dPhi/ddelta)^-T dL1/ddelta, is approximated by
   ``fixed_point_steps`` (K) steps of v <- (dPhi/ddelta)^T v + dL1/ddelta from v = 0
   (:func:`hypergradient`).

The model stays in eval mode throughout (batch-norm statistics fixed), as in the authors' code;
perturbed images are not clipped to [0, 1] (nor were they there). The authors' code reads 1% of
each batch as perturbed (``perturbed_fraction: 0.01``) and evaluates the inner map on the first
batch; here it is the current batch. **Clean data**: the original unlearns on half of the test
set; here the defender's held-out clean training images (``data.holdout_per_class``), never the
test set.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from tradeoff.backdoor_defenses.base import BACKDOOR_DEFENSES
from tradeoff.backdoor_defenses.defender import describe_holdout, holdout_images
from tradeoff.backdoor_defenses.measure import timed_purification
from tradeoff.core.progress import progress_bar
from tradeoff.core.spec import option
from tradeoff.models.mode import model_mode
from tradeoff.records.handoff import TrainedRun

PerturbationLoss = Callable[[torch.Tensor], torch.Tensor]  # delta -> a scalar loss through the model


@dataclass
class IBAUOptions:
    needs_holdout: ClassVar[bool] = True  # trains or calibrates on data.holdout_per_class only
    metric_prefix: ClassVar[str] = "ibau"
    rounds: int = option(5, doc="unlearning rounds (a universal perturbation, then one pass of unlearning)", min=1)
    fixed_point_steps: int = option(5, doc="K, fixed-point steps of the implicit hypergradient", min=1)
    lr: float = option(1e-3, doc="Adam learning rate of unlearning", above=0)
    batch_size: int = option(100, doc="batch of the perturbation search and of unlearning", min=1)
    perturbation_lr: float = option(10.0, doc="SGD learning rate of the universal perturbation", above=0)
    perturbation_l2: float = option(1e-3, doc="weight of |delta|_2^2 in the perturbation's losses", min=0)
    inner_step: float = option(0.1, doc="step of the inner fixed-point map delta - step * gradient", above=0)
    perturbed_fraction: float = option(0.01, doc="share of each unlearning batch that carries the perturbation "
                                                 "(at least one image; the authors' code: 0.01)", above=0, max=1)


def hypergradient(params: Sequence[torch.Tensor], delta: torch.Tensor, outer: PerturbationLoss,
                  inner: PerturbationLoss, steps: int, inner_step: float) -> list[torch.Tensor]:
    """The implicit hypergradient of ``outer`` (delta -> L1 through the parameters ``params``) at
    the fixed point ``delta`` of Phi(delta) = delta - inner_step * d inner/d delta, by ``steps``
    fixed-point steps of v <- (dPhi/ddelta)^T v + dL1/ddelta: dL1/dtheta + (dPhi/dtheta)^T v."""
    params = list(params)
    delta = delta.detach().requires_grad_(True)
    with torch.enable_grad():
        outer_grads = torch.autograd.grad(outer(delta), [delta, *params], allow_unused=True)
        d_delta, d_params = outer_grads[0], outer_grads[1:]
        (inner_grad,) = torch.autograd.grad(inner(delta), delta, create_graph=True)
        mapped = delta - inner_step * inner_grad
        v = torch.zeros_like(delta)
        for _ in range(steps):
            (jv,) = torch.autograd.grad(mapped, delta, grad_outputs=v, retain_graph=True)
            v = jv + d_delta
        indirect = torch.autograd.grad(mapped, params, grad_outputs=v, allow_unused=True)
    return [_or_zero(a, p) + _or_zero(b, p) for a, b, p in zip(d_params, indirect, params)]


def _or_zero(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if grad is None else grad


def adversarial_loss(model, x: torch.Tensor, labels: torch.Tensor, delta: torch.Tensor, l2: float) -> torch.Tensor:
    """-CE(f(x + delta), labels) + l2 |delta|_2^2: the loss the universal perturbation descends."""
    return -F.cross_entropy(model(x + delta), labels) + l2 * delta.pow(2).sum()


def universal_perturbation(model, batches, epoch: int, shape: tuple, opts: IBAUOptions, device) -> torch.Tensor:
    """One round's universal perturbation: one SGD step per batch from zero, against the model's
    own clean predictions."""
    delta = torch.zeros(1, *shape, device=device, requires_grad=True)
    optimizer = torch.optim.SGD([delta], lr=opts.perturbation_lr)
    for xb, _ in batches.epoch(epoch):
        with torch.no_grad():
            predicted = model(xb).argmax(1)
        optimizer.zero_grad(set_to_none=True)
        adversarial_loss(model, xb, predicted, delta, opts.perturbation_l2).backward()
        optimizer.step()
    return delta.detach()


def unlearn_batch(model, optimizer, xb, yb, delta, opts: IBAUOptions, generator: torch.Generator) -> None:
    """One Adam step of the model along the implicit hypergradient on one batch."""
    n_perturbed = max(1, math.floor(opts.perturbed_fraction * len(xb)))
    carries = torch.zeros(len(xb), 1, 1, 1, device=xb.device)
    carries[torch.randperm(len(xb), generator=generator)[:n_perturbed].to(xb.device)] = 1

    def outer(d):
        return F.cross_entropy(model(xb + carries * d), yb)

    def inner(d):
        return adversarial_loss(model, xb, yb, d, opts.perturbation_l2)

    params = [p for p in model.parameters() if p.requires_grad]
    grads = hypergradient(params, delta, outer, inner, opts.fixed_point_steps, opts.inner_step)
    optimizer.zero_grad(set_to_none=True)
    for p, g in zip(params, grads):
        p.grad = g.detach()
    optimizer.step()


def ibau_unlearn(model, images, opts: IBAUOptions, seed: int, show_progress: bool = False):
    """A copy of ``model`` unlearned by I-BAU on the clean image set ``images`` (in memory or
    streamed, read without augmentation)."""
    model = copy.deepcopy(model)
    device = next(model.parameters()).device
    batches = images.unaugmented().batches(opts.batch_size, seed, device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=opts.lr)
    generator = torch.Generator().manual_seed(seed + 1)
    bar = progress_bar(total=opts.rounds * batches.steps_per_epoch, desc="i-bau", unit="step", enabled=show_progress)
    with model_mode(model, False):
        for epoch in range(opts.rounds):
            delta = universal_perturbation(model, batches, epoch, images.shape, opts, device)
            for xb, yb in batches.epoch(epoch):
                unlearn_batch(model, optimizer, xb, yb, delta, opts, generator)
                bar.update(1)
    bar.close()
    return model.eval()


@BACKDOOR_DEFENSES.register("i-bau", options=IBAUOptions)
def ibau_defense(run: TrainedRun, opts: IBAUOptions, log, show_progress) -> dict:
    """I-BAU (Zeng et al. 2022): unlearn universal adversarial perturbations by the implicit
    hypergradient, on the defender's held-out clean training images."""
    clean = holdout_images(run, "i-bau")
    log(f"i-bau: {opts.rounds} rounds, K {opts.fixed_point_steps}, on {describe_holdout(clean)}")
    return timed_purification("i-bau", "ibau", run, clean,
                              lambda: ibau_unlearn(run.model, clean, opts, run.spec.seed, show_progress), log, show_progress)
