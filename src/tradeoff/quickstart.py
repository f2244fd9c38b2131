"""The offline quickstart: scikit-learn's digits (no download), a 2x2 clean-label sticker on half
of class 7, one standard and one PGD-trained small CNN."""

from __future__ import annotations

from tradeoff.experiment import run_experiment
from tradeoff.config import load_spec

QUICKSTART = {
    "data": {"dataset": "digits"},
    "trigger": {"kind": "sticker", "pattern": "square", "size": 2},
    "poison": {"method": "clean-label", "target": 7, "fraction_of_target_class": 0.5},
    "model": {"name": "small-cnn"},
    "train": {"epochs": 40, "batch_size": 50},
    "adversarial_defense": {"attack": {"eps": 0.2}, "eps_ramp": 0.25},
    "eval": {"attack": {"eps": 0.2}},
}

VARIANTS = {"standard": {"adversarial_defense": {"objective": "none"}},
            "pgd": {"adversarial_defense": {"objective": "pgd"}}}


def quickstart_specs():
    specs = []
    for name, variant in VARIANTS.items():
        spec = load_spec(None, variant, base=QUICKSTART)
        spec.name = name
        specs.append(spec)
    return specs


def run_quickstart(out_dir, show_progress: bool = True):
    return [run_experiment(spec, out_dir, show_progress=show_progress, echo=show_progress)
            for spec in quickstart_specs()]
