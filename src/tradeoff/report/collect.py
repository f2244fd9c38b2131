"""Collecting results: the report's data classes, and each swept table's cells filled from the
finished run folders a sweep manifest names (means over converged seeds, collapsed seeds marked
and left out, standard cells joined to their adversarially trained twins)."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tradeoff.errors import TradeoffError
from tradeoff.grids import load_presets
from tradeoff.report.paper import paper_values
from tradeoff.runs import finished_runs
from tradeoff.sweep import read_manifests

ASR_KEY, ROBUSTNESS_KEY = "backdoor_success_rate", "adversarial_robustness"


@dataclass
class Entry:
    dataset: str  # the paper's dataset name (or ours, for datasets the paper lacks)
    setting: str
    metric: str
    paper: Optional[float] = None
    values: list = field(default_factory=list)  # ours, one per seed, in the paper's unit
    status: str = ""  # why there is no value of ours
    percent: bool = True
    runs: list = field(default_factory=list)  # the run folders of ``values``
    collapsed: int = 0  # seeds whose training collapsed: marked, and left out of ``values``

    @property
    def mean(self) -> Optional[float]:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> Optional[float]:
        return statistics.stdev(self.values) if len(self.values) > 1 else None


@dataclass
class Pair:
    dataset: str
    standard: str  # setting of the un-trained twin
    adversarial: str
    ours: dict = field(default_factory=dict)  # role -> (mean ASR, mean robustness) in percent
    paper: dict = field(default_factory=dict)


@dataclass
class TableReport:
    id: str
    paper_table: str
    title: str
    preset: str
    layout_rows: list
    entries: dict  # (dataset, setting, metric) -> Entry, in display order
    pairs: list
    notes: list
    seeds: list  # distinct seed counts among the cells with values
    synthetic: bool = False  # some cell ran on generated data (tradeoff sweep --synthetic): not results

    @property
    def key(self) -> str:
        return f"{self.id}-{self.preset}"


def _index_runs(out: Path) -> dict:
    """spec digest -> [metrics dict with its folder name under "run"] of finished runs."""
    index: dict = {}
    for run in finished_runs(out):
        try:
            metrics = json.loads((run / "metrics.json").read_text())
        except (OSError, ValueError):
            continue
        digest = metrics.get("spec_digest") or run.name.rsplit("-", 1)[-1]
        index.setdefault(digest, []).append({**metrics, "run": run.name})
    return index


def _number(value) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


# Backdoor defences' decision rules as their runs record them; an oracle rule is named as such.
DECISION_RULES = {"spectral_variant": "spectral signatures", "clustering_rule": "activation clustering"}


def decision_rule_notes(per_cell: dict) -> list[str]:
    """One note per backdoor defence decision rule the table's runs used (e.g. the paper's
    spectral removal count, an oracle that knows how many images are poisoned)."""
    used: dict = {}
    for runs in per_cell.values():
        for run in runs:
            for key, name in DECISION_RULES.items():
                if run.get(key):
                    used.setdefault(name, set()).add(str(run[key]))
    return [f"{name}: decision rule {', '.join(sorted(rules))}" for name, rules in used.items()]


def _pick(metrics: dict, keys: list) -> Optional[float]:
    """The first of ``keys`` present in ``metrics`` (``-`` and ``_`` are interchangeable)."""
    normal = {k.replace("-", "_"): v for k, v in metrics.items()}
    for key in keys:
        value = _number(normal.get(key.replace("-", "_")))
        if value is not None:
            return value
    return None


def _pairs(manifest: dict, per_cell: dict, entries: dict) -> list[Pair]:
    """Each standard cell joined to its adversarially trained twin: our means over the converged
    seeds (``per_cell``) and the paper's values (``entries``)."""
    pairs = []
    for c in manifest["cells"]:
        if not c.get("twin") or c["seed"] != 0:
            continue
        p = Pair(c["paper_dataset"], c["twin"], c["setting"])
        for role, setting in (("standard", p.standard), ("adversarial", p.adversarial)):
            ms = per_cell.get((p.dataset, setting), [])
            asr = [v for v in (_number(m.get(ASR_KEY)) for m in ms) if v is not None]
            rob = [v for v in (_number(m.get(ROBUSTNESS_KEY)) for m in ms) if v is not None]
            if asr:
                p.ours[role] = (100 * statistics.fmean(asr), 100 * statistics.fmean(rob) if rob else None)
            pa = entries.get((p.dataset, setting, "Backdoor Success rate"))
            pr = entries.get((p.dataset, setting, "Adv. Robustness"))
            if pa is not None and pa.paper is not None:
                p.paper[role] = (pa.paper, pr.paper if pr is not None else None)
        pairs.append(p)
    return pairs


def collect(manifest: dict, runs: dict, paper: list[dict]) -> TableReport:
    """One swept table (``manifest``) filled from the finished runs (``runs``, by spec digest)
    beside the paper's values (``paper``, as :func:`paper_values` gives them)."""
    name_of = {ds: info.get("paper_name", ds) for ds, info in (load_presets().get("datasets") or {}).items()}
    entries: dict = {}

    def entry(dataset, setting, metric) -> Entry:
        key = (dataset, setting, metric)
        if key not in entries:
            entries[key] = Entry(dataset, setting, metric)
        return entries[key]

    for r in paper:
        if r["table"] == manifest["paper_table"]:
            entry(r["dataset"], r["setting"], r["metric"]).paper = r["value"]

    swept = {c["paper_dataset"] for c in manifest["cells"]}
    skipped = {name_of.get(ds, ds): why for ds, why in (manifest.get("skipped") or {}).items()}
    notes = [f"{ds}: {why}" for ds, why in skipped.items()]
    per_cell: dict = {}  # (dataset, setting) -> list of run metrics, one per converged seed
    collapsed: dict = {}  # (dataset, setting) -> [seeds whose training collapsed]
    for c in manifest["cells"]:
        ds, setting = c["paper_dataset"], c["setting"]
        found = runs.get(c["digest"]) if c.get("digest") else None
        if found and found[0].get("collapsed"):
            collapsed.setdefault((ds, setting), []).append(c["seed"])
        elif found:
            per_cell.setdefault((ds, setting), []).append(found[0])
        if c.get("error"):
            notes.append(f"{ds}, {setting}, seed {c['seed']}: {c['error']}")
        for m in c["metrics"]:
            e = entry(ds, setting, m["paper"])
            e.percent = m.get("percent", True)
            if found and found[0].get("collapsed"):
                e.collapsed += 1
                e.status = e.status or "collapsed"
            elif found:
                value = _pick(found[0], m["keys"])
                if value is None:
                    e.status = e.status or f"no metric {' or '.join(m['keys'])} in the run"
                else:
                    e.values.append(100 * value if e.percent else value)
                    e.runs.append(found[0]["run"])
            elif c.get("skipped"):
                e.status = "skipped"
            elif c.get("error"):
                e.status = "error"
            else:
                e.status = e.status or "not run"
    notes += decision_rule_notes(per_cell)
    for (ds, setting), seeds in collapsed.items():
        total = len(seeds) + len(per_cell.get((ds, setting), []))
        notes.append(f"{ds}, {setting}: training collapsed on {len(seeds)} of {total} seed(s) "
                     f"(seed {', '.join(map(str, sorted(seeds)))}); left out of the means and pairs")
    for e in entries.values():
        if not e.values and not e.status:
            e.status = "skipped" if e.dataset in skipped else ("not swept" if e.dataset not in swept else "not run")
        if e.values:
            e.status = ""

    pairs = _pairs(manifest, per_cell, entries)
    seeds = sorted({len(e.values) for e in entries.values() if e.values})
    synthetic = any(c.get("synthetic") for c in manifest["cells"]) or any(
        run.get("synthetic") for c in manifest["cells"] for run in runs.get(c.get("digest"), []))
    return TableReport(manifest["table"], manifest["paper_table"], manifest.get("title", ""), manifest["preset"],
                       manifest.get("layout_rows") or [], entries, pairs, notes, seeds, synthetic)


def build_reports(folder: str | Path) -> list[TableReport]:
    """One :class:`TableReport` per sweep manifest in ``folder``, filled from its finished runs."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TradeoffError(f"{folder} is not a folder.")
    manifests = read_manifests(folder)
    if not manifests:
        raise TradeoffError(f"{folder} holds no sweep manifests (sweep-*.json); run `tradeoff sweep` into it first.")
    runs, paper = _index_runs(folder), paper_values()
    return [collect(m, runs, paper) for m in manifests]
