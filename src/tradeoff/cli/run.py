"""``tradeoff run SPEC...``: one experiment per spec file, one run folder each."""

from __future__ import annotations

import argparse
from pathlib import Path

from tradeoff.cli.base import add_run_options, check_tensorboard, command, print_results, with_data_root
from tradeoff.config.build import load_spec
from tradeoff.core.distributed import is_main
from tradeoff.core.errors import TradeoffError
from tradeoff.pipeline.experiment import run_experiment
from tradeoff.records.folders import check_output_folder, is_finished, read_run


@command("run", "run one experiment per spec file, one run folder each")
def configure_run(p: argparse.ArgumentParser):
    p.add_argument("specs", nargs="+", help="YAML spec files")
    p.add_argument("--out", default="runs", help="folder for the run folders and summary.csv (default: runs)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue unfinished run folders from their last good snapshot (finished ones are kept)")
    again.add_argument("--restart", action="store_true", help="start unfinished run folders over")
    add_run_options(p)

    def handle(args) -> int:
        overrides = with_data_root(args.overrides, args.data_root)
        specs = [load_spec(path, overrides) for path in args.specs]  # all validated before any runs
        check_output_folder(Path(args.out))
        check_tensorboard(args.tensorboard)
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise TradeoffError(f"two specs share a run name ({', '.join(names)}); give each a distinct 'name'.")
        results = []
        for s in specs:
            folder = Path(args.out) / s.name
            if args.resume and is_finished(folder):
                print(f"{folder} is already finished; kept as it is.")
                results.append((s.name, read_run(folder)[1]))
                continue
            run = run_experiment(s, args.out, show_progress=not args.quiet, echo=not args.quiet,
                                 resume=args.resume, restart=args.restart, tensorboard=args.tensorboard)
            results.append((run.run_dir.name if run.run_dir else s.name, run.metrics))
        if is_main():  # under torchrun, rank 0 reports
            print_results(results)
            print(f"\nrun folders and summary.csv in {Path(args.out)}/")
        return 0

    return handle
