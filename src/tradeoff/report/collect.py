"""Collecting results: the report's data classes, and each swept table's cells filled from the
finished run folders a sweep manifest names (means over converged seeds, collapsed seeds marked
and left out, standard cells joined to their adversarially trained twins), and the evaluation
attack each cell's runs measured adversarial robustness with, read from their spec.yaml."""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from tradeoff.attacks.pgd import describe
from tradeoff.core.errors import TradeoffError
from tradeoff.core.spec import AttackSpec
from tradeoff.core.stats import PERCENT_RANGE, Comparison, Interval, holm_summary, interval, paired, verdict_summary
from tradeoff.evaluation.masking import WARNINGS_KEY, split_warnings
from tradeoff.evaluation.metrics import TIMING_KEYS
from tradeoff.records.folders import finished_runs
from tradeoff.records.manifest import Manifest, ManifestCell, ManifestMetric, read_manifests
from tradeoff.records.record import (
    BACKDOOR_SUCCESS,
    ROBUSTNESS,
    SALIENCY_SHARE,
    TRAIN_IMAGES_PER_SECOND,
    TRAIN_STEPS,
    RunRecord,
    peek_record,
)
from tradeoff.report.attack_strength import (
    ATTACK_KEY,
    NOT_WORKING,
    attack_notes,
    not_working,
    setting_value,
    training_eps,
)
from tradeoff.report.paper import paper_values
from tradeoff.sweeps.grids import load_presets
from tradeoff.training.curves import CURVE_FILE, read_curve


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
    cells: list = field(default_factory=list)  # the slugs of the cells that report it

    @property
    def by_seed(self) -> dict:
        return dict(zip(self.seeds, self.values))

    @property
    def interval(self) -> Optional[Interval]:
        """The 95% interval of the mean over seeds; a percentage's is clipped to [0, 100] (its
        computed ends kept in ``raw_low``/``raw_high``, the clipped ones flagged)."""
        ci = interval(self.values)
        return ci.within(*PERCENT_RANGE) if ci is not None and self.percent else ci

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
    def holm_line(self) -> str:
        return holm_summary(self.comparisons)

    @property
    def key(self) -> str:
        return f"{self.id}-{self.preset}"


_ATTACK_FIELDS = {f.name for f in dataclasses.fields(AttackSpec)}


@dataclass
class FinishedRun:
    """A finished run folder as the report reads it."""

    name: str  # the folder's name
    record: RunRecord  # its metrics.json
    eval_attack: Optional[str] = None  # the evaluation attack, named in one line (None: none, or unnamed)
    curve: Optional[list] = None  # its curve.csv points (None without one)
    training_eps: Optional[float] = None  # the L-inf eps it trained against (None: standard training, another norm)


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
    """spec digest -> [FinishedRun] of the finished runs in ``out``."""
    index: dict = {}
    for run in finished_runs(out):
        record = peek_record(run)
        if record is None:
            continue
        digest = record.spec_digest or run.name.rsplit("-", 1)[-1]
        curve = read_curve(run / CURVE_FILE) if (run / CURVE_FILE).is_file() else None
        index.setdefault(digest, []).append(FinishedRun(run.name, record, eval_attack(run), curve,
                                                                training_eps(run)))
    return index


# Backdoor defences' decision rules as their runs record them; an oracle rule is named as such.
DECISION_RULES = {"spectral_variant": "spectral signatures", "clustering_rule": "activation clustering"}


def decision_rule_notes(per_cell: dict) -> list[str]:
    """One note per backdoor defence decision rule the table's runs used (e.g. the paper's
    spectral removal count, an oracle that knows how many images are poisoned)."""
    used: dict = {}
    for runs in per_cell.values():
        for run in runs:
            for key, name in DECISION_RULES.items():
                if run.record.get(key):
                    used.setdefault(name, set()).add(str(run.record.get(key)))
    return [f"{name}: decision rule {', '.join(sorted(rules))}" for name, rules in used.items()]


def _twin_slug(cells: list[ManifestCell], cell: ManifestCell) -> Optional[str]:
    """The slug of ``cell``'s twin among ``cells`` (one seed's): the cell of its dataset with the
    twin's setting and, where several have it (Table 3(a)(b) repeats its settings per poisoning
    rate), the one that fills the most of the same table columns."""
    candidates = [c for c in cells if c.paper_dataset == cell.paper_dataset and c.setting == cell.twin]
    columns = {m.paper for m in cell.metrics}
    best = max(candidates, key=lambda c: len(columns & {m.paper for m in c.metrics}), default=None)
    return best.slug if best else None


def _means(runs: list[FinishedRun], key: str) -> Optional[float]:
    """The mean of ``key`` over ``runs`` in percent, or None where none has it."""
    values = [v for v in (r.record.number(key) for r in runs) if v is not None]
    return 100 * statistics.fmean(values) if values else None


def _pairs(manifest: Manifest, per_cell: dict, entries: dict) -> list[Pair]:
    """Each standard cell joined to its adversarially trained twin: our means over the converged
    seeds (``per_cell``, by dataset, setting and cell) and the paper's values (``entries``)."""
    first_seed = [c for c in manifest.cells if c.seed == 0]
    repeated = Counter((c.paper_dataset, c.setting) for c in first_seed)
    pairs = []
    for c in first_seed:
        if not c.twin:
            continue
        p = Pair(c.paper_dataset, c.twin, c.setting, cell=c.slug if repeated[(c.paper_dataset, c.setting)] > 1 else "")
        for role, setting, slug in (("standard", p.standard, _twin_slug(first_seed, c)),
                                    ("adversarial", p.adversarial, c.slug)):
            ms = per_cell.get((p.dataset, setting, slug), [])
            asr = _means(ms, BACKDOOR_SUCCESS)
            if asr is not None:
                p.ours[role] = (asr, _means(ms, ROBUSTNESS))
            curves = [m.curve for m in ms if m.curve]
            if curves:
                p.curves[role] = curves
            if ms:
                p.runs[role] = ms[0].name
            share = _means(ms, SALIENCY_SHARE)
            if share is not None:
                p.saliency[role] = share
            pa = entries.get((p.dataset, setting, "Backdoor Success rate"))
            pr = entries.get((p.dataset, setting, "Adv. Robustness"))
            if pa is not None and pa.paper is not None:
                p.paper[role] = (pa.paper, pr.paper if pr is not None else None)
        if p.ours or p.paper:  # a pair without backdoor success rates (e.g. detection rates) has no trade-off point
            pairs.append(p)
    return pairs


@dataclass
class _Filling:
    """What :func:`collect` gathers while it walks a manifest's cells."""

    entries: dict  # (dataset, setting, metric) -> Entry, in display order
    notes: list
    per_cell: dict = field(default_factory=dict)  # (dataset, setting, slug) -> [FinishedRun], one per converged seed
    attacks: dict = field(default_factory=dict)  # dataset -> {evaluation attack -> [settings]} of the robustness values
    collapsed: dict = field(default_factory=dict)  # (dataset, setting, slug) -> [seeds whose training collapsed]
    timed: dict = field(default_factory=dict)  # (dataset, setting, slug) -> [FinishedRun] of every finished seed

    def entry(self, dataset: str, setting: str, metric: str) -> Entry:
        key = (dataset, setting, metric)
        if key not in self.entries:
            self.entries[key] = Entry(dataset, setting, metric)
        return self.entries[key]

    def note(self, line: str) -> None:
        if line not in self.notes:
            self.notes.append(line)


def collect(manifest: Manifest, runs: dict, paper: list[dict]) -> TableReport:
    """One swept table (``manifest``) filled from the finished runs (``runs``, by spec digest:
    :class:`FinishedRun`) beside the paper's values (``paper``, as :func:`paper_values` gives them)."""
    name_of = {ds: info.get("paper_name", ds) for ds, info in (load_presets().get("datasets") or {}).items()}
    skipped = {name_of.get(ds, ds): why for ds, why in manifest.skipped.items()}
    filling = _Filling({}, [f"{ds}: {why}" for ds, why in skipped.items()])
    for r in paper:
        if r["table"] == manifest.paper_table:
            filling.entry(r["dataset"], r["setting"], r["metric"]).paper = r["value"]
    for c in manifest.cells:
        _fill_cell(filling, c, runs.get(c.digest) if c.digest else None)
    filling.notes += decision_rule_notes(filling.per_cell) + attack_notes(filling.per_cell) + _collapse_notes(filling)
    _settle_statuses(filling.entries, skipped, {c.paper_dataset for c in manifest.cells})

    entries = filling.entries
    synthetic = any(c.synthetic for c in manifest.cells) or any(
        run.record.synthetic for c in manifest.cells for run in runs.get(c.digest, []))
    return TableReport(manifest.table, manifest.paper_table, manifest.title, manifest.preset, manifest.layout_rows,
                       entries, _pairs(manifest, filling.per_cell, entries), filling.notes,
                       sorted({len(e.values) for e in entries.values() if e.values}), filling.attacks,
                       comparisons(manifest, entries, not_working(filling.per_cell)), [cell_cost(key, ms) for key, ms in filling.timed.items()],
                       manifest.heatmap, synthetic)


def _fill_cell(filling: _Filling, c: ManifestCell, found: Optional[list]) -> None:
    """One planned cell: its first finished run (if any) counted as converged or collapsed, and
    each metric it reports filled into its table entry."""
    key = (c.paper_dataset, c.setting, c.slug)
    run = found[0] if found else None
    if run is not None:
        filling.timed.setdefault(key, []).append(run)
        if run.record.collapsed:
            filling.collapsed.setdefault(key, []).append(c.seed)
        else:
            filling.per_cell.setdefault(key, []).append(run)
    if c.error:
        filling.notes.append(f"{c.paper_dataset}, {c.setting}, seed {c.seed}: {c.error}")
    for m in c.metrics:
        if m.reported_for(c.dataset):
            _fill_entry(filling, c, m, run)


def _fill_entry(filling: _Filling, c: ManifestCell, m: ManifestMetric, run: Optional[FinishedRun]) -> None:
    """Metric ``m`` of cell ``c``: the run's value (in the paper's unit), or why there is none."""
    ds, setting = c.paper_dataset, c.setting
    e = filling.entry(ds, setting, m.paper)
    e.percent = m.percent
    if c.slug not in e.cells:
        e.cells.append(c.slug)
    if run is None:
        e.status = "skipped" if c.skipped else "error" if c.error else e.status or "not run"
        return
    if run.record.collapsed:
        e.collapsed += 1
        e.status = e.status or "collapsed"
        return
    value = run.record.first_number(m.keys)
    if value is None:
        # a backdoor defence that could not run left <prefix>_error instead of its metrics
        failed = run.record.defense_errors(m.keys)
        e.status = e.status or ("defence failed" if failed else f"no metric {' or '.join(m.keys)} in the run")
        for why in failed:
            filling.note(f"{ds}, {setting}, seed {c.seed}: {why}")
        return
    e.values.append(100 * value if e.percent else value)
    e.runs.append(run.name)
    e.seeds.append(c.seed)
    if ROBUSTNESS in m.keys:
        _note_robustness(filling, c, run, e)


def _note_robustness(filling: _Filling, c: ManifestCell, run: FinishedRun, e: Entry) -> None:
    """An adversarial-robustness value's gradient-masking warnings and the attack it was measured with."""
    warned = split_warnings(run.record.get(WARNINGS_KEY))
    e.masking += bool(warned)
    for why in warned:
        filling.note(f"{c.paper_dataset}, {c.setting}, seed {c.seed}: {why}")
    name = run.eval_attack or "an attack its spec.yaml does not name"
    settings = filling.attacks.setdefault(c.paper_dataset, {}).setdefault(name, [])
    if c.setting not in settings:
        settings.append(c.setting)


def _collapse_notes(filling: _Filling) -> list[str]:
    notes = []
    for (ds, setting, slug), seeds in filling.collapsed.items():
        total = len(seeds) + len(filling.per_cell.get((ds, setting, slug), []))
        notes.append(f"{ds}, {setting}: training collapsed on {len(seeds)} of {total} seed(s) "
                     f"(seed {', '.join(map(str, sorted(seeds)))}); left out of the means and pairs")
    return notes


def _settle_statuses(entries: dict, skipped: dict, swept: set) -> None:
    """An entry with values has no status; one without values or status says why."""
    for e in entries.values():
        if not e.values and not e.status:
            e.status = "skipped" if e.dataset in skipped else ("not swept" if e.dataset not in swept else "not run")
        if e.values:
            e.status = ""


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


def run_seconds(record: RunRecord) -> float:
    """A run's wall seconds: the sum of its timed stages."""
    return sum(record.number(k) or 0.0 for k in STAGE_SECONDS)


def cell_cost(key: tuple, runs: list[FinishedRun]) -> CellCost:
    seconds = [run_seconds(r.record) for r in runs]
    rates = [v for v in (r.record.number(TRAIN_IMAGES_PER_SECOND) for r in runs) if v is not None]
    return CellCost(*key, len(runs), statistics.fmean(seconds),
                    statistics.fmean(r.record.number(TRAIN_STEPS) or 0.0 for r in runs),
                    statistics.fmean(rates) if rates else None, sum(seconds))


def comparisons(manifest: Manifest, entries: dict, weak_attacks: frozenset = frozenset()) -> list[Comparison]:
    """The with/without pairs the paper compares, over matching converged seeds: each cell with a
    twin against its twin, metric by metric (adversarial training or not, IBP or not), and each
    pair of metrics the table lists under ``compare`` within a cell (a defence or not). The
    expected direction is the paper's for the dataset, else for the metric a metric of ours is
    ``like``, else the paper's on the table's other datasets where they agree. A comparison of an
    attack in ``weak_attacks`` ((dataset, attack) pairs not working at the table's budget) gets no
    verdict."""
    likes = {m.paper: m.like for c in manifest.cells for m in c.metrics if m.like}
    pairs = []  # (dataset, metric label, (setting, metric) without, (setting, metric) with)
    seen = set()
    for c in manifest.cells:
        ds, setting, twin = c.paper_dataset, c.setting, c.twin
        if twin and (ds, setting, twin) not in seen:
            seen.add((ds, setting, twin))
            pairs += [(ds, metric, (twin, metric), (setting, metric)) for (eds, esetting, metric) in entries
                      if eds == ds and esetting == setting and (ds, twin, metric) in entries]
    for without_metric, with_metric in manifest.compare:
        pairs += [(ds, f"{without_metric} → {with_metric}", (setting, without_metric), (setting, with_metric))
                  for (ds, setting, metric) in entries if metric == without_metric and (ds, setting, with_metric) in entries]
    out = []
    for ds, label, without, with_ in pairs:
        base, e = entries[(ds, *without)], entries[(ds, *with_)]
        seeds, diffs = paired(base.by_seed, e.by_seed)
        paper, source = paper_direction(entries, likes, ds, without, with_)
        withheld = NOT_WORKING if (ds, setting_value(with_[0], ATTACK_KEY)) in weak_attacks else ""
        out.append(Comparison(ds, label, without[0], with_[0], *paper, seeds, diffs, source, withheld,
                              base.percent and e.percent, tuple(dict.fromkeys(base.cells + e.cells))))
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
