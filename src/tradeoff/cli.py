"""The ``tradeoff`` command. Each subcommand registers a parser and a handler; user errors are
one sentence on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tradeoff.errors import TradeoffError
from tradeoff.registry import Registry

COMMANDS: Registry = Registry("command")

RESULT_COLUMNS = ["run", "defense", "accuracy", "adversarial_robustness", "backdoor_success_rate"]
RESULT_HEADERS = ["run", "defense", "accuracy %", "adv. robustness %", "backdoor success %"]


def command(name: str, help: str):
    def add(configure):
        COMMANDS.register(name)((help, configure))
        return configure

    return add


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec field, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--data-root", help="folder holding the datasets (default: $TRADEOFF_DATA, else ~/.cache/tradeoff)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")


def with_data_root(overrides: list[str], data_root: str | None) -> list[str]:
    return overrides + ([f"data.root={data_root}"] if data_root else [])


def print_results(outcomes) -> None:
    from tradeoff.tables import text_table

    rows = [{"run": o.run_dir.name if o.run_dir else o.spec.name, **o.metrics} for o in outcomes]
    print(text_table(rows, RESULT_COLUMNS, RESULT_HEADERS))


@command("run", "run one experiment per spec file, one run folder each")
def _configure_run(p: argparse.ArgumentParser):
    p.add_argument("specs", nargs="+", help="YAML spec files")
    p.add_argument("--out", default="runs", help="folder for the run folders and summary.csv (default: runs)")
    add_run_options(p)

    def handle(args) -> int:
        from tradeoff.experiment import run_experiment
        from tradeoff.spec import load_spec

        overrides = with_data_root(args.overrides, args.data_root)
        specs = [load_spec(path, overrides) for path in args.specs]  # all validated before any runs
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise TradeoffError(f"two specs share a run name ({', '.join(names)}); give each a distinct 'name'.")
        outcomes = [run_experiment(s, args.out, show_progress=not args.quiet, echo=not args.quiet) for s in specs]
        from tradeoff.distributed import is_main

        if is_main():  # under torchrun, rank 0 reports
            print_results(outcomes)
            print(f"\nrun folders and summary.csv in {Path(args.out)}/")
        return 0

    return handle


@command("quickstart", "a standard and an adversarially trained model under a clean-label backdoor (offline, ~1 min)")
def _configure_quickstart(p: argparse.ArgumentParser):
    p.add_argument("--out", default="tradeoff-quickstart", help="output folder (default: tradeoff-quickstart)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")

    def handle(args) -> int:
        from tradeoff.quickstart import run_quickstart

        outcomes = run_quickstart(args.out, show_progress=not args.quiet)
        print_results(outcomes)
        std, adv = (o.metrics["backdoor_success_rate"] for o in outcomes)
        print(f"\nAdversarial training changed the backdoor success rate by {100 * (adv - std):+.1f} points "
              f"({100 * std:.1f}% -> {100 * adv:.1f}%). Run folders and summary.csv in {Path(args.out)}/")
        return 0

    return handle


# Modules that add subcommands with @command (imported for their side effect).
COMMAND_MODULES: tuple[str, ...] = ("tradeoff.cli_defend", "tradeoff.cli_sweep")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    from tradeoff import __version__

    for module in COMMAND_MODULES:
        importlib.import_module(module)

    parser = argparse.ArgumentParser(
        prog="tradeoff",
        description="Adversarial robustness versus backdoor robustness: poison, train, defend, measure.")
    parser.add_argument("--version", action="version", version=f"tradeoff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS.names():
        help_text, configure = COMMANDS.get(name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=configure(p))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except TradeoffError as e:
        print(f"tradeoff: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tradeoff: interrupted; finished run folders are kept, the unfinished one was removed.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
