"""Narcissus poisoning (Zeng et al., CCS 2023): clean-label, with a trigger optimised to push a
surrogate model towards the target class. The attacker knows only the target class's training
images and out-of-distribution (POOD) data: by default scikit-learn's 8 x 8 digits (they ship with
the library) resized to the dataset's image shape, or a dataset the spec names (``ood_dataset``).

1. The surrogate: the spec's model with one class per POOD class plus one for the target class,
   trained on the POOD images and the target class's images (``surrogate_epochs``);
2. the warm-up: ``warmup_epochs`` of the surrogate on the target class's images alone;
3. the trigger: delta, from zero, minimising the surrogate's cross-entropy of
   ``clip(x + delta)`` towards the target class over the target class's images, with RAdam
   (``lr``) for ``rounds`` passes, projected onto the L-inf ball ``eps`` after every step.

Then a budget of the whole training set (``fraction_of_training_set``, as low as 0.05% in the
original; the count rounded up, at least one image) is drawn from the target class and gets
``x + delta``; labels kept. At test time the trigger is magnified (the ``narcissus`` trigger's
``magnification``). Steps 1-3 need the images and a model, so the pipeline makes them
(:mod:`tradeoff.training.narcissus`); this module holds the plan and the optimisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from tradeoff.core.errors import TradeoffError
from tradeoff.core.registry import SyntheticCut
from tradeoff.core.spec import option
from tradeoff.poisoning.base import POISONING_METHODS, SPEC_CHECKS, choose


@dataclass
class NarcissusOptions:
    fraction_of_training_set: float = option(0.0005, doc="share of the whole training set poisoned (drawn from "
                                                         "the target class; count rounded up, at least 1)",
                                             above=0, max=1)
    surrogate_epochs: int = option(200, doc="the surrogate's training on POOD and target-class images", min=1)
    warmup_epochs: int = option(5, doc="the surrogate's further training on the target class's images alone",
                                min=0)
    rounds: int = option(1000, doc="passes of the trigger optimisation over the target class's images", min=1)
    lr: float = option(0.01, doc="RAdam's learning rate for the trigger", above=0)
    eps: float = option(16 / 255, doc="L-inf bound of the trigger delta", above=0, max=1)
    ood_dataset: Optional[str] = option(None, doc="POOD data: a dataset by name (its training images, resized); "
                                                  "unset: scikit-learn's digits")
    ood_images: Optional[int] = option(None, doc="at most this many POOD images (a seeded subset)", min=1)


def poison_count(train_images: int, fraction: float) -> int:
    """The budget in images: ``fraction`` of the training set, rounded up, at least one."""
    return max(1, math.ceil(fraction * train_images - 1e-9))


# a rehearsal on generated data: one epoch of surrogate, no warm-up, one optimisation round
@POISONING_METHODS.register("narcissus", options=NarcissusOptions,
                            synthetic=SyntheticCut(options={"surrogate_epochs": 1, "warmup_epochs": 0, "rounds": 1}))
def narcissus(labels: torch.Tensor, poison_spec, g: torch.Generator, num_classes: int):
    """Target-class images with a trigger optimised on a surrogate; labels kept (Narcissus)."""
    fraction = poison_spec.options.fraction_of_training_set
    candidates = (labels == poison_spec.target).nonzero().flatten()
    count = poison_count(len(labels), fraction)
    if count > len(candidates):
        raise TradeoffError(f"poison.fraction_of_training_set {fraction} asks for {count} images but the target "
                            f"class has {len(candidates)}.")
    return choose(candidates, count, g), labels.clone()


def digits_like(shape: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 digits (8 x 8, 16 grey levels) as (N, C, H, W) in [0, 1] of ``shape``
    (bilinear resize, the grey level in every channel), with their 10 labels."""
    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    return fit_images(x, shape), torch.from_numpy(digits.target).long()


def fit_images(x: torch.Tensor, shape: tuple) -> torch.Tensor:
    """Images (N, c, h, w) in [0, 1] resized (bilinear) to (C, H, W); one channel is repeated, C
    channels to one are averaged."""
    channels, height, width = shape
    x = F.interpolate(x.float(), size=(height, width), mode="bilinear", align_corners=False).clamp(0, 1)
    if x.shape[1] != channels:
        x = x.mean(1, keepdim=True).expand(-1, channels, -1, -1).contiguous()
    return x


def optimise_trigger(model, x: torch.Tensor, label: int, rounds: int, lr: float, eps: float, batch_size: int,
                     generator: torch.Generator) -> tuple[torch.Tensor, list[float]]:
    """Narcissus's trigger: delta (C, H, W) from zero, minimising the mean cross-entropy of
    ``model`` (eval mode) on clip(x + delta, 0, 1) towards ``label``, ``rounds`` shuffled passes
    over x in batches, RAdam at ``lr``, delta clamped to [-eps, eps] after every step. Returns
    (delta, the mean loss of each pass)."""
    was_training = model.training
    model.eval()
    delta = torch.zeros(x.shape[1:], device=x.device, requires_grad=True)
    optimiser = torch.optim.RAdam([delta], lr=lr)
    losses = []
    for _ in range(rounds):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        total = 0.0
        for start in range(0, len(x), batch_size):
            xb = x[order[start:start + batch_size]]
            logits = model((xb + delta).clamp(0, 1)).float()
            loss = F.cross_entropy(logits, torch.full((len(xb),), label, device=x.device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            with torch.no_grad():
                delta.clamp_(-eps, eps)
            total += loss.item() * len(xb)
        losses.append(total / len(x))
    model.train(was_training)
    return delta.detach(), losses


def check_narcissus_spec(poison_spec, trigger_kind: str, streamed: bool) -> None:
    """Narcissus's method and trigger go together, on an in-memory dataset."""
    if poison_spec.method == "narcissus" and trigger_kind != "narcissus":
        raise TradeoffError(f"poison.method narcissus optimises its trigger: set trigger.kind to narcissus, not "
                            f"{trigger_kind!r}.")
    if trigger_kind == "narcissus" and poison_spec.method != "narcissus":
        raise TradeoffError(f"trigger.kind narcissus is optimised by poison.method narcissus; set it (not "
                            f"{poison_spec.method!r}).")
    if poison_spec.method == "narcissus" and streamed:
        raise TradeoffError("poison.method narcissus reads the target class's images in memory; a streamed "
                            "dataset is not supported.")


SPEC_CHECKS.append(check_narcissus_spec)
