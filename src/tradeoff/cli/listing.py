"""``tradeoff list [KIND]``: every registered component with its options and their defaults,
the paper's tables and the budget presets."""

from __future__ import annotations

import argparse

from tradeoff.cli.base import command
from tradeoff.sweeps.catalog import catalog


@command("list", "every dataset, trigger, poisoning method, model, objective, attack, backdoor defence, "
                 "table and preset, with options and defaults")
def configure_list(p: argparse.ArgumentParser):
    p.add_argument("kind", nargs="?", help="one kind only (e.g. triggers, backdoor-defenses, tables)")

    def handle(args) -> int:
        for kind, items in catalog(args.kind).items():
            print(f"{kind}:")
            width = max((len(i.name) for i in items), default=0)
            for item in items:
                print(f"  {item.name:<{width}}  {item.description}")
                for name, default, doc in item.options:
                    print(f"      {name} = {default!r}" + (f"  # {doc}" if doc else ""))
            print()
        return 0

    return handle
