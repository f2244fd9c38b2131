"""What every subcommand shares: the command registry, common options and the result table."""

from __future__ import annotations

import argparse

from tradeoff.core.registry import Registry
from tradeoff.core.tables import text_table
from tradeoff.records.record import ACCURACY, ADVERSARIAL_DEFENSE, BACKDOOR_SUCCESS, ROBUSTNESS
from tradeoff.training.curves import summary_writer_class

COMMANDS: Registry = Registry("command", listed=False)

RESULT_COLUMNS = ["run", ADVERSARIAL_DEFENSE, ACCURACY, ROBUSTNESS, BACKDOOR_SUCCESS]
RESULT_HEADERS = ["run", "adversarial defence", "accuracy %", "adv. robustness %", "backdoor success %"]


def command(name: str, help: str):
    """Register ``configure(parser) -> handler(args) -> exit code`` as subcommand ``name``."""
    def add(configure):
        COMMANDS.register(name, description=help)(configure)
        return configure

    return add


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec field, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--data-root", help="folder holding the datasets (default: $TRADEOFF_DATA, else ~/.cache/tradeoff)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    add_tensorboard_option(p)


def add_tensorboard_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tensorboard", metavar="DIR",
                   help="stream each run's learning curve (eval.every_steps) to DIR/<run name> for TensorBoard "
                        "(needs the [tensorboard] extra; not part of the digest)")


def check_tensorboard(folder: str | None) -> None:
    """With ``--tensorboard``, one sentence before any work when the package is missing."""
    if folder is not None:
        summary_writer_class()


def with_data_root(overrides: list[str], data_root: str | None) -> list[str]:
    return overrides + ([f"data.root={data_root}"] if data_root else [])


def print_results(results: list[tuple[str, dict]]) -> None:
    """One row per (run name, metrics)."""
    rows = [{"run": name, **metrics} for name, metrics in results]
    print(text_table(rows, RESULT_COLUMNS, RESULT_HEADERS))
