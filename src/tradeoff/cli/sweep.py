"""``tradeoff sweep``: run a paper table's grid, resumably."""

from __future__ import annotations

import argparse
from pathlib import Path

from tradeoff.cli.base import add_tensorboard_option, check_tensorboard, command
from tradeoff.core.errors import TradeoffError
from tradeoff.core.preemption import EXIT_RESUMABLE
from tradeoff.records.folders import is_unfinished
from tradeoff.sweeps import grids
from tradeoff.sweeps.cluster import EXECUTORS, ClusterOptions
from tradeoff.sweeps.sweep import done_digests, main_echo, status, sweep, synthetic_data


@command("sweep", "run every cell of a paper table not yet done (resumable; see `tradeoff sweep --list`)")
def configure_sweep(p: argparse.ArgumentParser):
    add_sweep_arguments(p)

    def handle(args) -> int:
        if args.status:
            return print_status(Path(args.status))
        if args.list:
            return list_tables()
        if not args.tables:
            raise TradeoffError("name a table to sweep (e.g. table1a), 'all', or use --list.")
        tables = grids.paper_table_ids() if args.tables == ["all"] else args.tables
        if args.dry_run:
            return dry_run(args, tables)
        return run_sweep(args, tables)

    return handle


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("tables", nargs="*", help="table ids (table1a ... table3c, supp1 ... supp5b, beyond-*), 'all' "
                                             "(the paper's tables, without beyond-*), or table YAML files")
    p.add_argument("--preset", default="cpu", help="budget preset: paper, cpu or smoke (default: cpu)")
    p.add_argument("--out", default="runs", help="folder for run folders, manifests and summary.csv (default: runs)")
    p.add_argument("--seeds", type=int, help="seeds per cell (default: the preset's)")
    p.add_argument("--datasets", nargs="+", metavar="NAME", help="only these datasets (default: the table's)")
    p.add_argument("--cells", nargs="+", metavar="PATTERN", help="only cells whose slug matches (shell patterns)")
    p.add_argument("--workers", type=int, default=1, help="cells run in parallel processes (default: 1)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec field in every cell (changes the cells' digests)")
    p.add_argument("--data-root", help="folder holding the datasets (default: $TRADEOFF_DATA, else ~/.cache/tradeoff)")
    p.add_argument("--executor", default="pool", choices=EXECUTORS,
                   help="pool: --workers processes here (default); slurm: one SLURM job per cell (a job array; "
                        "the command returns after submitting); local: the same jobs through submitit on this machine")
    p.add_argument("--slurm-partition", help="the SLURM partition (with --executor slurm)")
    p.add_argument("--slurm-time", type=float, default=24.0, metavar="HOURS",
                   help="wall-time limit of each cell's job in hours (default: 24); a job that reaches it is requeued "
                        "and resumes from its snapshot")
    p.add_argument("--gpus-per-cell", type=int, default=0, help="GPUs per cell, one data-parallel process each")
    p.add_argument("--nodes-per-cell", type=int, default=1, help="nodes per cell (default: 1)")
    p.add_argument("--synthetic", action="store_true",
                   help="rehearse the preset on generated data of each dataset's shape (written under --out) with "
                        "small budgets; every cell and report is marked synthetic: the numbers are not results")
    p.add_argument("--status", metavar="DIR", help="list every cell of the sweeps in DIR: done, running, queued, failed "
                                                    "or resumable; run nothing")
    p.add_argument("--list", action="store_true", help="list the tables and presets, run nothing")
    p.add_argument("--dry-run", action="store_true", help="show the cells and what is done, run nothing")
    add_tensorboard_option(p)


def print_status(out: Path) -> int:
    """``--status``: every cell of the sweeps in ``out`` and its state."""
    rows = status(out)
    if not rows:
        raise TradeoffError(f"{out} holds no sweep manifests (sweep-*.json).")
    width = max(len(label) for label, _ in rows)
    for label, state in rows:
        print(f"{label:{width}s}  {state}")
    return 0


def list_tables() -> int:
    """``--list``: the tables and presets."""
    for tid in grids.table_ids():
        t = grids.load_table(tid)
        print(f"{tid:16s} {t.table:28s} {len(t.cells):2d} cells  {', '.join(t.datasets)}  ({t.title})"
              + ("  [beyond the paper: not in 'all']" if t.beyond else ""))
    print("presets: " + ", ".join(grids.preset_names()))
    return 0


def dry_run(args, tables: list[str]) -> int:
    """``--dry-run``: each cell, its digest and whether it is done, resumes or is to run."""
    done = done_digests(Path(args.out))
    generated = synthetic_data(Path(args.out), args.data_root) if args.synthetic else None
    for name in tables:
        g = grids.expand(grids.load_table(name), args.preset, args.seeds, args.datasets, args.overrides,
                         args.data_root, args.cells, generated)
        for ds, why in g.skipped.items():
            print(f"skip {ds}: {why}")
        for c in g.cells:
            state = ("error: " + c.error if c.error else "done" if c.digest in done
                     else "unfinished: resumes" if is_unfinished(Path(args.out) / c.run_name) else "to run")
            print(f"{c.label:50s} {c.digest or '-':12s} {state}")
    return 0


def run_sweep(args, tables: list[str]) -> int:
    """Sweep ``tables``; exit status 0, 1 (a cell failed) or EXIT_RESUMABLE (stopped on request)."""
    check_tensorboard(args.tensorboard)
    cluster = ClusterOptions(args.executor, args.slurm_partition, args.slurm_time, args.gpus_per_cell,
                             args.nodes_per_cell)
    result = sweep(tables, args.preset, args.out, args.seeds, args.datasets, args.overrides, args.data_root,
                   args.workers, echo=main_echo, only=args.cells, cluster=cluster, tensorboard=args.tensorboard,
                   synthetic=args.synthetic)
    if result.submitted:
        print(f"{len(result.submitted)} cell(s) submitted as jobs; `tradeoff sweep --status {args.out}` follows them, "
              f"and `tradeoff report {args.out}` reads what has finished.")
        return 0
    print(f"{len(result.ran)} run(s) finished, {len(result.cached)} already done, {len(result.failed)} failed"
          + (f", {len(result.preempted)} stopped on request (rerun the sweep to resume)" if result.preempted else "")
          + f"; run folders, summary.csv and manifests in {Path(args.out)}/ (next: tradeoff report {args.out})")
    return EXIT_RESUMABLE if result.preempted else (1 if result.failed else 0)
