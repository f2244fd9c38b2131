"""Label-consistent poisoning (Turner et al. 2019, "Label-Consistent Backdoor Attacks"): the
clean-label choice of target-class images, each first perturbed adversarially against a
surrogate model (PGD within ``perturbation.eps`` on its true label, so that the image's own
features become harder to learn from), then stamped. Labels are kept.

The plan is drawn here from the labels alone (as clean-label's, for the same seed); the
perturbation needs the images and a model, so the pipeline makes it (:mod:`tradeoff.training.surrogate`)
with :func:`perturb_before_stamping` and the data set stamps the perturbed images. In-memory
datasets only: a streamed one is refused when the spec is validated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tradeoff.attacks.pgd import perturb
from tradeoff.core.spec import AttackSpec
from tradeoff.poisoning.base import POISONING_METHODS, PerturbationOptions
from tradeoff.poisoning.clean_label import CleanLabelOptions, clean_label


@dataclass
class LabelConsistentOptions(PerturbationOptions, CleanLabelOptions):
    """Clean-label's share of the target class, then the perturbation and its surrogate."""


@POISONING_METHODS.register("label-consistent", options=LabelConsistentOptions)
def label_consistent(labels: torch.Tensor, poison_spec, g: torch.Generator, num_classes: int):
    """Clean-label images adversarially perturbed against a surrogate, then stamped; labels kept."""
    return clean_label(labels, poison_spec, g, num_classes)


def perturb_before_stamping(model, x: torch.Tensor, y: torch.Tensor, attack: AttackSpec, seed: int,
                            batch_size: int = 500) -> torch.Tensor:
    """Untargeted PGD of ``attack`` (resolved: eps, step_size and steps set) on ``model`` in eval
    mode for images x (P, C, H, W) in [0, 1] with labels y, ``batch_size`` images at a time. The
    random starts come from a generator seeded with ``seed`` that leaves the caller's untouched:
    the same inputs give the same images. Returns the perturbed images, detached, on x's device."""
    was_training = model.training
    model.eval()
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        out = torch.cat([perturb(model, x[i:i + batch_size], y[i:i + batch_size], attack)
                         for i in range(0, len(x), batch_size)]) if len(x) else x.detach().clone()
    model.train(was_training)
    return out
