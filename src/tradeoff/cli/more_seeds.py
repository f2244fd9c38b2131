"""``tradeoff more-seeds``: the pairs of a finished sweep still inconclusive at 3 seeds, and the
``tradeoff sweep`` commands that take both cells of each to 10 seeds (run with ``--run``)."""

from __future__ import annotations

import argparse

from tradeoff.cli.base import command
from tradeoff.core.preemption import EXIT_RESUMABLE
from tradeoff.core.stats import FIRST_SEEDS, MORE_SEEDS
from tradeoff.report.more_seeds import plan, plan_lines
from tradeoff.sweeps.sweep import main_echo, sweep


@command("more-seeds", f"list the pairs of a sweep still inconclusive at {FIRST_SEEDS} seeds and the sweeps that "
                       f"take their cells to {MORE_SEEDS} seeds (--run runs them)")
def configure_more_seeds(p: argparse.ArgumentParser):
    p.add_argument("folder", help="a sweep's output folder (its manifests and run folders)")
    p.add_argument("--tables", nargs="+", metavar="TABLE",
                   help="only these tables of the folder (default: every table swept into it)")
    p.add_argument("--run", action="store_true", help="run the commands (resumable, like any sweep)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="the --set options the sweep was run with (its cells' digests depend on them)")
    p.add_argument("--data-root", help="folder holding the datasets (default: $TRADEOFF_DATA, else ~/.cache/tradeoff)")
    p.add_argument("--workers", type=int, default=1, help="cells run in parallel processes (default: 1)")

    def handle(args) -> int:
        extension = plan(args.folder, args.overrides, args.data_root, args.workers, args.tables)
        for line in plan_lines(extension):
            print(line)
        if not args.run or not extension.commands:
            return 0
        status = 0
        for c in extension.commands:
            print(f"running: {c.line}", flush=True)
            result = sweep([c.table], c.preset, c.out, MORE_SEEDS, [c.dataset], c.overrides, c.data_root, c.workers,
                           echo=main_echo, only=c.cells, synthetic=c.synthetic)
            if result.preempted:
                return EXIT_RESUMABLE
            status = status or (1 if result.failed else 0)
        print(f"next: tradeoff report {args.folder} (each extended pair shows its verdict at seeds 0-{FIRST_SEEDS - 1} "
              "and at all its seeds)")
        return status

    return handle
