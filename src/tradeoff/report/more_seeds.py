"""More seeds by a rule fixed in advance: every with/without pair of a finished sweep that is still
inconclusive at its first 3 seeds takes both of its cells to 10 seeds (the paper ran MNIST 10
times). This module finds those pairs in a sweep folder and writes the exact ``tradeoff sweep``
commands that extend them; the report then shows each pair's verdict at its first 3 seeds and at
all of them."""

from __future__ import annotations

import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tradeoff.core.errors import TradeoffError
from tradeoff.core.stats import FIRST_SEEDS, INCONCLUSIVE, MORE_SEEDS, Comparison
from tradeoff.records.manifest import Manifest, read_manifests
from tradeoff.report.collect import TableReport, build_reports
from tradeoff.sweeps.grids import expand, load_table


@dataclass
class PendingPair:
    """A pair inconclusive at its first seeds, with the cells (ours: dataset, slugs) behind it."""

    table: str  # table id
    dataset: str  # our dataset name (the sweep's --datasets)
    comparison: Comparison
    extended: bool  # every one of its cells is already planned at MORE_SEEDS seeds

    @property
    def label(self) -> str:
        c = self.comparison
        return f"{self.table}, {c.dataset}, {c.metric}: {c.without} → {c.with_}"


@dataclass
class MoreSeedsCommand:
    """One ``tradeoff sweep`` that takes the named cells of one table and dataset to MORE_SEEDS seeds."""

    table: str
    preset: str
    dataset: str
    cells: list  # slugs
    out: Path
    synthetic: bool = False
    overrides: list = field(default_factory=list)  # the --set options the sweep was run with
    data_root: Optional[str] = None
    workers: int = 1

    @property
    def argv(self) -> list[str]:
        """The arguments after ``tradeoff``."""
        args = ["sweep", self.table, "--preset", self.preset, "--datasets", self.dataset,
                "--cells", *self.cells, "--seeds", str(MORE_SEEDS), "--out", str(self.out)]
        args += [a for o in self.overrides for a in ("--set", o)]
        args += ["--data-root", self.data_root] if self.data_root else []
        args += ["--workers", str(self.workers)] if self.workers != 1 else []
        return args + (["--synthetic"] if self.synthetic else [])

    @property
    def line(self) -> str:
        return "tradeoff " + shlex.join(self.argv)


@dataclass
class MoreSeedsPlan:
    pending: list  # PendingPair, in the tables' order
    commands: list  # MoreSeedsCommand, one per table and dataset with a pair still to extend


def pending_pairs(manifest: Manifest, table: TableReport) -> list[PendingPair]:
    """The pairs of ``table`` whose verdict at their first seeds (0 to FIRST_SEEDS - 1) is inconclusive."""
    planned = Counter((c.paper_dataset, c.slug) for c in manifest.cells)
    ours = {(c.paper_dataset, c.slug): c.dataset for c in manifest.cells}
    out = []
    for c in table.comparisons:
        if not c.cells or c.first_seeds(FIRST_SEEDS).verdict != INCONCLUSIVE:
            continue
        cells = [(c.dataset, slug) for slug in c.cells]
        out.append(PendingPair(table.id, ours[cells[0]], c, all(planned[k] >= MORE_SEEDS for k in cells)))
    return out


def plan(folder: str | Path, overrides: Optional[list] = None, data_root: Optional[str] = None,
         workers: int = 1, only_tables: Optional[list] = None) -> MoreSeedsPlan:
    """The pending pairs of every table swept into ``folder`` (or of ``only_tables`` among them) and
    the commands that extend them, checked before anything runs: the commands must plan the same
    runs for seeds 0 to FIRST_SEEDS - 1 as the manifest holds (else the sweep was run with other
    options: ``overrides`` gives its ``--set``)."""
    folder = Path(folder)
    tables = build_reports(folder)
    manifests = read_manifests(folder)
    if only_tables:
        swept = [m.table for m in manifests]
        unknown = [t for t in only_tables if t not in swept]
        if unknown:
            raise TradeoffError(f"{', '.join(unknown)} not swept into {folder} (its tables: {', '.join(swept)}).")
    pending, commands = [], []
    for manifest, table in zip(manifests, tables):
        if only_tables and manifest.table not in only_tables:
            continue
        found = pending_pairs(manifest, table)
        pending += found
        by_dataset: dict = {}
        for p in found:
            if not p.extended:
                slugs = by_dataset.setdefault(p.dataset, [])
                slugs += [s for s in p.comparison.cells if s not in slugs]
        for dataset, slugs in by_dataset.items():
            command = MoreSeedsCommand(manifest.table, manifest.preset, dataset, slugs, folder,
                                       any(c.synthetic for c in manifest.cells), list(overrides or []), data_root,
                                       workers)
            if not command.synthetic:
                check_same_runs(manifest, command)
            commands.append(command)
    return MoreSeedsPlan(pending, commands)


def check_same_runs(manifest: Manifest, command: MoreSeedsCommand) -> None:
    """One sentence when ``command`` would plan other runs for the seeds already swept than
    ``manifest`` names (other ``--set`` options, or another version of a table or preset)."""
    grid = expand(load_table(command.table), command.preset, MORE_SEEDS, [command.dataset], command.overrides,
                  command.data_root, command.cells)
    planned = {(c.slug, c.seed): c.digest for c in grid.cells}
    swept = {(c.slug, c.seed): c.digest for c in manifest.cells
             if c.dataset == command.dataset and c.slug in command.cells and c.seed < FIRST_SEEDS}
    differing = sorted(f"{slug} s{seed}" for (slug, seed), digest in swept.items()
                       if planned.get((slug, seed)) != digest)
    if differing:
        raise TradeoffError(
            f"{command.table} ({command.dataset}) in {command.out} was swept with other options than "
            f"`{command.line}` gives its cells ({', '.join(differing)} differ); pass the sweep's own --set options "
            "(and --data-root) to `tradeoff more-seeds`.")


def plan_lines(p: MoreSeedsPlan) -> list[str]:
    """What ``tradeoff more-seeds`` prints: each pending pair, then the commands."""
    if not p.pending:
        return [f"No pair is inconclusive at its first {FIRST_SEEDS} seeds: nothing to extend."]
    lines = [f"Pairs inconclusive at their first {FIRST_SEEDS} seeds (the rule: both cells go to {MORE_SEEDS} seeds):"]
    lines += [f"  {q.label}" + (f"  [already at {MORE_SEEDS} seeds]" if q.extended else "") for q in p.pending]
    if p.commands:
        lines += ["Commands:"] + [f"  {c.line}" for c in p.commands]
    else:
        lines += [f"Every one of their cells is already at {MORE_SEEDS} seeds."]
    return lines
