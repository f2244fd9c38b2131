"""Recorded results read back: a table's folder under ``benchmarks/results/<preset>-<dataset>/<table>/``
holds the ``report.csv`` of ``tradeoff report`` and the sweep's ``summary.csv``. Each with/without
pair of one dataset becomes a :class:`~tradeoff.core.stats.Comparison` again, rebuilt from its
per-seed differences, so that its interval, p-value, Holm correction and verdict at its first
seeds are computed the same way as in the report (a report.csv of an earlier version, without the
later columns, reads too: its seeds are taken as 0, 1, ...)."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tradeoff.core.errors import TradeoffError
from tradeoff.core.stats import Comparison, verdict_counts
from tradeoff.sweeps.grids import load_table

REPORT_CSV, SUMMARY_CSV = "report.csv", "summary.csv"
NO_VERDICT = "no verdict ("


@dataclass
class RecordedPair:
    table: str  # table id
    comparison: Comparison
    paper: str  # the paper's numbers as shown: "without → with", or its difference and the dataset it is from
    holm: str = ""  # its verdict after the table's Holm correction ("" for a pair without a verdict)


@dataclass
class RecordedTable:
    id: str
    paper_table: str
    folder: Path
    pairs: list  # RecordedPair of the dataset, in the report's order
    runs: int = 0  # run rows in summary.csv
    seeds: list = field(default_factory=list)  # the distinct seeds in summary.csv

    @property
    def comparisons(self) -> list[Comparison]:
        return [p.comparison for p in self.pairs]


def _rows(path: Path) -> list[dict]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise TradeoffError(f"{path} is not a readable CSV file ({e}).") from None


def _numbers(text: str, kind=float) -> list:
    return [kind(v) for v in (text or "").split(";") if v.strip()]


def _paper_sides(row: dict, paper: dict) -> tuple[Optional[float], Optional[float]]:
    """The paper's values of a pair's two sides, from the value rows of its dataset: two cells'
    one metric, or one cell's two metrics ("without → with")."""
    ds, setting, without, metric = row["dataset"], row["setting"], row["without"], row["metric"]
    if without == setting and " → " in metric:
        first, second = metric.split(" → ", 1)
        return paper.get((ds, setting, first)), paper.get((ds, setting, second))
    return paper.get((ds, without, metric)), paper.get((ds, setting, metric))


def recorded_pair(table: str, row: dict, paper: dict) -> RecordedPair:
    """One ``kind`` pair row as a comparison: the paper's direction from its two sides where the
    dataset has them, else from the recorded ``paper_difference`` (another dataset's)."""
    differences = _numbers(row.get("ours_values", ""))
    seeds = _numbers(row.get("seeds", ""), int) or list(range(len(differences)))
    without, with_ = _paper_sides(row, paper)
    shown = f"{without:.1f} → {with_:.1f}" if without is not None and with_ is not None else ""
    if not shown and row.get("paper_difference"):
        without, with_ = 0.0, float(row["paper_difference"])  # only the direction and size are known
        shown = f"{with_:+.1f} ({row.get('paper_source') or 'another dataset'})"
    c = Comparison(row["dataset"], row["metric"], row["without"], row["setting"], without, with_, seeds, differences,
                   row.get("paper_source", ""), "", row.get("percent", "True") != "False")
    recorded = row.get("verdict", "")
    if recorded.startswith(NO_VERDICT) and c.verdict != recorded:  # withheld by the report (e.g. a weak attack)
        c.withheld = recorded[len(NO_VERDICT):].rstrip(")")
    return RecordedPair(table, c, shown)


def read_recorded(folder: Path, table: str, dataset: str = "MNIST") -> Optional[RecordedTable]:
    """The recorded results of ``table`` (its id) in ``folder`` for ``dataset`` (the paper's name);
    None when the folder holds no report.csv."""
    folder = Path(folder)
    if not (folder / REPORT_CSV).is_file():
        return None
    paper_table = load_table(table).table
    rows = [r for r in _rows(folder / REPORT_CSV) if r.get("table") == paper_table and r.get("dataset") == dataset]
    paper = {(r["dataset"], r["setting"], r["metric"]): float(r["paper"])
             for r in rows if r.get("kind") == "value" and r.get("paper")}
    pairs = [recorded_pair(table, r, paper) for r in rows if r.get("kind") == "pair"]
    for p, after in zip(pairs, verdict_counts([p.comparison for p in pairs]).holm):
        p.holm = after
    runs = _rows(folder / SUMMARY_CSV) if (folder / SUMMARY_CSV).is_file() else []
    seeds = sorted({int(r["seed"]) for r in runs if (r.get("seed") or "").strip().isdigit()})
    return RecordedTable(table, paper_table, folder, pairs, len(runs), seeds)
