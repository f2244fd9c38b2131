"""``tradeoff quickstart``: a standard and an adversarially trained model under a clean-label
backdoor on scikit-learn's digits (offline, about a minute)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tradeoff.cli.base import command, print_results
from tradeoff.records.folders import check_output_folder
from tradeoff.records.record import BACKDOOR_SUCCESS
from tradeoff.sweeps.quickstart import paired_change, run_quickstart


@command("quickstart", "a standard and an adversarially trained model under a clean-label backdoor (offline, ~1 min)")
def configure_quickstart(p: argparse.ArgumentParser):
    p.add_argument("--out", default="tradeoff-quickstart", help="output folder (default: tradeoff-quickstart)")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 of both models (default: 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")

    def handle(args) -> int:
        check_output_folder(Path(args.out))
        runs = run_quickstart(args.out, show_progress=not args.quiet, seeds=args.seeds)
        print_results([(r.run_dir.name if r.run_dir else r.spec.name, r.metrics) for r in runs])
        mean, ci = paired_change(runs)
        if ci is None:
            std, adv = (r.metrics[BACKDOOR_SUCCESS] for r in runs)
            change = f"by {100 * mean:+.1f} points ({100 * std:.1f}% -> {100 * adv:.1f}%; one seed, no interval)"
        else:
            method = "t" if ci.method == "t" else "bootstrap"
            change = (f"by {100 * mean:+.1f} ± {100 * ci.std:.1f} points (mean ± std of the paired difference over "
                      f"{args.seeds} seeds; 95% {method} interval [{100 * ci.low:+.1f}, {100 * ci.high:+.1f}])")
        print(f"\nAdversarial training changed the backdoor success rate {change}. "
              f"Run folders and summary.csv in {Path(args.out)}/")
        return 0

    return handle
