"""The backdoor-defence registry, how a spec entry becomes a defence's options (once, when the spec
is built) and how an entry runs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Callable

from tradeoff.backdoor_defenses.defender import check_holdout
from tradeoff.backdoor_defenses.sealed import sealed
from tradeoff.core.errors import TradeoffError
from tradeoff.core.options import build
from tradeoff.core.preemption import Preempted
from tradeoff.core.registry import Registry
from tradeoff.core.spec import BackdoorDefenseSpec
from tradeoff.records.handoff import TrainedRun

# name -> fn(run: TrainedRun, options, log, show_progress) -> dict of prefixed metrics
BACKDOOR_DEFENSES: Registry[Callable] = Registry("backdoor defence", plural="backdoor-defenses")


ENTRY_KEYS = ("name", "prefix")  # an entry's keys that are not the defence's options


def parse_entry(raw: Mapping, where: str = "backdoor_defenses") -> BackdoorDefenseSpec:
    """A ``backdoor_defenses`` entry ({name: ..., [prefix: ...,] options...}) as a
    :class:`~tradeoff.core.spec.BackdoorDefenseSpec` with its defence's options dataclass (keys,
    types and bounds checked): done once, when the spec is built."""
    if not isinstance(raw, Mapping) or "name" not in raw:
        raise TradeoffError(f"{where} entries must be mappings with a 'name', not {raw!r}.")
    name = raw["name"]
    options_cls = BACKDOOR_DEFENSES.entry(name, where=where).options
    prefix = raw.get("prefix")
    if prefix is not None and not re.fullmatch(r"[a-z][a-z0-9_]*", str(prefix)):
        raise TradeoffError(f"{where}.{name}.prefix must be lower-case letters, digits and '_', not {prefix!r}.")
    given = {k: v for k, v in raw.items() if k not in ENTRY_KEYS}
    options = build(options_cls, given, f"{where}.{name}")
    return BackdoorDefenseSpec(name=name, prefix=prefix, options=options,
                               given=tuple(k for k in raw if k != "name"))


def parse_options(raw: Mapping):
    """The options dataclass of a ``backdoor_defenses`` entry written as plain data."""
    return parse_entry(raw).options


def as_entry(entry: BackdoorDefenseSpec | Mapping) -> BackdoorDefenseSpec:
    """``entry`` as a parsed entry (a Python caller may pass the plain mapping of YAML)."""
    return entry if isinstance(entry, BackdoorDefenseSpec) else parse_entry(entry)


def check_entry(entry: BackdoorDefenseSpec, spec) -> None:
    """An entry against the rest of its run's spec: a defence whose options say ``needs_holdout``
    against a spec that keeps no defender images, and through its options' ``check_spec(spec,
    where)`` where the defence has one (Neural Cleanse's target label under an all-to-all
    backdoor): a pairing it cannot run is one sentence, when the spec is built and again before
    the defence runs."""
    where = f"backdoor_defenses.{entry.name}"
    if getattr(entry.options, "needs_holdout", False):
        check_holdout(spec, where)
    check = getattr(entry.options, "check_spec", None)
    if check is not None:
        check(spec, where)


def run_backdoor_defense(entry: BackdoorDefenseSpec | Mapping, run: TrainedRun, log=print,
                         show_progress: bool = False) -> dict:
    """Run one ``backdoor_defenses`` entry on a trained run; returns metrics prefixed with the
    defence's short name, or with the entry's ``prefix`` (so that one run can apply a defence
    twice, e.g. with the paper's and the textbook decision rule; its files are renamed alike). The
    defence gets the run with its test set sealed (:mod:`~tradeoff.backdoor_defenses.sealed`)."""
    entry = as_entry(entry)
    check_entry(entry, run.spec)
    earlier = dict(run.artifacts)  # set aside: this defence's files may share names with an earlier entry's
    run.artifacts.clear()
    try:
        metrics = BACKDOOR_DEFENSES.get(entry.name)(sealed(run), entry.options, log, show_progress)
        own, prefix = entry.own_prefix, entry.metric_prefix
        written = {name.replace(own, prefix, 1): tensors for name, tensors in run.artifacts.items()}
    finally:
        run.artifacts.clear()
        run.artifacts.update(earlier)
    run.artifacts.update(written)
    return {prefix + key[len(own):] if key.startswith(own + "_") else key: value for key, value in metrics.items()}


def metric_prefix(entry: BackdoorDefenseSpec | Mapping) -> str:
    """The prefix of a ``backdoor_defenses`` entry's metrics: its ``prefix``, else the defence's."""
    return as_entry(entry).metric_prefix


def error_sentence(name: str, error: BaseException) -> str:
    """One sentence saying that a defence could not run, naming the error's first line."""
    text = (str(error).strip().splitlines() or [""])[0][:300]
    return f"backdoor defence {name} could not run on this model ({error.__class__.__name__}{': ' + text if text else ''})."


def try_backdoor_defense(entry: BackdoorDefenseSpec | Mapping, run: TrainedRun, log=print,
                         show_progress: bool = False) -> dict:
    """:func:`run_backdoor_defense`, except that a defence that raises returns
    ``{<prefix>_error: one sentence}`` instead (the tensors it left for the run folder are dropped
    by :func:`run_backdoor_defense`), so that a run keeps its model and every other metric.
    Interrupts still propagate."""
    entry = as_entry(entry)
    try:
        return run_backdoor_defense(entry, run, log, show_progress)
    except Preempted:
        raise
    except Exception as e:  # noqa: BLE001  a defence failing on a model must not take the run with it
        return {f"{entry.metric_prefix}_error": error_sentence(entry.name, e)}
