"""Poisoning methods by name (``tradeoff list poisoning``): which training images get the
trigger, and whether their labels change. Each method is one module that declares its options
(its poison rate, named for what it counts) and registers itself."""

from tradeoff.poisoning import (  # noqa: F401  (register the methods)
    clean_label,
    dirty_label,
    label_consistent,
    narcissus,
    wanet,
)
from tradeoff.poisoning.base import (
    POISONING_METHODS,
    BackdoorTarget,
    PerturbationOptions,
    PoisonPlan,
    backdoor_target,
    check_poisoning,
    is_all_to_all,
    perturbs_images,
    plan_poison,
)
from tradeoff.poisoning.label_consistent import perturb_before_stamping

__all__ = ["POISONING_METHODS", "BackdoorTarget", "PerturbationOptions", "PoisonPlan", "backdoor_target",
           "check_poisoning", "is_all_to_all", "perturb_before_stamping", "perturbs_images", "plan_poison"]
