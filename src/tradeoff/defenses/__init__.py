"""Backdoor defences by name, run as steps after training (see tradeoff.experiment) or on a
finished run folder (``tradeoff defend``).

Each defence is registered with the dataclass of its options; a spec entry
``{name: spectral, variant: textbook, ...}`` is checked against that dataclass when the spec is
validated (unknown or mistyped options are one clear error before any training starts). A defence
returns a flat dict of metrics prefixed with its own short name (``spectral_``, ``clustering_``,
``cleanse_``) and may leave tensors to be saved in the run folder under
``outcome.extras["artifacts"]`` ({file name: {tensor name: tensor}}).
"""

from __future__ import annotations

import functools

from tradeoff.registry import Registry

BACKDOOR_DEFENSES: Registry = Registry("backdoor defence")


def parse_options(name: str, options_cls, options: dict):
    """The defence's options dataclass from a spec entry's keys (types and ranges checked)."""
    from tradeoff.spec import build_section

    opts = build_section(options_cls, dict(options), f"backdoor_defenses.{name}")
    opts.check()
    return opts


def register_defense(name: str, options_cls):
    """Register ``fn(outcome, opts, log, show_progress) -> dict`` under ``name``; the registered
    callable has the common signature ``(outcome, log, show_progress, **options)``."""

    def add(fn):
        @functools.wraps(fn)
        def run(outcome, log=print, show_progress=False, **options):
            return fn(outcome, parse_options(name, options_cls, options), log, show_progress)

        run.options = options_cls
        BACKDOOR_DEFENSES.register(name)(run)
        return fn

    return add


def check_entry(entry: dict) -> None:
    """Validate one ``backdoor_defenses`` entry without running it."""
    fn = BACKDOOR_DEFENSES.get(entry["name"])
    parse_options(entry["name"], fn.options, {k: v for k, v in entry.items() if k != "name"})


def run_backdoor_defense(entry: dict, outcome, log, show_progress: bool) -> dict:
    """Run one ``backdoor_defenses`` entry ({name: ..., options...}) on a trained outcome;
    returns metrics prefixed with the defence's name."""
    options = {k: v for k, v in entry.items() if k != "name"}
    return BACKDOOR_DEFENSES.get(entry["name"])(outcome, log=log, show_progress=show_progress, **options)


# Modules that register defences (imported for their side effect).
from tradeoff.defenses import spectral as _spectral  # noqa: E402,F401
from tradeoff.defenses import clustering as _clustering  # noqa: E402,F401
from tradeoff.defenses import cleanse as _cleanse  # noqa: E402,F401
