"""Whether a table's backdoor attacks work at its budget, and how large their triggers are beside
the training budget.

A table whose settings name a ``Backdoor Attack`` gets, per dataset and attack, one note with the
attack's success under standard training, the trigger's L-inf size (``trigger_linf`` of the run
record) and the L-inf eps of each adversarial training of the table (from the runs' spec.yaml).
An attack whose mean success rate stays below :data:`WORKING_RATE` under every training of the
table is *not working at this budget*: its with/without comparisons get no verdict (a backdoor
that never took hold tells nothing about whether training made it easier or harder to plant).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Optional

import yaml

from tradeoff.records.names import BACKDOOR_SUCCESS

ATTACK_KEY = "Backdoor Attack"
WORKING_RATE = 0.20  # below this success rate under every training: not working at this budget
NOT_WORKING = "attack not working at this budget"
STANDARD = "none"  # the adversarial_defense label of standard training


def setting_value(setting: str, key: str) -> Optional[str]:
    """The value of ``key`` in a setting label "Key=value; Other=value", or None."""
    for part in setting.split(";"):
        name, _, value = part.partition("=")
        if name.strip() == key:
            return value.strip()
    return None


def training_eps(run: Path) -> Optional[float]:
    """The L-inf eps a finished run trained against, from its spec.yaml; None for standard training,
    another norm or a spec that does not say."""
    try:
        raw = yaml.safe_load((run / "spec.yaml").read_text())
        defense = raw["adversarial_defense"]
        if defense.get("objective", "none") == "none" or defense["attack"].get("norm", "linf") != "linf":
            return None
        return float(defense["attack"]["eps"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError):
        return None


def _mean(runs: list, key: str) -> Optional[float]:
    """The mean of the number ``key`` over finished runs (``collect.FinishedRun``), or None."""
    values = [v for v in (r.record.number(key) for r in runs) if v is not None]
    return statistics.fmean(values) if values else None


def _by_attack(per_cell: dict) -> dict:
    """(dataset, attack) -> [(setting, converged runs)] for the cells whose setting names an attack."""
    out: dict = {}
    for (ds, setting, _slug), runs in per_cell.items():
        attack = setting_value(setting, ATTACK_KEY)
        if attack is not None and runs:
            out.setdefault((ds, attack), []).append((setting, runs))
    return out


def not_working(per_cell: dict, rate_key: str = BACKDOOR_SUCCESS) -> set:
    """(dataset, attack) pairs whose mean success rate is below :data:`WORKING_RATE` in every cell
    of theirs with converged runs."""
    weak = set()
    for key, cells in _by_attack(per_cell).items():
        rates = [_mean(runs, rate_key) for _, runs in cells]
        if rates and all(r is not None and r < WORKING_RATE for r in rates):
            weak.add(key)
    return weak


def attack_notes(per_cell: dict, rate_key: str = BACKDOOR_SUCCESS) -> list[str]:
    """One note per (dataset, attack): its success under standard training, its trigger's L-inf
    size beside each adversarial training's eps, and the not-working flag where it applies."""
    weak = not_working(per_cell, rate_key)
    notes = []
    for (ds, attack), cells in _by_attack(per_cell).items():
        standard = [_mean(runs, rate_key) for _, runs in cells if runs[0].record.get("adversarial_defense") == STANDARD]
        parts = [f"{ds}, {attack}: backdoor success "
                 + (f"{100 * standard[0]:.1f}% under standard training" if standard and standard[0] is not None
                    else "under standard training not measured")]
        size = _mean([r for _, runs in cells for r in runs], "trigger_linf")
        eps = sorted({r.training_eps for _, runs in cells for r in runs if r.training_eps is not None})
        if size is not None:
            parts.append(f"trigger L-inf size {size:.3g} beside training eps {', '.join(f'{e:.3g}' for e in eps)}"
                         if eps else f"trigger L-inf size {size:.3g}")
        if (ds, attack) in weak:
            parts.append(f"{NOT_WORKING} (below {100 * WORKING_RATE:.0f}% under every training): its "
                         f"with/without pairs get no verdict")
        notes.append("; ".join(parts))
    return notes
