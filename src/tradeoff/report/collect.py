"""Collecting results: the report's data classes, and each swept table's cells filled from the
finished run folders a sweep manifest names (means over converged seeds, collapsed seeds marked
and left out, standard cells joined to their adversarially trained twins), and the evaluation
attack each cell's runs measured adversarial robustness with, read from their spec.yaml."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from tradeoff.attacks import describe
from tradeoff.curves import CURVE_FILE, read_curve
from tradeoff.errors import TradeoffError
from tradeoff.grids import load_presets
from tradeoff.masking import WARNINGS_KEY, split_warnings
from tradeoff.metrics import TIMING_KEYS
from tradeoff.report.paper import paper_values
from tradeoff.runs import finished_runs
from tradeoff.spec import AttackSpec
from tradeoff.stats import Comparison, Interval, interval, paired, verdict_summary
from tradeoff.sweep import read_manifests

ASR_KEY, ROBUSTNESS_KEY = "backdoor_success_rate", "adversarial_robustness"
SALIENCY_KEY = "trigger_saliency_share"


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
    seeds: list = field(default_factory=list)  # the seed of each of ``values``
    collapsed: int = 0  # seeds whose training collapsed: marked, and left out of ``values``
    masking: int = 0  # seeds of an adversarial-robustness entry whose gradient-masking checks warned

    @property
    def by_seed(self) -> dict:
        return dict(zip(self.seeds, self.values))

    @property
    def interval(self) -> Optional[Interval]:
        """The 95% interval of the mean over seeds; a percentage's is cut to [0, 100]."""
        ci = interval(self.values)
        if ci is not None and self.percent:
            ci = dataclasses.replace(ci, low=max(ci.low, 0.0), high=min(ci.high, 100.0))
        return ci

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
    runs: dict = field(default_factory=dict)  # role -> the first converged seed's run folder name
    saliency: dict = field(default_factory=dict)  # role -> mean trigger_saliency_share in percent
    curves: dict = field(default_factory=dict)  # role -> [learning curve of each converged seed with one]
    cell: str = ""  # the adversarial cell's slug where its setting names several cells (Table 3(a)(b)'s rates)

    @property
    def label(self) -> str:
        return f"{self.dataset}: {self.standard} → {self.adversarial_label}"

    @property
    def adversarial_label(self) -> str:
        return f"{self.adversarial} ({self.cell})" if self.cell else self.adversarial


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
    # dataset -> {evaluation attack, as attacks.describe names it -> [settings]}: what the runs
    # behind the table's adversarial-robustness values were attacked with
    attacks: dict = field(default_factory=dict)
    comparisons: list = field(default_factory=list)  # Comparison: the with/without pairs the paper compares
    costs: list = field(default_factory=list)  # CellCost per cell with finished runs
    heatmap: dict = field(default_factory=dict)  # {rows, columns, metric}: a phase diagram of the comparisons
    synthetic: bool = False  # some cell ran on generated data (tradeoff sweep --synthetic): not results

    @property
    def total_seconds(self) -> float:
        return sum(c.total_seconds for c in self.costs)

    @property
    def verdicts(self) -> str:
        return verdict_summary(self.comparisons)

    @property
    def key(self) -> str:
        return f"{self.id}-{self.preset}"


EVAL_ATTACK = "eval_attack"  # the run record's key for the evaluation attack's one-line name
CURVE = "learning_curve"  # the run record's key for its curve.csv points (None without one)
_ATTACK_FIELDS = {f.name for f in dataclasses.fields(AttackSpec)}


def eval_attack(run: Path) -> Optional[str]:
    """The evaluation attack a finished run measured adversarial robustness with, named in one
    line from its spec.yaml (resolved: every budget field set); None where it measured none or its
    spec does not say."""
    try:
        raw = yaml.safe_load((run / "spec.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    ev = raw.get("eval") if isinstance(raw, dict) else None
    if not isinstance(ev, dict) or ev.get("adversarial") is False or not isinstance(ev.get("attack"), dict):
        return None
    try:
        a = AttackSpec(**{k: v for k, v in ev["attack"].items() if k in _ATTACK_FIELDS})
        return describe(a) if None not in (a.eps, a.step_size, a.steps) else None
    except (TypeError, ValueError):
        return None


def _index_runs(out: Path) -> dict:
    """spec digest -> [metrics dict with its folder name under "run"] of finished runs."""
    index: dict = {}
    for run in finished_runs(out):
        try:
            metrics = json.loads((run / "metrics.json").read_text())
        except (OSError, ValueError):
            continue
        digest = metrics.get("spec_digest") or run.name.rsplit("-", 1)[-1]
        curve = read_curve(run / CURVE_FILE) if (run / CURVE_FILE).is_file() else None
        index.setdefault(digest, []).append({**metrics, "run": run.name, EVAL_ATTACK: eval_attack(run), CURVE: curve})
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


def _twin_slug(cells: list[dict], cell: dict) -> Optional[str]:
    """The slug of ``cell``'s twin among ``cells`` (one seed's): the cell of its dataset with the
    twin's setting and, where several have it (Table 3(a)(b) repeats its settings per poisoning
    rate), the one that fills the most of the same table columns."""
    candidates = [c for c in cells if c["paper_dataset"] == cell["paper_dataset"] and c["setting"] == cell["twin"]]
    columns = {m["paper"] for m in cell["metrics"]}
    best = max(candidates, key=lambda c: len(columns & {m["paper"] for m in c["metrics"]}), default=None)
    return best["slug"] if best else None


def _pairs(manifest: dict, per_cell: dict, entries: dict) -> list[Pair]:
    """Each standard cell joined to its adversarially trained twin: our means over the converged
    seeds (``per_cell``, by dataset, setting and cell) and the paper's values (``entries``)."""
    first_seed = [c for c in manifest["cells"] if c["seed"] == 0]
    repeated = Counter((c["paper_dataset"], c["setting"]) for c in first_seed)
    pairs = []
    for c in first_seed:
        if not c.get("twin"):
            continue
        p = Pair(c["paper_dataset"], c["twin"], c["setting"],
                 cell=c["slug"] if repeated[(c["paper_dataset"], c["setting"])] > 1 else "")
        for role, setting, slug in (("standard", p.standard, _twin_slug(first_seed, c)),
                                    ("adversarial", p.adversarial, c["slug"])):
            ms = per_cell.get((p.dataset, setting, slug), [])
            asr = [v for v in (_number(m.get(ASR_KEY)) for m in ms) if v is not None]
            rob = [v for v in (_number(m.get(ROBUSTNESS_KEY)) for m in ms) if v is not None]
            if asr:
                p.ours[role] = (100 * statistics.fmean(asr), 100 * statistics.fmean(rob) if rob else None)
            curves = [m[CURVE] for m in ms if m.get(CURVE)]
            if curves:
                p.curves[role] = curves
            if ms:
                p.runs[role] = ms[0]["run"]
            shares = [v for v in (_number(m.get(SALIENCY_KEY)) for m in ms) if v is not None]
            if shares:
                p.saliency[role] = 100 * statistics.fmean(shares)
            pa = entries.get((p.dataset, setting, "Backdoor Success rate"))
            pr = entries.get((p.dataset, setting, "Adv. Robustness"))
            if pa is not None and pa.paper is not None:
                p.paper[role] = (pa.paper, pr.paper if pr is not None else None)
        if p.ours or p.paper:  # a pair without backdoor success rates (e.g. detection rates) has no trade-off point
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
    per_cell: dict = {}  # (dataset, setting, slug) -> list of run metrics, one per converged seed
    attacks: dict = {}  # dataset -> {evaluation attack -> [settings]} of the robustness values shown
    collapsed: dict = {}  # (dataset, setting, slug) -> [seeds whose training collapsed]
    timed: dict = {}  # (dataset, setting, slug) -> run metrics of every finished seed, for the cost
    for c in manifest["cells"]:
        ds, setting = c["paper_dataset"], c["setting"]
        found = runs.get(c["digest"]) if c.get("digest") else None
        if found:
            timed.setdefault((ds, setting, c["slug"]), []).append(found[0])
        if found and found[0].get("collapsed"):
            collapsed.setdefault((ds, setting, c["slug"]), []).append(c["seed"])
        elif found:
            per_cell.setdefault((ds, setting, c["slug"]), []).append(found[0])
        if c.get("error"):
            notes.append(f"{ds}, {setting}, seed {c['seed']}: {c['error']}")
        for m in c["metrics"]:
            if m.get("datasets") and c["dataset"] not in m["datasets"]:
                continue
            e = entry(ds, setting, m["paper"])
            e.percent = m.get("percent", True)
            if found and found[0].get("collapsed"):
                e.collapsed += 1
                e.status = e.status or "collapsed"
            elif found:
                value = _pick(found[0], m["keys"])
                if value is None:
                    # a backdoor defence that could not run left <prefix>_error instead of its metrics
                    failed = sorted({found[0][k] for k in (key.split("_")[0] + "_error" for key in m["keys"])
                                     if found[0].get(k)})
                    e.status = e.status or ("defence failed" if failed else f"no metric {' or '.join(m['keys'])} in the run")
                    notes += [n for n in (f"{ds}, {setting}, seed {c['seed']}: {why}" for why in failed) if n not in notes]
                else:
                    e.values.append(100 * value if e.percent else value)
                    e.runs.append(found[0]["run"])
                    e.seeds.append(c["seed"])
                    if ROBUSTNESS_KEY in m["keys"]:
                        warned = split_warnings(found[0].get(WARNINGS_KEY))
                        e.masking += bool(warned)
                        notes += [n for n in (f"{ds}, {setting}, seed {c['seed']}: {why}" for why in warned)
                                  if n not in notes]
                        name = found[0].get(EVAL_ATTACK) or "an attack its spec.yaml does not name"
                        settings = attacks.setdefault(ds, {}).setdefault(name, [])
                        if setting not in settings:
                            settings.append(setting)
            elif c.get("skipped"):
                e.status = "skipped"
            elif c.get("error"):
                e.status = "error"
            else:
                e.status = e.status or "not run"
    notes += decision_rule_notes(per_cell)
    for (ds, setting, slug), seeds in collapsed.items():
        total = len(seeds) + len(per_cell.get((ds, setting, slug), []))
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
                       manifest.get("layout_rows") or [], entries, pairs, notes, seeds, attacks,
                       comparisons(manifest, entries), [cell_cost(key, ms) for key, ms in timed.items()],
                       manifest.get("heatmap") or {}, synthetic)


STAGE_SECONDS = tuple(k for k in TIMING_KEYS if k.endswith("_seconds"))  # disjoint stages: their sum is the run's


@dataclass
class CellCost:
    """What a cell's finished seeds cost: wall seconds (every timed stage: training, evaluation,
    learning curve, masking checks, saliency, AutoAttack, backdoor defences), optimiser steps and
    training images per second, means over the seeds."""

    dataset: str
    setting: str
    slug: str
    seeds: int
    seconds: float  # mean per seed
    steps: float
    images_per_second: Optional[float]
    total_seconds: float  # over the seeds


def run_seconds(metrics: dict) -> float:
    """A run's wall seconds: the sum of its timed stages."""
    return sum(_number(metrics.get(k)) or 0.0 for k in STAGE_SECONDS)


def cell_cost(key: tuple, runs: list) -> CellCost:
    seconds = [run_seconds(m) for m in runs]
    rates = [r for r in (_number(m.get("train_images_per_second")) for m in runs) if r is not None]
    return CellCost(*key, len(runs), statistics.fmean(seconds),
                    statistics.fmean(_number(m.get("train_steps")) or 0.0 for m in runs),
                    statistics.fmean(rates) if rates else None, sum(seconds))


def comparisons(manifest: dict, entries: dict) -> list[Comparison]:
    """The with/without pairs the paper compares, over matching converged seeds: each cell with a
    twin against its twin, metric by metric (adversarial training or not, IBP or not), and each
    pair of metrics the table lists under ``compare`` within a cell (a defence or not). The
    expected direction is the paper's for the dataset, else for the metric a metric of ours is
    ``like``, else the paper's on the table's other datasets where they agree."""
    likes = {m["paper"]: m["like"] for c in manifest["cells"] for m in c["metrics"] if m.get("like")}
    pairs = []  # (dataset, metric label, (setting, metric) without, (setting, metric) with)
    seen = set()
    for c in manifest["cells"]:
        ds, setting, twin = c["paper_dataset"], c["setting"], c.get("twin")
        if twin and (ds, setting, twin) not in seen:
            seen.add((ds, setting, twin))
            pairs += [(ds, metric, (twin, metric), (setting, metric)) for (eds, esetting, metric) in entries
                      if eds == ds and esetting == setting and (ds, twin, metric) in entries]
    for without_metric, with_metric in manifest.get("compare") or []:
        pairs += [(ds, f"{without_metric} → {with_metric}", (setting, without_metric), (setting, with_metric))
                  for (ds, setting, metric) in entries if metric == without_metric and (ds, setting, with_metric) in entries]
    out = []
    for ds, label, without, with_ in pairs:
        base, e = entries[(ds, *without)], entries[(ds, *with_)]
        seeds, diffs = paired(base.by_seed, e.by_seed)
        paper, source = paper_direction(entries, likes, ds, without, with_)
        out.append(Comparison(ds, label, without[0], with_[0], *paper, seeds, diffs, source))
    return out


def paper_direction(entries: dict, likes: dict, ds: str, without: tuple, with_: tuple) -> tuple[tuple, str]:
    """((paper's value without, with), the dataset it comes from) for a comparison of ``ds``'s
    (setting, metric) ``without`` and ``with_``; ((None, None), "") when the paper has none."""
    def values(dataset):
        got = [entries.get((dataset, setting, likes.get(metric, metric))) for setting, metric in (without, with_)]
        return tuple(None if g is None else g.paper for g in got)

    own = values(ds)
    if None not in own:
        return own, ds
    others = {d: values(d) for d in dict.fromkeys(k[0] for k in entries) if d != ds}
    others = {d: v for d, v in others.items() if None not in v and v[1] != v[0]}
    signs = {v[1] > v[0] for v in others.values()}
    if len(signs) == 1:
        d, v = next(iter(others.items()))
        return v, d
    return (None, None), ""


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
