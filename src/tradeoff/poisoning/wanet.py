"""WaNet's poisoning (Nguyen & Tran, ICLR 2021), as its official training does it: in every
training batch, the first ``poison_ratio`` of the images (rounded down) are warped with the
fixed grid of the ``wanet`` trigger and relabelled to the target, and the next ``cross_ratio``
times as many are noise images, warped with the grid plus random per-pixel offsets and keeping
their labels (so that the model learns the one warp, not warping in general). The batch is
already shuffled, so its first images are a fresh random draw each time; the noise comes from
the batch's own generator (:func:`tradeoff.data.batches.batch_generator`), so a resumed run gets
the same batches. Nothing is poisoned before training and the plan names no images.

``poisoned_set: fixed`` is the variant with one poisoned set chosen before training:
``poison_ratio`` of the training set, drawn from the other classes, warped once and relabelled
(dirty-label's choice), without noise images; in-memory datasets only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from tradeoff.core.errors import TradeoffError
from tradeoff.core.spec import option
from tradeoff.poisoning.base import BATCH_POISONING, POISONING_METHODS, SPEC_CHECKS, choose
from tradeoff.triggers.wanet import Warp, warp


@dataclass
class WarpPoisoningOptions:
    poison_ratio: float = option(0.1, doc="share of every training batch warped and relabelled to the target "
                                          "(fixed: of the training set)", min=0, max=1)
    cross_ratio: float = option(2.0, doc="noise images per poisoned image in every batch: the warp plus random "
                                         "offsets, labels kept (not in the fixed variant)", min=0)
    poisoned_set: Literal["per-batch", "fixed"] = option(
        "per-batch", doc="per-batch: drawn afresh in every batch (the original); fixed: one set chosen before "
                         "training, no noise images")


def batch_counts(n: int, poison_ratio: float, cross_ratio: float) -> tuple[int, int]:
    """(poisoned, noise) images of a batch of n, as the original rounds them (down)."""
    poisoned = int(n * poison_ratio)
    return poisoned, min(int(poisoned * cross_ratio), n - poisoned)


@POISONING_METHODS.register("wanet", options=WarpPoisoningOptions)
def wanet(labels: torch.Tensor, poison_spec, g: torch.Generator, num_classes: int):
    """Images warped (the wanet trigger) and relabelled in every batch, with noise-warped ones (WaNet)."""
    options = poison_spec.options
    if options.poisoned_set == "per-batch":
        return torch.zeros(0, dtype=torch.long), labels.clone()
    candidates = (labels != poison_spec.target).nonzero().flatten()
    count = round(options.poison_ratio * len(labels))
    if count > len(candidates):
        raise TradeoffError(f"poison.poison_ratio {options.poison_ratio} asks for {count} images but only "
                            f"{len(candidates)} are outside the target class.")
    chosen = choose(candidates, count, g)
    new_labels = labels.clone()
    new_labels[chosen] = poison_spec.target
    return chosen, new_labels


class WarpEveryBatch:
    """The per-batch step (a :class:`~tradeoff.data.batches.BatchPoisoning`): warped and relabelled
    images first, noise-warped ones next, the rest as they were."""

    def __init__(self, trigger: Warp, target: int, poison_ratio: float, cross_ratio: float):
        self.trigger, self.target = trigger, target
        self.poison_ratio, self.cross_ratio = poison_ratio, cross_ratio

    def __call__(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
        poisoned, noise = batch_counts(len(y), self.poison_ratio, self.cross_ratio)
        if poisoned == 0 and noise == 0:
            return x, y
        shape = tuple(x.shape[1:])
        warped = self.trigger.apply(x[:poisoned])
        noisy = warp(x[poisoned:poisoned + noise], self.trigger.noisy_grids(noise, shape, generator, x.device))
        x = torch.cat([warped, noisy.to(x.dtype), x[poisoned + noise:]])
        y = torch.cat([torch.full((poisoned,), self.target, dtype=y.dtype, device=y.device), y[poisoned:]])
        return x, y


def per_batch_step(options: WarpPoisoningOptions, trigger, target: int):
    if options.poisoned_set != "per-batch":
        return None
    if not isinstance(trigger, Warp):
        raise TradeoffError("poison.method wanet warps its images: set trigger.kind to wanet.")
    return WarpEveryBatch(trigger, target, options.poison_ratio, options.cross_ratio)


BATCH_POISONING["wanet"] = per_batch_step


def check_warp_spec(poison_spec, trigger_kind: str, streamed: bool) -> None:
    """The wanet method needs the wanet trigger and room in a batch; a streamed set warps per batch only."""
    per_batch = poison_spec.method == "wanet" and poison_spec.options.poisoned_set == "per-batch"
    if poison_spec.method == "wanet" and trigger_kind != "wanet":
        raise TradeoffError(f"poison.method wanet warps its images: set trigger.kind to wanet, not {trigger_kind!r}.")
    if per_batch and poison_spec.options.poison_ratio * (1 + poison_spec.options.cross_ratio) > 1:
        o = poison_spec.options
        raise TradeoffError(f"poison.poison_ratio {o.poison_ratio:g} with cross_ratio {o.cross_ratio:g} asks for "
                            f"{100 * o.poison_ratio * (1 + o.cross_ratio):.0f}% of every batch; keep "
                            "poison_ratio * (1 + cross_ratio) at most 1.")
    if trigger_kind == "wanet" and streamed and not per_batch:
        raise TradeoffError("a streamed dataset is warped batch by batch only: with trigger.kind wanet set "
                            "poison.method wanet and poisoned_set per-batch.")


SPEC_CHECKS.append(check_warp_spec)
