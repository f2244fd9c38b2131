"""The CSV report (``report.csv``): one row per table cell and metric, ours beside the paper's
(``kind`` value), one per with/without pair with its verdict (``kind`` pair), one per cell with
its cost (``kind`` cost) and one per table with the verdicts' summary and total cost (``kind``
summary).

``ci_low``/``ci_high`` are the interval as the report shows it (a percentage's clipped to [0, 100],
a difference of percentages' to [-100, +100]); ``ci_low_raw``/``ci_high_raw`` are its computed
ends and ``ci_clipped`` names the clipped ones (``low``, ``high``, ``low;high``). A pair's row also
holds its matching ``seeds``, its ``p_value``, its verdict after the table's Holm correction
(``verdict_holm``) and at its first seeds (``verdict_first_seeds``, where it has more); the
summary row holds the Holm line (``holm``). ``percent``: whether a value (or a pair's sides) is a
percentage; ``paper_source``: the dataset a pair's paper direction comes from. Columns are only ever added at the end, so that
readers of earlier files keep working."""

from __future__ import annotations

import csv
import io
from typing import Optional

from tradeoff.core.stats import Interval, verdict_counts
from tradeoff.report.collect import TableReport
from tradeoff.report.layout import cost_line

CSV_COLUMNS = ["table", "preset", "kind", "dataset", "setting", "metric", "paper", "ours_mean", "ours_std",
               "ci_low", "ci_high", "ci_method", "n_seeds", "ours_values", "status", "n_collapsed", "runs",
               "without", "paper_difference", "verdict", "synthetic",
               "ci_low_raw", "ci_high_raw", "ci_clipped", "seeds", "p_value", "verdict_holm", "verdict_first_seeds",
               "holm", "percent", "paper_source"]


def _round(value) -> object:
    return "" if value is None else round(value, 4)


def _interval_columns(ci: Optional[Interval]) -> dict:
    """The interval's columns: as shown, computed, and which ends were clipped."""
    if ci is None:
        return {}
    clipped = [end for end, flag in (("low", ci.clipped_low), ("high", ci.clipped_high)) if flag]
    raw_low = ci.low if ci.raw_low is None else ci.raw_low
    raw_high = ci.high if ci.raw_high is None else ci.raw_high
    return {"ci_low": _round(ci.low), "ci_high": _round(ci.high), "ci_method": ci.method,
            "ci_low_raw": _round(raw_low), "ci_high_raw": _round(raw_high), "ci_clipped": ";".join(clipped)}


def csv_text(tables: list[TableReport]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_COLUMNS, restval="")
    w.writeheader()
    for t in tables:
        for e in t.entries.values():
            ci = e.interval
            w.writerow({"table": t.paper_table, "preset": t.preset, "kind": "value", "synthetic": t.synthetic, "dataset": e.dataset,
                        "setting": e.setting, "metric": e.metric, "paper": _round(e.paper), "ours_mean": _round(e.mean),
                        "ours_std": _round(e.std), **_interval_columns(ci), "n_seeds": len(e.values),
                        "ours_values": ";".join(f"{v:.4f}" for v in e.values), "status": e.status,
                        "n_collapsed": e.collapsed, "runs": ";".join(e.runs), "percent": e.percent})
        for c, after_holm in zip(t.comparisons, verdict_counts(t.comparisons).holm):
            ci = c.interval
            w.writerow({"table": t.paper_table, "preset": t.preset, "kind": "pair", "dataset": c.dataset,
                        "setting": c.with_, "without": c.without, "metric": c.metric,
                        "paper_difference": _round(c.paper_difference), "ours_mean": _round(c.mean),
                        "ours_std": _round(ci and ci.std), **_interval_columns(ci),
                        "n_seeds": len(c.seeds), "ours_values": ";".join(f"{v:.4f}" for v in c.differences),
                        "verdict": c.verdict, "seeds": ";".join(map(str, c.seeds)), "p_value": "" if c.p_value is None else f"{c.p_value:.6g}",
                        "verdict_holm": after_holm, "verdict_first_seeds": c.first_seeds().verdict if c.extended else "",
                        "percent": c.percent, "paper_source": c.paper_source})
        for c in t.costs:
            w.writerow({"table": t.paper_table, "preset": t.preset, "kind": "cost", "dataset": c.dataset,
                        "setting": c.setting, "metric": "minutes per seed", "ours_mean": _round(c.seconds / 60),
                        "n_seeds": c.seeds, "status": f"{c.steps:.0f} steps; {c.images_per_second or 0:.0f} images/s"})
        w.writerow({"table": t.paper_table, "preset": t.preset, "kind": "summary", "verdict": t.verdicts,
                    "synthetic": t.synthetic, "status": cost_line(t), "holm": t.holm_line})
    return buf.getvalue()
