"""``tradeoff defend RUN_DIR --defense NAME [--option key=value ...]``: a backdoor defence on a
finished run folder, its metrics merged into the folder's metrics.json and summary.csv."""

from __future__ import annotations

import argparse

import yaml

from tradeoff.cli.base import command
from tradeoff.core.errors import TradeoffError
from tradeoff.pipeline.defend import defend_run_folder


def parse_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise TradeoffError(f"--option expects key=value, got {pair!r}.")
        key, text = pair.split("=", 1)
        try:
            options[key.strip()] = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            options[key.strip()] = text
    return options


@command("defend", "run a backdoor defence (spectral, activation-clustering, neural-cleanse) on a finished run folder")
def configure_defend(p: argparse.ArgumentParser):
    p.add_argument("run_dir", help="a finished run folder (spec.yaml, model.safetensors, metrics.json)")
    p.add_argument("--defense", required=True, help="spectral | activation-clustering | neural-cleanse")
    p.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="a defence option, e.g. --option variant=textbook (repeatable)")
    p.add_argument("--data-root", help="folder holding the datasets (default: the run's, else $TRADEOFF_DATA)")
    p.add_argument("--device", help="torch device (default: the run's train.device)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")

    def handle(args) -> int:
        entry = {"name": args.defense, **parse_options(args.options)}
        result = defend_run_folder(args.run_dir, entry, args.data_root, args.device,
                                   show_progress=not args.quiet, echo=not args.quiet)
        width = max(len(k) for k in result) if result else 0
        for key, value in result.items():
            shown = f"{value:.4f}" if isinstance(value, float) else value
            print(f"{key:<{width}}  {shown}")
        print(f"\nmetrics.json updated in {args.run_dir}; summary.csv rewritten in its parent folder.")
        return 0

    return handle
