"""``tradeoff report``: the swept tables in the paper's layout beside its numbers."""

from __future__ import annotations

import argparse

from tradeoff.cli.base import command
from tradeoff.report import write_report


@command("report", "the swept tables in the paper's layout beside its numbers (Markdown, CSV, HTML, plots)")
def configure_report(p: argparse.ArgumentParser):
    p.add_argument("folder", help="a sweep's output folder")
    p.add_argument("--out", help="where to write the report files (default: the sweep folder)")

    def handle(args) -> int:
        paths = write_report(args.folder, args.out)
        for path in paths:
            print(path)
        return 0

    return handle
