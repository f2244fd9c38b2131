"""Protocol defaults: the dataset-dependent fields a spec leaves unset (``None``), filled from the
dataset's protocol, so that a run folder's ``spec.yaml`` is complete and reproduces the run."""

from __future__ import annotations

import dataclasses

from tradeoff.adversarial_defenses import OBJECTIVES
from tradeoff.data import DATASETS, Protocol
from tradeoff.poisoning import perturbs_images
from tradeoff.spec import AttackSpec, Spec


def resolve(spec: Spec) -> Spec:
    """A copy of ``spec`` with the dataset's protocol defaults filled in (sections are replaced,
    never mutated)."""
    spec = dataclasses.replace(spec)
    defaults = DATASETS.get(spec.data.dataset).protocol
    if spec.data.augment is None:
        spec.data = dataclasses.replace(spec.data, augment=defaults.augment)
    if spec.model.name is None:
        spec.model = dataclasses.replace(spec.model, name=defaults.model)
    spec.train = dataclasses.replace(spec.train, **{key: getattr(defaults, key) for key in
                                                    ("optimizer", "lr", "weight_decay")
                                                    if getattr(spec.train, key) is None})
    d = spec.adversarial_defense
    train_attack = d.attack
    forced_norm = getattr(OBJECTIVES.get(d.objective), "attack_norm", None)  # e.g. 'l2-pgd'
    if forced_norm:
        train_attack = dataclasses.replace(train_attack, norm=forced_norm)
    spec.adversarial_defense = dataclasses.replace(d, attack=resolve_attack(train_attack, defaults))
    spec.eval = dataclasses.replace(spec.eval, attack=resolve_attack(spec.eval.attack, defaults))
    if perturbs_images(spec.poison):  # label-consistent: the budget of the perturbation before stamping
        options = spec.poison.options
        spec.poison = dataclasses.replace(spec.poison, options=dataclasses.replace(
            options, perturbation=resolve_attack(options.perturbation, defaults)))
    return spec


def resolve_attack(a: AttackSpec, defaults: Protocol) -> AttackSpec:
    """Unset budget fields from the protocol; the protocol's step is scaled with a changed eps."""
    eps = a.eps if a.eps is not None else (defaults.eps if a.norm == "linf" else defaults.eps_l2)
    step = a.step_size
    if step is None:
        step = defaults.step_size * (eps / defaults.eps) if a.norm == "linf" else eps / 4
    return dataclasses.replace(a, eps=eps, step_size=step, steps=a.steps if a.steps is not None else defaults.steps)
