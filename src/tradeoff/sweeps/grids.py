"""The paper's tables as grids of specs.

A table definition (``configs/tables/<id>.yaml``, shipped inside the package) is a base spec
plus its cells; each cell is the paper's setting label (as in ``paper_tables.csv``) and the spec
overrides that realise it. The cells are either listed (``cells:``) or the product of ``axes``
filling a ``cell`` template (:func:`axes_cells`). Budget presets (``configs/presets.yaml``: ``paper``, ``cpu``,
``smoke``) are override layers per dataset. :func:`expand` turns (table, preset, seeds, datasets)
into one resolved :class:`~tradeoff.core.spec.Spec` per (cell, dataset, seed), each named by its digest.
The layer order is written at the top of ``presets.yaml``.
"""

from __future__ import annotations

import fnmatch
import itertools
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Optional

from tradeoff.config.build import merge, parse_overrides, read_yaml, spec_from_dict
from tradeoff.config.resolve import resolve
from tradeoff.core.errors import TradeoffError
from tradeoff.core.options import close_match
from tradeoff.core.spec import Spec, kinded_sections
from tradeoff.data import DATASETS
from tradeoff.sweeps.synthetic import SyntheticData, cut, record


def configs_dir() -> Path:
    return Path(str(resources.files("tradeoff") / "configs"))


# --------------------------------------------------------------------------- definitions


@dataclass
class MetricDef:
    """A column of the paper (``paper``) and the metric keys of ours that fill it (first found)."""

    paper: str
    keys: list
    percent: bool = True  # our value is a fraction shown in percent, like the paper's
    datasets: Optional[list] = None  # only these datasets' cells report it (None: every dataset)
    beyond: bool = False  # a metric the paper does not report (ours only)
    like: Optional[str] = None  # beyond the paper: the paper's metric whose direction a verdict expects

    def to_dict(self) -> dict:
        return {"paper": self.paper, "keys": list(self.keys), "percent": self.percent, "datasets": self.datasets,
                "beyond": self.beyond, "like": self.like}


@dataclass
class CellDef:
    setting: str
    slug: str
    overrides: dict = field(default_factory=dict)
    datasets: Optional[list] = None  # None: every dataset of the table
    by_dataset: dict = field(default_factory=dict)
    twin: Optional[str] = None  # the setting of this cell's un-trained twin
    metrics: Optional[list] = None  # MetricDefs; None: the table's

    def applies_to(self, dataset: str) -> bool:
        return self.datasets is None or dataset in self.datasets


@dataclass
class TableDef:
    id: str
    table: str  # the paper's name, as in paper_tables.csv
    title: str
    datasets: list
    cells: list
    metrics: list
    layout_rows: list
    beyond: bool = False  # not one of the paper's tables: `tradeoff sweep all` leaves it out
    heatmap: dict = field(default_factory=dict)  # {rows, columns, metric}: the report's phase diagram
    base: dict = field(default_factory=dict)
    by_dataset: dict = field(default_factory=dict)
    presets: dict = field(default_factory=dict)
    source: str = ""
    compare: list = field(default_factory=list)  # [without metric, with metric]: pairs within a cell the paper compares


_TABLE_KEYS = {"id", "table", "title", "datasets", "layout", "metrics", "base", "by_dataset", "cells", "presets",
               "compare", "beyond", "heatmap", "cell", "axes"}
_CELL_KEYS = {"setting", "slug", "set", "datasets", "by_dataset", "twin", "metrics"}
_TEMPLATE_KEYS = {"setting", "slug", "set", "datasets", "by_dataset", "metrics"}
_AXIS_KEYS = {"set", "values"}
_VALUE_KEYS = {"value", "slug", "set", "datasets", "by_dataset", "twin", "metrics", "literal"}


def slugify(text: str) -> str:
    values = [part.split("=", 1)[-1] for part in text.split(";")]
    return re.sub(r"[^a-z0-9]+", "-", " ".join(values).lower()).strip("-")[:60] or "cell"


def _metric_defs(raw, where: str) -> list:
    if not isinstance(raw, dict) or not raw:
        raise TradeoffError(f"{where}: 'metrics' must map the paper's metric names to metric keys.")
    out = []
    for paper, value in raw.items():
        if isinstance(value, str):
            out.append(MetricDef(str(paper), [value]))
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            out.append(MetricDef(str(paper), list(value)))
        elif isinstance(value, dict) and "key" in value:
            keys = value["key"] if isinstance(value["key"], list) else [value["key"]]
            out.append(MetricDef(str(paper), keys, bool(value.get("percent", True)), value.get("datasets"),
                                 bool(value.get("beyond", False)), value.get("like")))
        else:
            raise TradeoffError(f"{where}: metric {paper!r} must name a metric key, a list of keys or "
                                f"{{key: ..., percent: ..., datasets: [...], beyond: true, like: ...}}, not {value!r}.")
    return out


def _unknown(raw: dict, allowed: set, where: str) -> None:
    extra = sorted(set(raw) - allowed)
    if extra:
        raise TradeoffError(f"{where}: unknown key(s) {', '.join(map(repr, extra))}; "
                            f"allowed: {', '.join(sorted(allowed))}.")


def parse_table(raw: dict, source: str = "") -> TableDef:
    where = source or "table"
    _unknown(raw, _TABLE_KEYS, where)
    for key in ("id", "table"):
        if key not in raw:
            raise TradeoffError(f"{where}: a table needs {key!r}.")
    if "cells" in raw and "axes" in raw:
        raise TradeoffError(f"{where}: a table lists 'cells' or declares 'axes', not both.")
    if "cell" in raw and "axes" not in raw:
        raise TradeoffError(f"{where}: 'cell' is the template of 'axes', and this table has no 'axes'.")
    if "cells" not in raw and "axes" not in raw:
        raise TradeoffError(f"{where}: a table needs 'cells' (a list) or 'axes' (with a 'cell' template).")
    table_metrics = _metric_defs(raw["metrics"], where) if "metrics" in raw else None
    if "cells" in raw:
        cells = [_cell_def(c, f"{where}, cell {i + 1}", table_metrics) for i, c in enumerate(raw["cells"] or [])]
    else:
        cells = [_cell_def(c, f"{where}, axes cell {c['setting']!r}", table_metrics)
                 for c in axes_cells(raw.get("cell"), raw["axes"], where)]
    settings = {c.setting for c in cells}
    for c in cells:
        if c.twin is not None and c.twin not in settings:
            raise TradeoffError(f"{where}: cell {c.setting!r} names a twin {c.twin!r} that is not a cell.")
    compare = raw.get("compare") or []
    metric_names = {m.paper for m in table_metrics or []} | {m.paper for c in cells for m in c.metrics or []}
    for pair in compare:
        if not (isinstance(pair, list) and len(pair) == 2 and all(m in metric_names for m in pair)):
            raise TradeoffError(f"{where}: 'compare' entries are [without metric, with metric] pairs of the "
                                f"table's metrics, not {pair!r}.")
    heatmap = raw.get("heatmap") or {}
    if heatmap and (set(heatmap) != {"rows", "columns", "metric"}
                    or heatmap["metric"] not in metric_names):
        raise TradeoffError(f"{where}: 'heatmap' is {{rows: setting key, columns: setting key, metric: a metric "
                            f"of the table}}, not {heatmap!r}.")
    layout = raw.get("layout") or {}
    return TableDef(id=str(raw["id"]), table=str(raw["table"]), title=str(raw.get("title", raw["table"])),
                    datasets=list(raw.get("datasets") or []), cells=cells, metrics=table_metrics or [],
                    layout_rows=list(layout.get("rows") or []), base=raw.get("base") or {},
                    by_dataset=raw.get("by_dataset") or {}, presets=raw.get("presets") or {}, source=source,
                    compare=[list(p) for p in compare], beyond=bool(raw.get("beyond", False)), heatmap=dict(heatmap))


def _cell_def(c, cw: str, table_metrics: Optional[list]) -> CellDef:
    if not isinstance(c, dict) or "setting" not in c:
        raise TradeoffError(f"{cw}: a cell is a mapping with a 'setting'.")
    _unknown(c, _CELL_KEYS, cw)
    metrics = _metric_defs(c["metrics"], cw) if "metrics" in c else None
    if metrics is None and table_metrics is None:
        raise TradeoffError(f"{cw}: no 'metrics' for this cell or its table.")
    return CellDef(setting=str(c["setting"]), slug=str(c.get("slug") or slugify(str(c["setting"]))),
                   overrides=c.get("set") or {}, datasets=c.get("datasets"),
                   by_dataset=c.get("by_dataset") or {}, twin=c.get("twin"), metrics=metrics)


# --------------------------------------------------------------------------- axes


def _mapping(raw, allowed: set, where: str) -> dict:
    if not isinstance(raw, dict):
        raise TradeoffError(f"{where} must be a mapping (keys: {', '.join(sorted(allowed))}), not {raw!r}.")
    _unknown(raw, allowed, where)
    return raw


def _values(axis: dict, aw: str) -> list[dict]:
    """An axis's values, each with its 'value' text, slug and 'set' (the axis's where it gives none)."""
    if not isinstance(axis.get("values"), list) or not axis["values"]:
        raise TradeoffError(f"{aw}: 'values' must be a non-empty list of {{value: ..., ...}} mappings.")
    values = []
    for value in axis["values"]:
        value = dict(_mapping(value, _VALUE_KEYS, f"{aw}, value"))
        if "value" not in value:
            raise TradeoffError(f"{aw}: every value needs its 'value' (the setting's text), not {value!r}.")
        value["value"] = str(value["value"])
        value.setdefault("slug", slugify(value["value"]))
        value.setdefault("set", axis.get("set") or {})
        literal = value.get("literal")
        unknown = [ds for ds in literal if ds not in DATASETS] if isinstance(literal, dict) else []
        if unknown:
            raise TradeoffError(f"{aw}: value {value['value']!r}: its literal maps datasets to values, and "
                                f"{unknown[0]!r} is not a dataset{close_match(unknown[0], DATASETS.names())}.")
        values.append(value)
    return values


def _axes(raw, where: str) -> dict:
    """{axis name: its values}, each twin checked to be a value of its axis."""
    if not isinstance(raw, dict) or not raw:
        raise TradeoffError(f"{where}: 'axes' must map axis names to {{set: ..., values: [...]}}, not {raw!r}.")
    axes = {}
    for name, axis in raw.items():
        aw = f"{where}, axis {name!r}"
        values = _values(_mapping(axis, _AXIS_KEYS, aw), aw)
        texts = [v["value"] for v in values]
        for value in values:
            if value.get("twin") is not None and str(value["twin"]) not in texts:
                raise TradeoffError(f"{aw}: value {value['value']!r} names a twin {value['twin']!r} that is not "
                                    f"a value of this axis.")
        axes[str(name)] = values
    return axes


def _format(template: str, texts: dict, where: str, key: str) -> str:
    try:
        return template.format(**texts)
    except (KeyError, IndexError, ValueError) as e:
        raise TradeoffError(f"{where}: 'cell.{key}' {template!r} names no axis ({e}); "
                            f"its {{placeholders}} are the axes: {', '.join(texts)}.") from None


def _literals(node, picked: dict, where: str):
    """``node`` with each ``$axis`` string replaced by that axis value's literal: (the tree with
    the scalar literals in place and the per-dataset ones left out, {dataset: the tree of those})."""
    if isinstance(node, str) and node.startswith("$"):
        value = picked.get(node[1:])
        if value is None or "literal" not in value:
            raise TradeoffError(f"{where}: {node!r} needs a 'literal' in the value of axis {node[1:]!r}"
                                + (f" ({value['value']!r})." if value else f"; the axes are {', '.join(picked)}."))
        literal = value["literal"]
        return (None, dict(literal)) if isinstance(literal, dict) else (literal, {})
    if not isinstance(node, dict):
        return node, {}
    static, per_dataset = {}, {}
    for key, child in node.items():
        kept, literals = _literals(child, picked, where)
        if kept is not None or not literals:
            static[key] = kept
        for dataset, leaf in literals.items():
            per_dataset.setdefault(dataset, {})[key] = leaf
    return (static if static or not node else None), per_dataset


def _product_cell(template: dict, picked: dict, axes: dict, where: str) -> Optional[dict]:
    """The cell of one value per axis (``picked``), as a ``cells:`` entry; None when the values'
    datasets have none in common."""
    texts = {name: v["value"] for name, v in picked.items()}
    setting_template = str(template.get("setting", "; ".join(f"{{{n}}}" for n in axes)))
    setting = _format(setting_template, texts, where, "setting")
    slugs = {name: v["slug"] for name, v in picked.items()}
    slug = _format(str(template["slug"]), slugs, where, "slug") if "slug" in template else slugify(setting)
    cw = f"{where}, cell {setting!r}"
    layers = [template] + list(picked.values())
    overrides, by_dataset, datasets, metrics = {}, {}, None, template.get("metrics")
    for layer in layers:
        overrides = merge(overrides, layer.get("set") or {})
        for ds, extra in (layer.get("by_dataset") or {}).items():
            by_dataset[ds] = merge(by_dataset.get(ds, {}), extra)
        if layer.get("datasets") is not None:
            datasets = [d for d in (layer["datasets"] if datasets is None else datasets) if d in layer["datasets"]]
        metrics = layer.get("metrics", metrics)
    if datasets == []:
        return None
    overrides, literals = _literals(overrides, picked, cw)
    for ds, extra in literals.items():
        by_dataset[ds] = merge(by_dataset.get(ds, {}), extra)
    cell = {"setting": setting, "slug": slug, "set": overrides or {}, "datasets": datasets, "by_dataset": by_dataset}
    twins = {name: v["twin"] for name, v in picked.items() if v.get("twin") is not None}
    if twins:
        cell["twin"] = _format(setting_template, {**texts, **{n: str(t) for n, t in twins.items()}}, where, "setting")
    if metrics is not None:
        cell["metrics"] = _metric_keys(metrics, picked, cw)
    return cell


def _metric_keys(metrics, picked: dict, where: str):
    """The cell's metrics with ``{axis}`` in a metric key replaced by that axis value's literal
    (``{defense}_der`` -> ``anp_der``): cells that share one run, each reading its own keys."""
    literals = {name: v["literal"] for name, v in picked.items() if isinstance(v.get("literal"), str)}

    def key(text):
        if not isinstance(text, str) or "{" not in text:
            return text
        try:
            return text.format(**literals)
        except (KeyError, IndexError, ValueError) as e:
            raise TradeoffError(f"{where}: metric key {text!r} names no axis with a literal ({e}); those with "
                                f"one: {', '.join(literals) or 'none'}.") from None

    def keys(value):
        if isinstance(value, list):
            return [key(v) for v in value]
        if isinstance(value, dict) and "key" in value:
            return {**value, "key": keys(value["key"])}
        return key(value)

    return {paper: keys(value) for paper, value in metrics.items()} if isinstance(metrics, dict) else metrics


def axes_cells(template, axes, where: str) -> list[dict]:
    """A table's cells from its ``axes``: one cell per combination of one value of each axis (the
    first axis outermost), each the ``cell`` template with every value's contribution on top:

    - ``setting`` and ``slug``: the template's, each ``{axis}`` replaced by the value's text (in
      ``setting``) or slug (in ``slug``, default: the text slugified);
    - ``set``: the template's, then each value's (the axis's ``set`` where a value gives none), in
      axis order; ``$axis`` anywhere in it is that axis value's ``literal``, and a literal that maps
      datasets to values is per dataset (it goes to the cell's ``by_dataset``);
    - ``by_dataset`` merged, ``datasets`` intersected (no dataset in common: no cell), ``metrics``
      the last value's that has some (else the template's, else the table's), each ``{axis}`` in
      a metric key replaced by that axis value's (string) ``literal``;
    - ``twin``: a value's twin names another value of its axis: the cell with that value instead.
    """
    where = f"{where}, axes"
    template = dict(_mapping(template if template is not None else {}, _TEMPLATE_KEYS, f"{where}: 'cell'"))
    values = _axes(axes, where)
    cells = []
    for combination in itertools.product(*values.values()):
        cell = _product_cell(template, dict(zip(values, combination)), values, where)
        if cell is not None:
            cells.append(cell)
    return cells


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower()).replace("supplement", "supp")


def _table_files() -> dict:
    return {p.stem: p for p in sorted((configs_dir() / "tables").glob("*.yaml"))}


def table_ids() -> list[str]:
    return list(_table_files())


def paper_table_ids() -> list[str]:
    """The paper's tables (what ``tradeoff sweep all`` runs): every table not marked ``beyond``."""
    return [tid for tid, p in _table_files().items() if not read_yaml(p, "table file").get("beyond", False)]


def load_table(name: str) -> TableDef:
    """A table by id (``table1a``), short id (``1a``, ``supp1``), paper name (``Table 1(a)``) or
    the path of a table YAML file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return parse_table(read_yaml(path, "table file"), str(path))
    files = _table_files()
    aliases = {}
    for stem, p in files.items():
        aliases[_norm(stem)] = p
        aliases[_norm(stem.replace("table", ""))] = p
    p = aliases.get(_norm(name))
    if p is None:
        for candidate in files.values():
            raw = read_yaml(candidate, "table file")
            if _norm(str(raw.get("table", ""))) == _norm(name):
                p = candidate
                break
    if p is None:
        raise TradeoffError(f"unknown table {name!r}; choose one of: {', '.join(files)} (or a table YAML file).")
    return parse_table(read_yaml(p, "table file"), p.name)


def load_presets() -> dict:
    return read_yaml(configs_dir() / "presets.yaml", "presets file")


def preset_names() -> list[str]:
    return list(load_presets().get("presets", {}))


# --------------------------------------------------------------------------- expansion


@dataclass
class GridCell:
    """One (cell, dataset, seed) of a table: its resolved spec, or why there is none."""

    table: str  # table id
    paper_table: str
    dataset: str
    paper_dataset: str
    setting: str
    slug: str
    seed: int
    metrics: list
    twin: Optional[str] = None
    spec: Optional[Spec] = None
    digest: Optional[str] = None
    error: Optional[str] = None
    synthetic_cuts: Optional[dict] = None  # a synthetic cell's cuts: {field: {"from": ..., "to": ...}}
    records: dict = field(default_factory=dict)  # JSON files for its run folder by name (synthetic.json)

    @property
    def run_name(self) -> str:
        return f"{self.table}-{self.dataset}-{self.slug}-s{self.seed}-{self.digest}"

    @property
    def label(self) -> str:
        return f"{self.table} {self.dataset} {self.slug} s{self.seed}"

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "paper_dataset": self.paper_dataset, "setting": self.setting,
                "slug": self.slug, "seed": self.seed, "twin": self.twin, "digest": self.digest,
                "run": self.run_name if self.digest else None, "error": self.error,
                "synthetic": self.synthetic_cuts is not None,
                "metrics": [m.to_dict() for m in self.metrics]}


@dataclass
class Grid:
    table: TableDef
    preset: str
    cells: list
    skipped: dict  # dataset -> one-line reason


def _layer(layers: dict, dataset: str) -> dict:
    out = merge({}, layers.get("default") or {})
    return merge(out, layers.get(dataset) or {})


@dataclass
class _DatasetPlan:
    """One dataset of a grid: its preset and table layers, seed count and the cells it runs."""

    dataset: str
    info: dict  # presets.yaml's facts of the dataset (paper name, spec)
    preset_layer: dict
    table_layer: dict
    seeds: int
    cells: list
    components: dict = field(default_factory=dict)  # the preset's budgets of components: {section: {kind: options}}


def _preset(preset: str) -> tuple[dict, dict]:
    """(the presets file, the preset's entry)."""
    presets_file = load_presets()
    all_presets = presets_file.get("presets", {})
    if preset not in all_presets:
        raise TradeoffError(f"unknown preset {preset!r}; choose one of: {', '.join(all_presets)}.")
    return presets_file, all_presets[preset] or {}


def _check_request(seeds: Optional[int], datasets: Optional[list]) -> None:
    if seeds is not None and seeds < 1:
        raise TradeoffError(f"--seeds must be at least 1, not {seeds}.")
    unknown = [ds for ds in datasets or [] if ds not in DATASETS]
    if unknown:
        raise TradeoffError(f"unknown dataset {unknown[0]!r} in --datasets"
                            f"{close_match(unknown[0], DATASETS.names())}; choose from: {', '.join(DATASETS.names())}.")


def _plan(table: TableDef, preset: str, presets_file: dict, chosen: dict, ds: str, seeds: Optional[int],
          only: Optional[list]):
    """The dataset's :class:`_DatasetPlan`, or the one-line reason it is skipped."""
    if ds not in DATASETS:
        return f"dataset {ds!r} is not known to this version of tradeoff"
    preset_layer = _layer(chosen.get("layers") or {}, ds)
    table_layer = _layer(table.presets.get(preset) or {}, ds)
    if "skip" in preset_layer:
        return f"preset {preset!r}: {preset_layer['skip']}"
    if "skip" in table_layer:
        return f"table {table.id}, preset {preset!r}: {table_layer['skip']}"
    seed_counts = chosen.get("seeds") or {}
    n_seeds = seeds if seeds is not None else int(seed_counts.get(ds, seed_counts.get("default", 1)))
    applicable = [c for c in table.cells if c.applies_to(ds)
                  and (not only or any(fnmatch.fnmatchcase(c.slug, pat) for pat in only))]
    if not applicable:
        return f"table {table.id} has no cell for dataset {ds!r}"
    info = presets_file.get("datasets", {}).get(ds) or {}
    return _DatasetPlan(ds, info, preset_layer, table_layer, n_seeds, applicable, chosen.get("components") or {})


def _cell_raw(table: TableDef, plan: _DatasetPlan, cell: CellDef) -> dict:
    """The cell's spec as plain data, every layer of ``presets.yaml``'s order up to ``--set``."""
    ds = plan.dataset
    raw = merge({}, plan.info.get("spec") or {})
    for layer in (plan.preset_layer, table.base, table.by_dataset.get(ds) or {}, cell.overrides,
                  cell.by_dataset.get(ds) or {}, plan.table_layer):
        raw = merge(raw, layer)
    return component_budgets(raw, plan.components)


def component_budgets(raw: dict, components: dict) -> dict:
    """``raw`` with a preset's budget for each component it uses (``components: {section: {kind:
    options}}`` in presets.yaml) beneath the cell's own values: a component's options cannot sit
    in a preset's layers, which every cell shares whatever kind it picks."""
    out = dict(raw)
    for section, by_kind in components.items():
        own = raw.get(section) or {}
        kind = own.get(kinded_sections()[section].kind_key)
        if kind in (by_kind or {}):
            out[section] = {**by_kind[kind], **own}
    return out


def _seed_cell(table: TableDef, plan: _DatasetPlan, cell: CellDef, seed: int, raw: dict, cuts: Optional[dict],
               synthetic: Optional[SyntheticData], data_root: Optional[str]) -> GridCell:
    """One seed of a cell, its spec resolved (or the one sentence why it is invalid)."""
    ds = plan.dataset
    g = GridCell(table=table.id, paper_table=table.table, dataset=ds, paper_dataset=plan.info.get("paper_name", ds),
                 setting=cell.setting, slug=cell.slug, seed=seed,
                 metrics=cell.metrics or table.metrics, twin=cell.twin, synthetic_cuts=cuts,
                 records={"synthetic.json": record(cuts, synthetic)} if cuts is not None else {})
    full = merge(raw, {"seed": seed, "data": {"dataset": ds}})
    full["name"] = f"{table.id}-{ds}-{cell.slug}-s{seed}"
    if data_root:
        full = merge(full, {"data": {"root": str(data_root)}})
    try:
        g.spec = resolve(spec_from_dict(full))
        g.digest = g.spec.digest()
    except TradeoffError as e:
        g.error = str(e)
    return g


def expand(table: TableDef, preset: str, seeds: Optional[int] = None, datasets: Optional[list] = None,
           overrides: Optional[list] = None, data_root: Optional[str] = None,
           only: Optional[list] = None, synthetic: Optional[SyntheticData] = None) -> Grid:
    """Every (cell, dataset, seed) of ``table`` under ``preset``. Datasets the preset skips or this
    version does not know are listed in ``skipped``; a cell whose spec is invalid (e.g. a defence
    that is not implemented) gets ``error`` instead of a spec, so one bad cell never stops a grid.
    ``only``: shell patterns of cell slugs to keep (e.g. ``["*adv-training"]``). ``synthetic``: the
    generated data to run on, with the synthetic cuts (:mod:`tradeoff.sweeps.synthetic`) as the last layer
    below ``--set``."""
    presets_file, chosen = _preset(preset)
    _check_request(seeds, datasets)
    user = parse_overrides(list(overrides or []))
    if synthetic is not None:
        data_root = str(synthetic.root)
    cells, skipped = [], {}
    for ds in list(datasets) if datasets else list(table.datasets):
        plan = _plan(table, preset, presets_file, chosen, ds, seeds, only)
        if isinstance(plan, str):
            skipped[ds] = plan
            continue
        for cell in plan.cells:
            raw, cuts = _cell_raw(table, plan, cell), None
            if synthetic is not None:
                raw, cuts = cut(raw, ds, synthetic)
            raw = merge(raw, user)
            cells += [_seed_cell(table, plan, cell, seed, raw, cuts, synthetic, data_root)
                      for seed in range(plan.seeds)]
    return Grid(table, preset, cells, skipped)
