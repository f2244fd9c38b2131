"""The backdoor-defence registry and how a spec entry becomes a defence's options."""

from __future__ import annotations

import re
from typing import Callable

from tradeoff.errors import TradeoffError
from tradeoff.handoff import TrainedRun
from tradeoff.options import build
from tradeoff.preemption import Preempted
from tradeoff.registry import Registry

# name -> fn(run: TrainedRun, options, log, show_progress) -> dict of prefixed metrics
BACKDOOR_DEFENSES: Registry[Callable] = Registry("backdoor defence", plural="backdoor-defenses")


ENTRY_KEYS = ("name", "prefix")  # an entry's keys that are not the defence's options


def parse_options(entry: dict):
    """A ``backdoor_defenses`` entry ({name: ..., [prefix: ...,] options...}) as its defence's
    options dataclass (keys, types and bounds checked)."""
    if not isinstance(entry, dict) or "name" not in entry:
        raise TradeoffError(f"backdoor_defenses entries must be mappings with a 'name', not {entry!r}.")
    name = entry["name"]
    options_cls = BACKDOOR_DEFENSES.entry(name, where="backdoor_defenses").options
    prefix = entry.get("prefix")
    if prefix is not None and not re.fullmatch(r"[a-z][a-z0-9_]*", str(prefix)):
        raise TradeoffError(f"backdoor_defenses.{name}.prefix must be lower-case letters, digits and '_', "
                            f"not {prefix!r}.")
    return build(options_cls, {k: v for k, v in entry.items() if k not in ENTRY_KEYS}, f"backdoor_defenses.{name}")


def check_entry(entry: dict) -> None:
    """Validate one ``backdoor_defenses`` entry without running it."""
    parse_options(entry)


def run_backdoor_defense(entry: dict, run: TrainedRun, log=print, show_progress: bool = False) -> dict:
    """Run one ``backdoor_defenses`` entry on a trained run; returns metrics prefixed with the
    defence's short name, or with the entry's ``prefix`` (so that one run can apply a defence
    twice, e.g. with the paper's and the textbook decision rule; its files are renamed alike)."""
    earlier = dict(run.artifacts)  # set aside: this defence's files may share names with an earlier entry's
    run.artifacts.clear()
    try:
        metrics = BACKDOOR_DEFENSES.get(entry["name"])(run, parse_options(entry), log, show_progress)
        own, prefix = default_prefix(entry["name"]), entry.get("prefix") or default_prefix(entry["name"])
        written = {name.replace(own, prefix, 1): tensors for name, tensors in run.artifacts.items()}
    finally:
        run.artifacts.clear()
        run.artifacts.update(earlier)
    run.artifacts.update(written)
    return {prefix + key[len(own):] if key.startswith(own + "_") else key: value for key, value in metrics.items()}


def default_prefix(name: str) -> str:
    """The short name a defence prefixes its metrics with (its options' ``metric_prefix``)."""
    options = BACKDOOR_DEFENSES.entry(name).options
    return getattr(options, "metric_prefix", None) or name.replace("-", "_")


def metric_prefix(entry: dict) -> str:
    """The prefix of a ``backdoor_defenses`` entry's metrics: its ``prefix``, else the defence's."""
    return entry.get("prefix") or default_prefix(entry["name"])


def error_sentence(name: str, error: BaseException) -> str:
    """One sentence saying that a defence could not run, naming the error's first line."""
    text = (str(error).strip().splitlines() or [""])[0][:300]
    return f"backdoor defence {name} could not run on this model ({error.__class__.__name__}{': ' + text if text else ''})."


def try_backdoor_defense(entry: dict, run: TrainedRun, log=print, show_progress: bool = False) -> dict:
    """:func:`run_backdoor_defense`, except that a defence that raises returns
    ``{<prefix>_error: one sentence}`` instead (the tensors it left for the run folder are dropped
    by :func:`run_backdoor_defense`), so that a run keeps its model and every other metric.
    Interrupts still propagate."""
    try:
        return run_backdoor_defense(entry, run, log, show_progress)
    except Preempted:
        raise
    except Exception as e:  # noqa: BLE001  a defence failing on a model must not take the run with it
        return {f"{metric_prefix(entry)}_error": error_sentence(entry["name"], e)}
