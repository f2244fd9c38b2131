"""The backdoor-defence registry and how a spec entry becomes a defence's options."""

from __future__ import annotations

from typing import Callable

from tradeoff.errors import TradeoffError
from tradeoff.handoff import TrainedRun
from tradeoff.options import build
from tradeoff.preemption import Preempted
from tradeoff.registry import Registry

# name -> fn(run: TrainedRun, options, log, show_progress) -> dict of prefixed metrics
BACKDOOR_DEFENSES: Registry[Callable] = Registry("backdoor defence", plural="backdoor-defenses")


def parse_options(entry: dict):
    """A ``backdoor_defenses`` entry ({name: ..., options...}) as its defence's options dataclass
    (keys, types and bounds checked)."""
    if not isinstance(entry, dict) or "name" not in entry:
        raise TradeoffError(f"backdoor_defenses entries must be mappings with a 'name', not {entry!r}.")
    name = entry["name"]
    options_cls = BACKDOOR_DEFENSES.entry(name, where="backdoor_defenses").options
    return build(options_cls, {k: v for k, v in entry.items() if k != "name"}, f"backdoor_defenses.{name}")


def check_entry(entry: dict) -> None:
    """Validate one ``backdoor_defenses`` entry without running it."""
    parse_options(entry)


def run_backdoor_defense(entry: dict, run: TrainedRun, log=print, show_progress: bool = False) -> dict:
    """Run one ``backdoor_defenses`` entry on a trained run; returns metrics prefixed with the
    defence's short name."""
    return BACKDOOR_DEFENSES.get(entry["name"])(run, parse_options(entry), log, show_progress)


def metric_prefix(name: str) -> str:
    """The short name a defence prefixes its metrics with (its options' ``metric_prefix``)."""
    options = BACKDOOR_DEFENSES.entry(name).options
    return getattr(options, "metric_prefix", None) or name.replace("-", "_")


def error_sentence(name: str, error: BaseException) -> str:
    """One sentence saying that a defence could not run, naming the error's first line."""
    text = (str(error).strip().splitlines() or [""])[0][:300]
    return f"backdoor defence {name} could not run on this model ({error.__class__.__name__}{': ' + text if text else ''})."


def try_backdoor_defense(entry: dict, run: TrainedRun, log=print, show_progress: bool = False) -> dict:
    """:func:`run_backdoor_defense`, except that a defence that raises returns
    ``{<prefix>_error: one sentence}`` instead, and the tensors it left for the run folder are
    dropped, so that a run keeps its model and every other metric. Interrupts still propagate."""
    before = dict(run.artifacts)
    try:
        return run_backdoor_defense(entry, run, log, show_progress)
    except Preempted:
        raise
    except Exception as e:  # noqa: BLE001  a defence failing on a model must not take the run with it
        run.artifacts.clear()
        run.artifacts.update(before)
        return {f"{metric_prefix(entry['name'])}_error": error_sentence(entry["name"], e)}
