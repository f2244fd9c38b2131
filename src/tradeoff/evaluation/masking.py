"""Gradient-masking checks: signs that a model's adversarial robustness is an artefact of a
gradient the attack cannot follow rather than of robustness (Athalye et al. 2018; Carlini et
al. 2019's checklist), cheap enough to run on every adversarial evaluation.

On a fixed seeded subset of the test set (:func:`masking_subset`, the same images for every run of
a dataset and size, so a standard run and its adversarially trained twin are checked on the same
images), with the evaluation attack:

- ``masking_eps1_robustness``: the attack with a budget that covers the whole input cube (L-inf
  eps 1.0 for images in [0, 1]; L2 eps sqrt(d), the cube's diagonal), its step scaled by the same
  factor. Any model can be driven to 0% by it: 1% or more is a warning.
- ``masking_5x_robustness``: the attack with 5x its steps (same step size). A stronger attack
  leaving more than 1 point more accuracy than ``masking_robustness_same_images`` (the attack
  as it is, on these images) is a warning.
- ``masking_transfer_robustness``: adversarial examples crafted on the run's standard twin, set
  by :mod:`tradeoff.pipeline.transfer` once both runs are finished: a black-box attack leaving less
  robustness than the white-box one is a warning.

A warning is one sentence; ``masking_warnings`` joins them with "; " ("" when every check passed).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from tradeoff.attacks.pgd import perturb
from tradeoff.core.device import autocast_for
from tradeoff.core.spec import AttackSpec, EvalSpec
from tradeoff.models.mode import model_mode

MASKING_SEED = 0  # the subset is the same whatever the run's seed: twins are checked on the same images
EPS1_LIMIT = 0.01  # robustness under the cube-covering attack must stay below this
STEPS_FACTOR = 5
STEPS_SLACK = 0.01  # 5x the steps may leave at most this much more robustness
WARNINGS_KEY = "masking_warnings"


def checks_on(eval_spec: EvalSpec) -> bool:
    """Whether an evaluation runs the checks: only an adversarial evaluation has an attack to check."""
    return eval_spec.adversarial and eval_spec.masking_checks


def masking_subset(test_set, n: int):
    """The first ``n`` of a :data:`MASKING_SEED`-seeded permutation of the test set (the whole set
    when it is smaller), in index order."""
    if n >= len(test_set):
        return test_set
    g = torch.Generator().manual_seed(MASKING_SEED)
    return test_set.take(torch.randperm(len(test_set), generator=g)[:n].sort().values)


def cube_attack(a: AttackSpec, shape: tuple) -> AttackSpec:
    """``a`` with a budget covering every image in [0, 1]^d from any image in it: L-inf eps 1.0,
    L2 eps sqrt(d) (the cube's diagonal); the step scaled by the same factor as eps."""
    eps = 1.0 if a.norm == "linf" else math.sqrt(math.prod(shape))
    scale = eps / a.eps if a.eps else 1.0
    return dataclasses.replace(a, eps=eps, step_size=(a.step_size or eps) * scale)


def robust_accuracy(model, images, attack: AttackSpec, device, precision: str = "fp32", batch_size: int = 500,
                    source=None) -> float:
    """Accuracy of ``model`` on ``images`` under ``attack``, crafted on ``source`` (default: the
    model itself, a white-box attack; another model: a transfer attack)."""
    source = source if source is not None else model
    correct, n = 0, 0
    with model_mode(model, False), model_mode(source, False), autocast_for(device, precision):
        for xb, yb in images.loader(batch_size, device=device):
            x_adv = perturb(source, xb, yb, attack)
            with torch.no_grad():
                correct += int((model(x_adv).argmax(1) == yb).sum())
            n += len(yb)
    return correct / max(n, 1)


def masking_checks(model, test_set, shape: tuple, eval_spec: EvalSpec, device, precision: str = "fp32") -> dict:
    """The in-run checks (the cube-covering attack, 5x the steps) on the masking subset of
    ``test_set`` (images of ``shape``, (C, H, W)): their robustness values and ``masking_warnings``."""
    images = masking_subset(test_set, eval_spec.masking_images)
    a = eval_spec.attack

    def under(attack: AttackSpec) -> float:
        return robust_accuracy(model, images, attack, device, precision, eval_spec.batch_size)

    same = under(a)
    cube = cube_attack(a, shape)
    eps1 = under(cube)
    more = under(dataclasses.replace(a, steps=a.steps * STEPS_FACTOR))
    return {"masking_images": len(images), "masking_robustness_same_images": same,
            "masking_eps1_robustness": eps1, "masking_5x_robustness": more,
            WARNINGS_KEY: join_warnings(in_run_warnings(same, eps1, more, cube))}


def in_run_warnings(same: float, eps1: float, more: float, cube: AttackSpec) -> list[str]:
    out = []
    if eps1 >= EPS1_LIMIT:
        out.append(f"possible gradient masking: {100 * eps1:.1f}% robustness at {cube.norm} eps {cube.eps:.3g} "
                   f"(the whole input range), where any model should reach 0%")
    if more - same > STEPS_SLACK:
        out.append(f"possible gradient masking: {STEPS_FACTOR}x the attack's steps leaves {100 * more:.1f}% "
                   f"robustness, more than the {100 * same:.1f}% of the attack as it is")
    return out


def transfer_warning(transfer: float, white_box: float) -> str | None:
    if transfer < white_box:
        return (f"possible gradient masking: adversarial examples transferred from the standard twin leave "
                f"{100 * transfer:.1f}% robustness, less than the white-box attack's {100 * white_box:.1f}%")
    return None


def join_warnings(sentences: list[str]) -> str:
    return "; ".join(s for s in sentences if s)


def split_warnings(joined: str | None) -> list[str]:
    return [s for s in (joined or "").split("; ") if s]
