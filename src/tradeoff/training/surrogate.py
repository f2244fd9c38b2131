"""The step between a label-consistent plan and the stamping: a surrogate model (trained briefly
on the clean training set, or loaded) and the chosen images perturbed against it
(:func:`tradeoff.poisoning.perturb_before_stamping`). Any other poisoning method passes through.

Deterministic for a spec: the surrogate's initialisation, batches and the attack's random starts
are seeded from ``spec.seed`` on generators of their own, so the run's own stream of random
numbers is the same whether the surrogate was trained, loaded or its images read from a run
folder. On GPUs, training is not bit-exact from run to run, which is why the run folder keeps the
perturbed images (``poison.safetensors``) and ``tradeoff defend`` reads them back.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from tradeoff.adversarial_defenses import make_objective
from tradeoff.core.checkpoints import load_state
from tradeoff.core.errors import TradeoffError
from tradeoff.core.spec import AdversarialDefenseSpec, PoisonSpec, Spec
from tradeoff.data import ImageSet
from tradeoff.models import build_model, model_for
from tradeoff.poisoning import PoisonPlan, perturb_before_stamping, perturbs_images
from tradeoff.training.loop import TrainResult, train_model


def perturb_poisons(spec: Spec, train, plan: PoisonPlan, num_classes: int, device: torch.device,
                    log: Callable[[str], None] = lambda message: None,
                    saved: Optional[torch.Tensor] = None) -> PoisonPlan:
    """The plan with ``images`` set to its chosen images perturbed against the surrogate, for a
    method that perturbs (label-consistent); else the plan as it was. ``saved``: the images a run
    folder kept for this plan, used instead of computing them again."""
    if not perturbs_images(spec.poison) or not len(plan.indices):
        return plan
    if not isinstance(train, ImageSet):
        raise TradeoffError(f"poison.method {spec.poison.method!r} perturbs the training images in memory; "
                            f"the streamed dataset {spec.data.dataset!r} is not supported.")
    expected = (len(plan.indices), *train.shape)
    if saved is not None:
        if tuple(saved.shape) != expected:
            raise TradeoffError(f"the run folder's perturbed images have shape {tuple(saved.shape)}, not {expected}.")
        log(f"{spec.poison.method}: {len(saved)} perturbed images read from the run folder")
        return dataclasses.replace(plan, images=saved.cpu())
    options = spec.poison.options
    model = surrogate_model(spec, train, num_classes, device, log)
    x, y = train.x[plan.indices].to(device), train.targets[plan.indices].to(device)
    start = time.perf_counter()
    images = perturb_before_stamping(model, x, y, options.perturbation, spec.seed, spec.eval.batch_size)
    a = options.perturbation
    log(f"{spec.poison.method}: {len(images)} images perturbed ({a.norm} eps {a.eps:g}, {a.steps} steps) in "
        f"{time.perf_counter() - start:.1f} s; the surrogate's loss on them {mean_loss(model, x, y):.3f} -> "
        f"{mean_loss(model, images, y):.3f}")
    return dataclasses.replace(plan, images=images.cpu())


def surrogate_model(spec: Spec, train: ImageSet, num_classes: int, device: torch.device,
                    log: Callable[[str], None] = lambda message: None):
    """The model the perturbation attacks, in eval mode: ``surrogate_checkpoint``'s weights in the
    spec's model, else the spec's model (its ``model.checkpoint`` as the start, no denoising
    blocks) after standard training on the clean ``train`` for ``surrogate_epochs`` (or
    ``surrogate_steps``) with the spec's optimiser, batch and schedule."""
    options = spec.poison.options
    if options.surrogate_checkpoint:
        model = build_model(spec.model.name, train.shape, num_classes, spec.model.width)
        try:
            model.load_state_dict(load_state(Path(options.surrogate_checkpoint)))
        except RuntimeError:
            raise TradeoffError(f"poison.surrogate_checkpoint {options.surrogate_checkpoint!r} does not fit "
                                f"model {spec.model.name!r} of the spec.") from None
        log(f"surrogate: {options.surrogate_checkpoint}")
        return model.to(device).eval()
    plain = dataclasses.replace(
        spec, poison=PoisonSpec(method="none"), adversarial_defense=AdversarialDefenseSpec(),
        train=dataclasses.replace(spec.train, epochs=options.surrogate_epochs, steps=options.surrogate_steps,
                                  compile=False))
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(spec.seed)
        model = model_for(plain, train.shape, num_classes, device)
        result = train_quietly(model, train, plain, device)
    log(f"surrogate: {spec.model.name}, standard training on the clean training set, {result.steps} steps in "
        f"{result.seconds:.1f} s (final loss {result.final_loss:.3f})")
    return model.eval()


def train_quietly(model, images, spec: Spec, device) -> TrainResult:
    """Train ``model`` on ``images`` with ``spec``'s objective and training budget, its batches
    seeded and augmented as ``spec`` says, without a log or progress bar (a poisoning method's
    surrogate)."""
    batches = images.batches(spec.train.batch_size, spec.seed, device, augment=bool(spec.data.augment),
                             flip=spec.data.augment_flip)
    return train_model(model, batches, make_objective(spec), spec.train, device, log=lambda message: None,
                       show_progress=False)


def mean_loss(model, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """The model's mean cross-entropy on (x, y), ``batch_size`` images at a time."""
    with torch.no_grad():
        total = sum(F.cross_entropy(model(x[i:i + batch_size]).float(), y[i:i + batch_size], reduction="sum").item()
                    for i in range(0, len(x), batch_size))
    return total / max(len(x), 1)
