"""What a whole sweep costs, summed from measured per-cell times.

Lists the distinct runs a sweep would make (as ``tradeoff sweep --dry-run`` does: cells shared by
tables run once) and gives each the wall time measured for the same cell, any seed, in finished
run folders (``--measured``: sweep outputs; a cell's seeds cost the same, so one measured seed
stands for all); a cell never measured takes the time of one that differs from it only in the
trigger or the poisoning (what is stamped on which images), and says so. The time of a run is the
sum of its timed stages (training, evaluation, learning curve, masking checks, saliency,
AutoAttack, backdoor defences: the report's cost table), so loading data and writing files, a
few seconds a run, are left out. The wall time with
``--workers N`` is the pool's own schedule replayed: the runs in the sweep's order (seed by seed),
each started on the first free worker.

Measure on a machine doing nothing else, with the sweep's own ``--workers`` and
OMP_NUM_THREADS=1 (each worker then has one core, as in the measured runs). Runs without a
measurement are listed and counted apart, never guessed.

    python benchmarks/sweep_cost.py all --preset cpu --datasets mnist --seeds 3 --workers 2 \\
        --measured sweeps/cpu-seed0 [--markdown results/sweep-cost/cpu-mnist.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import statistics
from collections import defaultdict
from pathlib import Path

import yaml

from tradeoff.config.build import spec_from_dict
from tradeoff.core.spec import Spec
from tradeoff.records.folders import finished_runs
from tradeoff.records.record import read_record
from tradeoff.report.collect import run_seconds
from tradeoff.sweeps import grids
from tradeoff.sweeps.sweep import seed_major

from outputs import emit


def any_seed(spec) -> str:
    """The digest of ``spec`` at seed 0: equal for every seed of one cell."""
    return dataclasses.replace(spec, seed=0).digest()


def same_cost(spec) -> str:
    """The digest of ``spec`` at seed 0 with the default trigger and poisoning: equal for cells that
    differ only in what is stamped on which images (one batched stamp; training, evaluation and
    the defences cost the same)."""
    plain = Spec()
    return dataclasses.replace(spec, seed=0, trigger=plain.trigger, poison=plain.poison).digest()


def measured_seconds(folders: list[Path]) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """The measured seconds of every finished run, by :func:`any_seed` and by :func:`same_cost`."""
    by_cell: dict[str, list[float]] = defaultdict(list)
    by_cost: dict[str, list[float]] = defaultdict(list)
    for folder in folders:
        for run in finished_runs(folder):
            spec = spec_from_dict(yaml.safe_load((run / "spec.yaml").read_text()))
            seconds = run_seconds(read_record(run))
            by_cell[any_seed(spec)].append(seconds)
            by_cost[same_cost(spec)].append(seconds)
    return by_cell, by_cost


def makespan(durations: list[float], workers: int) -> float:
    """Wall time of running ``durations`` in order, each on the first worker to be free."""
    free_at = [0.0] * workers
    for d in durations:
        heapq.heappush(free_at, heapq.heappop(free_at) + d)
    return max(free_at)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tables", nargs="+", help="table ids or 'all'")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--datasets", nargs="+")
    p.add_argument("--seeds", type=int)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--measured", nargs="+", type=Path, required=True, help="sweep outputs with finished runs")
    p.add_argument("--markdown", type=Path, help="also write the table here")
    args = p.parse_args(argv)

    tables = grids.paper_table_ids() if args.tables == ["all"] else args.tables
    cells = [c for t in tables for c in grids.expand(grids.load_table(t), args.preset, args.seeds, args.datasets).cells
             if c.spec is not None]
    distinct: dict = {}
    for c in cells:
        distinct.setdefault(c.digest, c)  # as the sweep: the first table naming a spec runs it
    queue = seed_major(list(distinct.values()))
    times, alike = measured_seconds(args.measured)
    per_table: dict[str, list[float]] = defaultdict(list)
    durations, by_alike, unmeasured = [], [], []
    for c in queue:
        seen = times.get(any_seed(c.spec))
        if not seen:
            seen = alike.get(same_cost(c.spec))
            if seen:
                by_alike.append(c.label)
        if seen:
            durations.append(statistics.fmean(seen))
            per_table[c.table].append(durations[-1])
        else:
            unmeasured.append(c.label)

    rows = [f"| {t} | {len(s)} | {sum(s) / 3600:.2f} |" for t, s in sorted(per_table.items())]
    total = sum(durations)
    lines = [f"Distinct runs of `{' '.join(args.tables)}` at preset {args.preset}"
             + (f", datasets {' '.join(args.datasets)}" if args.datasets else "")
             + (f", {args.seeds} seeds" if args.seeds else "") + f": {len(queue)}; timed: {len(durations)} "
             f"({len(durations) - len(by_alike)} from runs of the same cell, {len(by_alike)} from a cell that "
             "differs only in its trigger or poisoning)",
             "", "| table | runs (first table naming a spec) | core-hours |", "|---|---|---|", *rows, "",
             f"Summed: {total / 3600:.2f} core-hours; with --workers {args.workers} (the pool's schedule, seed by seed): "
             f"{makespan(durations, args.workers) / 3600:.2f} hours."]
    if unmeasured:
        lines.append(f"Not measured ({len(unmeasured)}, not counted): " + ", ".join(unmeasured))
    emit("\n".join(lines), args.markdown)


if __name__ == "__main__":
    main()
