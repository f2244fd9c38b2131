"""Poisoning methods by name (``tradeoff list poisoning``): which training images get the
trigger, and whether their labels change. Each method is one module that declares its options
(its poison rate, named for what it counts) and registers itself."""

from tradeoff.poisoning.base import POISONING_METHODS, PerturbationOptions, PoisonPlan, perturbs_images, plan_poison
from tradeoff.poisoning import clean_label, dirty_label, label_consistent  # noqa: F401  (register the methods)
from tradeoff.poisoning.label_consistent import perturb_before_stamping

__all__ = ["POISONING_METHODS", "PerturbationOptions", "PoisonPlan", "perturb_before_stamping", "perturbs_images",
           "plan_poison"]
