"""``tradeoff run SPEC...``: one experiment per spec file, one run folder each."""

from __future__ import annotations

import argparse
from pathlib import Path

from tradeoff.cli.base import add_run_options, command, print_results, with_data_root
from tradeoff.config import load_spec
from tradeoff.distributed import is_main
from tradeoff.errors import TradeoffError
from tradeoff.experiment import run_experiment
from tradeoff.runs import check_output_folder


@command("run", "run one experiment per spec file, one run folder each")
def configure_run(p: argparse.ArgumentParser):
    p.add_argument("specs", nargs="+", help="YAML spec files")
    p.add_argument("--out", default="runs", help="folder for the run folders and summary.csv (default: runs)")
    add_run_options(p)

    def handle(args) -> int:
        overrides = with_data_root(args.overrides, args.data_root)
        specs = [load_spec(path, overrides) for path in args.specs]  # all validated before any runs
        check_output_folder(Path(args.out))
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise TradeoffError(f"two specs share a run name ({', '.join(names)}); give each a distinct 'name'.")
        runs = [run_experiment(s, args.out, show_progress=not args.quiet, echo=not args.quiet) for s in specs]
        if is_main():  # under torchrun, rank 0 reports
            print_results(runs)
            print(f"\nrun folders and summary.csv in {Path(args.out)}/")
        return 0

    return handle
