"""Backdoor defences by name, run as steps after training (see tradeoff.experiment)."""

from __future__ import annotations

from tradeoff.registry import Registry

BACKDOOR_DEFENSES: Registry = Registry("backdoor defence")


def run_backdoor_defense(entry: dict, outcome, log, show_progress: bool) -> dict:
    """Run one ``backdoor_defenses`` entry ({name: ..., options...}) on a trained outcome;
    returns metrics prefixed with the defence's name."""
    options = {k: v for k, v in entry.items() if k != "name"}
    return BACKDOOR_DEFENSES.get(entry["name"])(outcome, log=log, show_progress=show_progress, **options)

