"""Protocol defaults: the dataset-dependent fields a spec leaves unset (``None``), filled from the
dataset's protocol, so that a run folder's ``spec.yaml`` is complete and reproduces the run."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from tradeoff.adversarial_defenses import OBJECTIVES
from tradeoff.backdoor_defenses import as_entry
from tradeoff.core.spec import AttackSpec, BackdoorDefenseSpec, Spec
from tradeoff.data import DATASETS, Protocol


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
    # Attack budgets inside a component's options (label-consistent poisoning's perturbation, a
    # defence's adversarial examples) get the same protocol defaults.
    spec.poison = dataclasses.replace(spec.poison, options=with_budgets(spec.poison.options, defaults))
    spec.backdoor_defenses = [resolve_backdoor_defense(entry, spec.data.dataset) for entry in spec.backdoor_defenses]
    return spec


def resolve_backdoor_defense(entry: BackdoorDefenseSpec | Mapping, dataset: str) -> BackdoorDefenseSpec:
    """A backdoor-defence entry (a mapping from a Python caller is parsed) with the attack budgets
    in its options filled from ``dataset``'s protocol: in a run, and on a finished folder."""
    entry = as_entry(entry)
    return dataclasses.replace(entry, options=with_budgets(entry.options, DATASETS.get(dataset).protocol))


def with_budgets(options, defaults: Protocol):
    """``options`` (a component's options dataclass, or None) with every :class:`AttackSpec` field
    resolved by :func:`resolve_attack`; the same object when it has none."""
    if not dataclasses.is_dataclass(options):
        return options
    budgets = {f.name: resolve_attack(getattr(options, f.name), defaults) for f in dataclasses.fields(options)
               if isinstance(getattr(options, f.name), AttackSpec)}
    return dataclasses.replace(options, **budgets) if budgets else options


def resolve_attack(a: AttackSpec, defaults: Protocol) -> AttackSpec:
    """Unset budget fields from the protocol; the protocol's step is scaled with a changed eps."""
    eps = a.eps if a.eps is not None else (defaults.eps if a.norm == "linf" else defaults.eps_l2)
    step = a.step_size
    if step is None:
        step = defaults.step_size * (eps / defaults.eps) if a.norm == "linf" else eps / 4
    return dataclasses.replace(a, eps=eps, step_size=step, steps=a.steps if a.steps is not None else defaults.steps)
