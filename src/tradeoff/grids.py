"""The paper's tables as grids of specs.

A table definition (``configs/tables/<id>.yaml``, shipped inside the package) is a base spec
plus a list of cells; each cell is the paper's setting label (as in ``paper_tables.csv``) and the
spec overrides that realise it. Budget presets (``configs/presets.yaml``: ``paper``, ``cpu``,
``smoke``) are override layers per dataset. :func:`expand` turns (table, preset, seeds, datasets)
into one resolved :class:`~tradeoff.spec.Spec` per (cell, dataset, seed), each named by its digest.
The layer order is written at the top of ``presets.yaml``.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Optional

from tradeoff.errors import TradeoffError
from tradeoff.config import merge, parse_overrides, read_yaml, spec_from_dict
from tradeoff.data import DATASETS
from tradeoff.options import close_match
from tradeoff.resolve import resolve
from tradeoff.spec import Spec


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
               "compare", "beyond", "heatmap"}
_CELL_KEYS = {"setting", "slug", "set", "datasets", "by_dataset", "twin", "metrics"}


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
    for key in ("id", "table", "cells"):
        if key not in raw:
            raise TradeoffError(f"{where}: a table needs {key!r}.")
    table_metrics = _metric_defs(raw["metrics"], where) if "metrics" in raw else None
    cells = []
    for i, c in enumerate(raw["cells"] or []):
        cw = f"{where}, cell {i + 1}"
        if not isinstance(c, dict) or "setting" not in c:
            raise TradeoffError(f"{cw}: a cell is a mapping with a 'setting'.")
        _unknown(c, _CELL_KEYS, cw)
        metrics = _metric_defs(c["metrics"], cw) if "metrics" in c else None
        if metrics is None and table_metrics is None:
            raise TradeoffError(f"{cw}: no 'metrics' for this cell or its table.")
        cells.append(CellDef(setting=str(c["setting"]), slug=str(c.get("slug") or slugify(str(c["setting"]))),
                             overrides=c.get("set") or {}, datasets=c.get("datasets"),
                             by_dataset=c.get("by_dataset") or {}, twin=c.get("twin"), metrics=metrics))
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


def expand(table: TableDef, preset: str, seeds: Optional[int] = None, datasets: Optional[list] = None,
           overrides: Optional[list] = None, data_root: Optional[str] = None,
           only: Optional[list] = None) -> Grid:
    """Every (cell, dataset, seed) of ``table`` under ``preset``. Datasets the preset skips or this
    version does not know are listed in ``skipped``; a cell whose spec is invalid (e.g. a defence
    that is not implemented) gets ``error`` instead of a spec, so one bad cell never stops a grid.
    ``only``: shell patterns of cell slugs to keep (e.g. ``["*adv-training"]``)."""
    presets_file = load_presets()
    all_presets = presets_file.get("presets", {})
    if preset not in all_presets:
        raise TradeoffError(f"unknown preset {preset!r}; choose one of: {', '.join(all_presets)}.")
    p = all_presets[preset] or {}
    if seeds is not None and seeds < 1:
        raise TradeoffError(f"--seeds must be at least 1, not {seeds}.")
    dataset_info = presets_file.get("datasets", {})
    user = parse_overrides(list(overrides or []))
    unknown = [ds for ds in datasets or [] if ds not in DATASETS]
    if unknown:
        raise TradeoffError(f"unknown dataset {unknown[0]!r} in --datasets"
                            f"{close_match(unknown[0], DATASETS.names())}; choose from: {', '.join(DATASETS.names())}.")
    chosen = list(datasets) if datasets else list(table.datasets)
    cells, skipped = [], {}
    for ds in chosen:
        if ds not in DATASETS:
            skipped[ds] = f"dataset {ds!r} is not known to this version of tradeoff"
            continue
        preset_layer = _layer(p.get("layers") or {}, ds)
        table_layer = _layer(table.presets.get(preset) or {}, ds)
        if "skip" in preset_layer:
            skipped[ds] = f"preset {preset!r}: {preset_layer['skip']}"
            continue
        if "skip" in table_layer:
            skipped[ds] = f"table {table.id}, preset {preset!r}: {table_layer['skip']}"
            continue
        seed_counts = p.get("seeds") or {}
        n_seeds = seeds if seeds is not None else int(seed_counts.get(ds, seed_counts.get("default", 1)))
        info = dataset_info.get(ds) or {}
        paper_ds = info.get("paper_name", ds)
        applicable = [c for c in table.cells if c.applies_to(ds)
                      and (not only or any(fnmatch.fnmatchcase(c.slug, pat) for pat in only))]
        if not applicable:
            skipped[ds] = f"table {table.id} has no cell for dataset {ds!r}"
            continue
        for cell in applicable:
            raw = merge({}, info.get("spec") or {})
            for layer in (preset_layer, table.base, table.by_dataset.get(ds) or {}, cell.overrides,
                          cell.by_dataset.get(ds) or {}, table_layer, user):
                raw = merge(raw, layer)
            for seed in range(n_seeds):
                g = GridCell(table=table.id, paper_table=table.table, dataset=ds, paper_dataset=paper_ds,
                             setting=cell.setting, slug=cell.slug, seed=seed,
                             metrics=cell.metrics or table.metrics, twin=cell.twin)
                full = merge(raw, {"seed": seed, "data": {"dataset": ds}})
                full["name"] = f"{table.id}-{ds}-{cell.slug}-s{seed}"
                if data_root:
                    full = merge(full, {"data": {"root": str(data_root)}})
                try:
                    g.spec = resolve(spec_from_dict(full))
                    g.digest = g.spec.digest()
                except TradeoffError as e:
                    g.error = str(e)
                cells.append(g)
    return Grid(table, preset, cells, skipped)
