"""The CSV report (``report.csv``): one row per table cell and metric, ours beside the paper's."""

from __future__ import annotations

import csv
import io

from tradeoff.report.collect import TableReport

CSV_COLUMNS = ["table", "preset", "dataset", "setting", "metric", "paper", "ours_mean", "ours_std", "n_seeds",
               "ours_values", "status", "n_collapsed", "runs", "synthetic"]


def csv_text(tables: list[TableReport]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for t in tables:
        for e in t.entries.values():
            w.writerow([t.paper_table, t.preset, e.dataset, e.setting, e.metric,
                        "" if e.paper is None else e.paper,
                        "" if e.mean is None else round(e.mean, 4), "" if e.std is None else round(e.std, 4),
                        len(e.values), ";".join(f"{v:.4f}" for v in e.values), e.status, e.collapsed,
                        ";".join(e.runs), t.synthetic])
    return buf.getvalue()
