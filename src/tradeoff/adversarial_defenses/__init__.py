"""Adversarial defences: training objectives by name (``tradeoff list objectives``), with
regularisers and denoising blocks that compose with any of them. Each objective declares its
options beside its code and registers itself."""

from tradeoff.adversarial_defenses import adversarial, ibp, mart, regularizers, spatial, trades  # noqa: F401  (registration)
from tradeoff.adversarial_defenses.base import (
                                                ATTACK_MODEL_MODES,
                                                OBJECTIVES,
                                                REGULARIZERS,
                                                Objective,
                                                Regularized,
                                                adversarial_defense_label,
                                                make_objective,
)

__all__ = ["ATTACK_MODEL_MODES", "OBJECTIVES", "REGULARIZERS", "Objective", "Regularized",
           "adversarial_defense_label", "make_objective"]
