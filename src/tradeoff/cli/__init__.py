"""The ``tradeoff`` command. Each subcommand is one module that registers a parser and a handler;
user errors are one sentence on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import sys

from tradeoff import __version__
from tradeoff.cli import defend, listing, more_seeds, quickstart, report, run, sweep  # noqa: F401  (register the subcommands)
from tradeoff.cli.base import COMMANDS
from tradeoff.core.errors import OutOfSpace, TradeoffError
from tradeoff.core.preemption import EXIT_RESUMABLE, Preempted


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tradeoff",
        description="Adversarial robustness versus backdoor robustness: poison, train, defend, measure.")
    parser.add_argument("--version", action="version", version=f"tradeoff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for entry in COMMANDS.entries():
        p = sub.add_parser(entry.name, help=entry.description, description=entry.description)
        p.set_defaults(handler=entry.item(p))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except Preempted as e:
        print(f"tradeoff: {e}; resume with --resume (exit status {EXIT_RESUMABLE}: resumable).", file=sys.stderr)
        return EXIT_RESUMABLE
    except OutOfSpace as e:
        print(f"tradeoff: error: {e}", file=sys.stderr)
        return EXIT_RESUMABLE
    except TradeoffError as e:
        print(f"tradeoff: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tradeoff: interrupted; a run folder that holds training is kept, marked unfinished: rerun with "
              "--resume to continue it.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
