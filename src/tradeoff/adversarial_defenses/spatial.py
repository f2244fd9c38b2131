"""Spatial and composite adversarial training.

- ``spatial`` (Engstrom et al. 2019, "Exploring the Landscape of Spatial Robustness"): every batch
  replaced by each image's worst rotation and translation, over the grid (5 x 5 x 31 by default)
  or the worst of ``draws`` random ones (10, the paper's worst-of-10 training).
- ``composite`` (Gao et al. 2023, "On the Effectiveness of Adversarial Training against Backdoor
  Attacks", as their reference code): the spatial worst case first, then L-inf PGD of
  ``adversarial_defense.attack`` (the one PGD, with the eps ramp) on the transformed image.

Both craft their examples in ``adversarial_defense.attack_model_mode``, like PGD training, and
compose with the regularisers (cross-Lipschitz, denoising blocks) the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from tradeoff.adversarial_defenses.base import ATTACK_MODEL_MODES, OBJECTIVES, Objective
from tradeoff.attacks.pgd import perturb
from tradeoff.attacks.spatial import spatial_attack
from tradeoff.core.spec import SpatialSpec, option


@dataclass
class SpatialTrainingOptions(SpatialSpec):
    """The transformations' ranges and grid (:class:`SpatialSpec`) and how the worst is found."""

    search: Literal["random", "grid"] = option("random", doc="worst of `draws` random transformations, or of the grid")
    draws: int = option(10, doc="random transformations tried per image (search: random)", min=1)


@OBJECTIVES.register("spatial", options=SpatialTrainingOptions)
class SpatialTraining(Objective):
    """Engstrom et al. 2019: every batch at its worst rotation and translation."""

    def spatial_inputs(self, model, x, y) -> torch.Tensor:
        o = self.options
        with ATTACK_MODEL_MODES.get(self.defense.attack_model_mode)(model):
            moved, _ = spatial_attack(model, x, y, o, o.search, o.draws)
        return moved

    def inputs(self, model, x, y, step):
        return self.spatial_inputs(model, x, y)

    @classmethod
    def label(cls, spec) -> str:
        """'spatial', with the ranges where they are not the defaults (e.g. 'spatial-r15-t1.5')."""
        d = spec.adversarial_defense
        o = OBJECTIVES.options_or_default(d.objective, d.options)
        default = SpatialTrainingOptions()
        budget = "" if (o.max_rotation, o.max_translation) == (default.max_rotation, default.max_translation) \
            else f"-r{o.max_rotation:g}-t{o.max_translation:g}"
        return d.objective + budget + ("-grid" if o.search == "grid" else "")


@OBJECTIVES.register("composite", options=SpatialTrainingOptions)
class CompositeTraining(SpatialTraining):
    """Gao et al. 2023: the spatial worst case, then L-inf PGD on the transformed image."""

    attack_norm = "linf"

    def inputs(self, model, x, y, step):
        moved = self.spatial_inputs(model, x, y)
        with ATTACK_MODEL_MODES.get(self.defense.attack_model_mode)(model):
            return perturb(model, moved, y, self.ramped(self.defense.attack, step))
