"""FINDINGS.md from the recorded results: each comparison the paper makes, grouped by claim, with
its MNIST difference, interval, seeds and verdict beside the paper's numbers; the counts per table
(plain and after a Holm correction); the findings beyond the paper; what this machine could not
run. Tables not recorded yet are listed with the exact commands that record them.

    python benchmarks/findings.py [--results benchmarks/results/cpu-mnist] [--out FINDINGS.md]

Each table's folder, ``<results>/<table id>/``, holds the ``report.csv`` of ``tradeoff report``
and the sweep's ``summary.csv``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tradeoff.core.errors import TradeoffError
from tradeoff.report.findings import RESULTS, gather, write_findings

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=str(ROOT / RESULTS), help=f"the recorded results (default: {RESULTS})")
    p.add_argument("--out", default=str(ROOT / "FINDINGS.md"), help="the page to write (default: FINDINGS.md)")
    args = p.parse_args(argv)
    try:
        if not Path(args.results).is_dir():
            raise TradeoffError(f"{args.results} is not a folder of recorded results.")
        path = write_findings(args.results, args.out)
    except TradeoffError as e:
        print(f"findings: error: {e}", file=sys.stderr)
        return 2
    recorded = list(gather(args.results).tables)
    print(f"{path}: {len(recorded)} table(s) recorded ({', '.join(recorded) or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
