"""A sweep's manifest, ``sweep-<table>-<preset>.json``: the table a sweep ran (its layout, the
paper's name, what the report compares) and every planned cell (dataset, setting, seed, spec
digest, run folder name, why it was skipped or failed, the metrics it reports). The sweep writes
it; ``tradeoff report`` and ``tradeoff sweep --status`` read it. The file is plain JSON; these
dataclasses are the only code that writes or reads its keys."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tradeoff.core.errors import TradeoffError
from tradeoff.records.folders import write_text_atomic

MANIFEST_PREFIX = "sweep-"


def manifest_path(out: Path, table_id: str, preset: str) -> Path:
    return Path(out) / f"{MANIFEST_PREFIX}{table_id}-{preset}.json"


@dataclass
class ManifestMetric:
    """One metric a cell reports: the paper's column name and the run record's keys that hold it."""

    paper: str
    keys: list
    percent: bool = True  # a fraction shown in percent, like the paper's
    datasets: Optional[list] = None  # only these datasets' cells report it (None: every dataset)
    beyond: bool = False  # a metric the paper does not report (ours only)
    like: Optional[str] = None  # beyond the paper: the paper's metric whose direction a verdict expects

    def reported_for(self, dataset: str) -> bool:
        return not self.datasets or dataset in self.datasets

    def to_dict(self) -> dict:
        return {"paper": self.paper, "keys": list(self.keys), "percent": self.percent, "datasets": self.datasets,
                "beyond": self.beyond, "like": self.like}

    @classmethod
    def from_dict(cls, d: dict) -> "ManifestMetric":
        return cls(d["paper"], list(d["keys"]), d.get("percent", True), d.get("datasets"), d.get("beyond", False),
                   d.get("like"))


@dataclass
class ManifestCell:
    """One planned (cell, dataset, seed) of a swept table."""

    dataset: str
    paper_dataset: str
    setting: str
    slug: str
    seed: int
    twin: Optional[str] = None  # the setting of its un-trained twin
    digest: Optional[str] = None  # None: the cell has no valid spec (see ``error``)
    run: Optional[str] = None  # its run folder's name
    error: Optional[str] = None  # why its spec is invalid or its run failed
    synthetic: bool = False  # it runs on generated data
    metrics: list = field(default_factory=list)  # ManifestMetric
    skipped: Optional[str] = None  # why its dataset could not be loaded

    @property
    def key(self) -> tuple:
        """What identifies a cell across sweeps into one folder."""
        return self.dataset, self.slug, self.seed

    def to_dict(self) -> dict:
        d = {"dataset": self.dataset, "paper_dataset": self.paper_dataset, "setting": self.setting,
             "slug": self.slug, "seed": self.seed, "twin": self.twin, "digest": self.digest, "run": self.run,
             "error": self.error, "synthetic": self.synthetic, "metrics": [m.to_dict() for m in self.metrics]}
        if self.skipped is not None:
            d["skipped"] = self.skipped
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ManifestCell":
        run = d.get("run")
        if run is not None and (not isinstance(run, str) or Path(run).name != run or run in ("", ".", "..")):
            raise ValueError(f"cell run {run!r} is not a folder name")
        return cls(d["dataset"], d["paper_dataset"], d["setting"], d["slug"], d["seed"], d.get("twin"),
                   d.get("digest"), d.get("run"), d.get("error"), bool(d.get("synthetic")),
                   [ManifestMetric.from_dict(m) for m in d.get("metrics") or []], d.get("skipped"))


@dataclass
class Manifest:
    """One swept table under one preset."""

    table: str  # table id
    paper_table: str  # the paper's name, as in paper_tables.csv
    title: str
    preset: str
    datasets: list
    layout_rows: list = field(default_factory=list)
    compare: list = field(default_factory=list)  # [metric without, metric with] pairs compared within a cell
    heatmap: dict = field(default_factory=dict)  # {rows, columns, metric}: the report's phase diagram
    skipped: dict = field(default_factory=dict)  # dataset -> why it was not swept
    cells: list = field(default_factory=list)  # ManifestCell

    def merged_with(self, earlier: Optional["Manifest"]) -> "Manifest":
        """This sweep's manifest with the cells of an earlier sweep into the same folder (other
        ``--datasets``, ``--cells`` or ``--seeds``) kept: a cell planned again replaces its old
        entry, and a dataset skipped earlier stays skipped unless this sweep ran it."""
        if earlier is None:
            return self
        planned = {c.key for c in self.cells}
        cells = self.cells + [c for c in earlier.cells if c.key not in planned]
        swept = {c.dataset for c in cells if not c.skipped}
        skipped = dict(self.skipped)
        skipped.update({ds: why for ds, why in earlier.skipped.items() if ds not in swept and ds not in skipped})
        return dataclasses.replace(self, skipped=skipped, cells=cells)

    def to_dict(self) -> dict:
        return {"table": self.table, "paper_table": self.paper_table, "title": self.title, "preset": self.preset,
                "datasets": self.datasets, "layout_rows": self.layout_rows, "compare": self.compare,
                "heatmap": self.heatmap, "skipped": self.skipped, "cells": [c.to_dict() for c in self.cells]}

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        return cls(d["table"], d["paper_table"], d.get("title", ""), d["preset"], list(d.get("datasets") or []),
                   d.get("layout_rows") or [], d.get("compare") or [], d.get("heatmap") or {},
                   dict(d.get("skipped") or {}), [ManifestCell.from_dict(c) for c in d["cells"]])

    def write(self, path: Path) -> None:
        """The whole manifest, written atomically (a reader sees the old file or the new one)."""
        write_text_atomic(Path(path), json.dumps(self.to_dict(), indent=1) + "\n")


def read_manifest(path: Path) -> Manifest:
    """The manifest in ``path``; one sentence if it is unreadable or not a manifest of this version."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        raise TradeoffError(f"{path} is not a readable sweep manifest.") from None
    if not isinstance(data, dict):
        raise TradeoffError(f"{path} is not a readable sweep manifest (a {type(data).__name__}, not a mapping).")
    try:
        return Manifest.from_dict(data)
    except ValueError as e:  # a hostile entry: a run folder outside the sweep's folder
        raise TradeoffError(f"{path} is not a readable sweep manifest ({e}).") from None
    except (KeyError, TypeError, AttributeError, IndexError):
        raise TradeoffError(f"{path} is not a sweep manifest this version of tradeoff reads; sweep its table "
                            "again into a new output folder.") from None


def read_manifests(out: Path) -> list[Manifest]:
    """Every sweep manifest in ``out``, by file name."""
    return [read_manifest(p) for p in sorted(Path(out).glob(f"{MANIFEST_PREFIX}*.json"))]
