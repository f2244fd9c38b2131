"""Narcissus's step between the plan and the stamping (:mod:`tradeoff.poisoning.narcissus`): the
POOD data, the surrogate trained on it and the target class's images, its warm-up on the target
class alone, and the trigger optimised against it; any other poisoning method passes through.

Deterministic for a spec on the CPU: the surrogate's initialisation, batches and the
optimisation's order are seeded from ``spec.seed`` on generators of their own, so the run's own
random streams are the same whether the trigger was optimised or read back. The run folder
keeps the trigger (``poison.safetensors``), and ``tradeoff defend`` and ``--resume`` read it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional

import torch

from tradeoff.core.errors import TradeoffError
from tradeoff.core.spec import AdversarialDefenseSpec, DataSpec, PoisonSpec, Spec
from tradeoff.data import ImageSet, load_data
from tradeoff.models import model_for
from tradeoff.poisoning import PoisonPlan
from tradeoff.poisoning.narcissus import digits_like, fit_images, optimise_trigger
from tradeoff.training.surrogate import train_quietly
from tradeoff.triggers.narcissus import OptimisedTrigger


def narcissus_trigger(spec: Spec, train, plan: PoisonPlan, trigger, device: torch.device,
                      log: Callable[[str], None] = lambda message: None,
                      saved: Optional[torch.Tensor] = None):
    """The trigger with its delta optimised against the surrogate, for Narcissus poisoning (else
    ``trigger`` as it was). ``saved``: the delta a run folder kept, used instead of optimising."""
    if spec.poison.method != "narcissus":
        return trigger
    if not isinstance(trigger, OptimisedTrigger):
        raise TradeoffError("poison.method narcissus optimises its trigger: set trigger.kind to narcissus.")
    options = spec.poison.options
    log(f"narcissus: {len(plan.indices)} poisoned images ({100 * options.fraction_of_training_set:g}% of "
        f"{len(plan.labels)} training images, rounded up to whole images, at least one), target {spec.poison.target}")
    if saved is not None:
        log("narcissus: the trigger read from the run folder")
        return trigger.with_pattern(saved)
    if not isinstance(train, ImageSet):
        raise TradeoffError(f"poison.method narcissus reads the target class's images in memory; the streamed "
                            f"dataset {spec.data.dataset!r} is not supported.")
    target_images = train.x[train.targets == spec.poison.target].to(device)
    ood_x, ood_y, ood_classes = ood_data(spec, train.shape)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(spec.seed)
        start = time.perf_counter()
        model = surrogate(spec, ood_x, ood_y, ood_classes, target_images, device, log)
        g = torch.Generator().manual_seed(spec.seed)
        delta, losses = optimise_trigger(model, target_images, ood_classes, options.rounds, options.lr, options.eps,
                                         spec.train.batch_size, g)
    log(f"narcissus: trigger optimised in {options.rounds} rounds (RAdam lr {options.lr:g}, L-inf {options.eps:.4f}), "
        f"the surrogate's loss towards the target {losses[0]:.3f} -> {losses[-1]:.3f}; "
        f"{time.perf_counter() - start:.1f} s with the surrogate")
    return trigger.with_pattern(delta.cpu())


def ood_data(spec: Spec, shape: tuple) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(images of ``shape``, labels, class count) of the POOD data: ``ood_dataset``'s training
    images, else scikit-learn's digits; at most ``ood_images`` of them (seeded)."""
    options = spec.poison.options
    if options.ood_dataset is None:
        x, y = digits_like(shape)
        classes = 10
    else:
        bundle = load_data(DataSpec(dataset=options.ood_dataset, root=spec.data.root), spec.seed)
        if not isinstance(bundle.train, ImageSet):
            raise TradeoffError(f"poison.ood_dataset {options.ood_dataset!r} is streamed; name an in-memory dataset.")
        x, y, classes = fit_images(bundle.train.x, shape), bundle.train.targets.cpu(), bundle.num_classes
    if options.ood_images is not None and options.ood_images < len(y):
        keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(spec.seed))[:options.ood_images]
        x, y = x[keep], y[keep]
    return x, y, classes


def surrogate(spec: Spec, ood_x, ood_y, ood_classes: int, target_images, device, log):
    """The spec's model with ``ood_classes + 1`` outputs (the last the target class), standard
    training on POOD and target images, then the warm-up on the target images alone."""
    options = spec.poison.options
    target_labels = torch.full((len(target_images),), ood_classes, dtype=torch.long)
    both = ImageSet(torch.cat([ood_x, target_images.cpu()]), torch.cat([ood_y, target_labels]))
    plain = plain_spec(spec, options.surrogate_epochs)
    model = model_for(plain, both.shape, ood_classes + 1, device)
    phases = [("surrogate", both, options.surrogate_epochs),
              ("warm-up", ImageSet(target_images.cpu(), target_labels), options.warmup_epochs)]
    for name, images, epochs in phases:
        if epochs == 0:
            continue
        result = train_quietly(model, images, plain_spec(spec, epochs), device)
        log(f"narcissus {name}: {len(images)} images, {result.steps} steps in {result.seconds:.1f} s "
            f"(final loss {result.final_loss:.3f})")
    return model.eval()


def plain_spec(spec: Spec, epochs: int) -> Spec:
    """The spec as standard training of its model, unpoisoned, for ``epochs`` epochs."""
    return dataclasses.replace(
        spec, poison=PoisonSpec(method="none"), adversarial_defense=AdversarialDefenseSpec(),
        model=dataclasses.replace(spec.model, checkpoint=None),
        train=dataclasses.replace(spec.train, epochs=epochs, steps=None, compile=False))
