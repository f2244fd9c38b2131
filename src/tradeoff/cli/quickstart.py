"""``tradeoff quickstart``: a standard and an adversarially trained model under a clean-label
backdoor on scikit-learn's digits (offline, about a minute)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tradeoff.cli.base import command, print_results
from tradeoff.quickstart import run_quickstart


@command("quickstart", "a standard and an adversarially trained model under a clean-label backdoor (offline, ~1 min)")
def configure_quickstart(p: argparse.ArgumentParser):
    p.add_argument("--out", default="tradeoff-quickstart", help="output folder (default: tradeoff-quickstart)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")

    def handle(args) -> int:
        runs = run_quickstart(args.out, show_progress=not args.quiet)
        print_results(runs)
        std, adv = (r.metrics["backdoor_success_rate"] for r in runs)
        print(f"\nAdversarial training changed the backdoor success rate by {100 * (adv - std):+.1f} points "
              f"({100 * std:.1f}% -> {100 * adv:.1f}%). Run folders and summary.csv in {Path(args.out)}/")
        return 0

    return handle
