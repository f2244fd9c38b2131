"""What exists: every registered component with its description and options, the paper's tables
and the budget presets (``tradeoff list``; from Python, ``tradeoff.sweeps.catalog.catalog()``)."""

from __future__ import annotations

from dataclasses import dataclass, is_dataclass

from tradeoff.config import build  # noqa: F401  (imports every component package, so every registry is filled)
from tradeoff.core.errors import TradeoffError
from tradeoff.core.options import describe
from tradeoff.core.registry import all_registries
from tradeoff.core.spec import section_dict
from tradeoff.sweeps.grids import load_presets, load_table, table_ids


@dataclass(frozen=True)
class Item:
    name: str
    description: str
    options: tuple = ()  # (name, default, doc)


def _shown(default):
    return section_dict(default) if is_dataclass(default) else default


def catalog(kind: str | None = None) -> dict[str, list[Item]]:
    """Kind (its plural, e.g. ``triggers``) -> items; ``kind`` picks one kind."""
    out: dict[str, list[Item]] = {}
    for registry in all_registries():
        out[registry.plural] = [Item(e.name, e.description,
                                     tuple((n, _shown(d), doc) for n, d, doc in describe(e.options)))
                                for e in registry.entries()]
    out["tables"] = [Item(tid, f"{t.table}: {t.title} ({len(t.cells)} cells; {', '.join(t.datasets)})")
                     for tid, t in ((tid, load_table(tid)) for tid in table_ids())]
    presets = load_presets().get("presets", {})
    out["presets"] = [Item(name, (p or {}).get("description", "")) for name, p in presets.items()]
    if kind is None:
        return out
    if kind not in out:
        raise TradeoffError(f"unknown kind {kind!r}; choose one of: {', '.join(out)}.")
    return {kind: out[kind]}
