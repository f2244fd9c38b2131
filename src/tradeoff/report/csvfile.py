"""The CSV report (``report.csv``): one row per table cell and metric, ours beside the paper's
(``kind`` value), one per with/without pair with its verdict (``kind`` pair), one per cell with
its cost (``kind`` cost) and one per table with the verdicts' summary and total cost (``kind``
summary)."""

from __future__ import annotations

import csv
import io

from tradeoff.report.collect import TableReport
from tradeoff.report.layout import cost_line

CSV_COLUMNS = ["table", "preset", "kind", "dataset", "setting", "metric", "paper", "ours_mean", "ours_std",
               "ci_low", "ci_high", "ci_method", "n_seeds", "ours_values", "status", "n_collapsed", "runs",
               "without", "paper_difference", "verdict", "synthetic"]


def _round(value) -> object:
    return "" if value is None else round(value, 4)


def csv_text(tables: list[TableReport]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_COLUMNS, restval="")
    w.writeheader()
    for t in tables:
        for e in t.entries.values():
            ci = e.interval
            w.writerow({"table": t.paper_table, "preset": t.preset, "kind": "value", "synthetic": t.synthetic, "dataset": e.dataset,
                        "setting": e.setting, "metric": e.metric, "paper": _round(e.paper), "ours_mean": _round(e.mean),
                        "ours_std": _round(e.std), "ci_low": _round(ci and ci.low), "ci_high": _round(ci and ci.high),
                        "ci_method": ci.method if ci else "", "n_seeds": len(e.values),
                        "ours_values": ";".join(f"{v:.4f}" for v in e.values), "status": e.status,
                        "n_collapsed": e.collapsed, "runs": ";".join(e.runs)})
        for c in t.comparisons:
            ci = c.interval
            w.writerow({"table": t.paper_table, "preset": t.preset, "kind": "pair", "dataset": c.dataset,
                        "setting": c.with_, "without": c.without, "metric": c.metric,
                        "paper_difference": _round(c.paper_difference), "ours_mean": _round(c.mean),
                        "ours_std": _round(ci and ci.std), "ci_low": _round(ci and ci.low),
                        "ci_high": _round(ci and ci.high), "ci_method": ci.method if ci else "",
                        "n_seeds": len(c.seeds), "ours_values": ";".join(f"{v:.4f}" for v in c.differences),
                        "verdict": c.verdict})
        for c in t.costs:
            w.writerow({"table": t.paper_table, "preset": t.preset, "kind": "cost", "dataset": c.dataset,
                        "setting": c.setting, "metric": "minutes per seed", "ours_mean": _round(c.seconds / 60),
                        "n_seeds": c.seeds, "status": f"{c.steps:.0f} steps; {c.images_per_second or 0:.0f} images/s"})
        w.writerow({"table": t.paper_table, "preset": t.preset, "kind": "summary", "verdict": t.verdicts,
                    "synthetic": t.synthetic,
                    "status": cost_line(t)})
    return buf.getvalue()
