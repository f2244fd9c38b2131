"""What every output format shares: the table grid in the paper's layout, number and cell
formatting (collapse marks included), the caption and the trade-off pairs' rows."""

from __future__ import annotations

from typing import Optional

from tradeoff.report.collect import Entry, TableReport
from tradeoff.report.paper import split_setting

PAIR_HEADERS = ["dataset", "standard", "adversarially trained twin", "backdoor success, ours",
                "paper", "higher with adv. training (ours)"]


def fmt_number(value: Optional[float], percent: bool = True) -> str:
    if value is None:
        return ""
    return f"{value:.1f}" if percent else f"{value:.3g}"


def collapse_mark(e: Entry) -> str:
    return f" [{e.collapsed} collapsed]" if e.collapsed else ""


def fmt_spread(e: Entry) -> str:
    """Our mean, with `` ± std`` where there is more than one seed (for an entry with values)."""
    ours = fmt_number(e.mean, e.percent)
    if e.std is not None:
        ours += f" ± {fmt_number(e.std, e.percent)}"
    return ours


def fmt_status(e: Entry) -> str:
    """Why an entry has no value of ours ("collapsed" when every seed collapsed)."""
    if e.status in ("", "not run", "not swept"):
        return "–"
    return e.status if e.status == "collapsed" else e.status + collapse_mark(e)


def fmt_entry(e: Entry) -> str:
    ours = fmt_spread(e) + collapse_mark(e) if e.values else fmt_status(e)
    return f"{ours} ({fmt_number(e.paper, e.percent)})" if e.paper is not None else ours


def grid_layout(t: TableReport):
    """(row key names, rows, columns, cell lookup): rows are tuples of the layout keys' values,
    columns are (dataset, other setting parts..., metric), both in order of first appearance."""
    row_keys = list(t.layout_rows)
    if not row_keys and t.entries:
        row_keys = [split_setting(next(iter(t.entries))[1])[0][0]]
    rows, cols, cells = [], [], {}
    for (ds, setting, metric), e in t.entries.items():
        parts = split_setting(setting)
        values = dict(parts)
        row = tuple(values.get(k, "") for k in row_keys)
        col = (ds, *[f"{k}={v}" for k, v in parts if k not in row_keys], metric)
        if row not in rows:
            rows.append(row)
        if col not in cols:
            cols.append(col)
        cells[(row, col)] = e
    datasets = list(dict.fromkeys(c[0] for c in cols))
    cols.sort(key=lambda c: datasets.index(c[0]))  # stable: keeps the paper's order within a dataset
    return row_keys, rows, cols, cells


SYNTHETIC_WARNING = ("SYNTHETIC DATA: these numbers come from generated data with cut budgets "
                     "(tradeoff sweep --synthetic); they test the pipeline and are not results.")


def caption(t: TableReport) -> str:
    if not t.seeds:
        seeds = "no runs of ours yet"
    elif len(t.seeds) == 1:
        n = t.seeds[0]
        seeds = f"mean ± sample standard deviation over {n} seeds" if n > 1 else "1 seed"
    else:
        seeds = f"mean ± sample standard deviation over {t.seeds[0]} to {t.seeds[-1]} seeds"
    return f"Ours ({seeds}, preset {t.preset}), the paper's value in parentheses; percent unless noted."


def pair_rows(t: TableReport) -> list[list[str]]:
    """One row per trade-off pair, in the order of :data:`PAIR_HEADERS`."""
    rows = []
    for p in t.pairs:
        ours_s, ours_a = p.ours.get("standard"), p.ours.get("adversarial")
        pap_s, pap_a = p.paper.get("standard"), p.paper.get("adversarial")
        verdict = ""
        if ours_s and ours_a:
            verdict = "yes" if ours_a[0] > ours_s[0] else "no"
        ours = f"{ours_s[0]:.1f} → {ours_a[0]:.1f}" if ours_s and ours_a else "–"
        pap = f"{pap_s[0]:.1f} → {pap_a[0]:.1f}" if pap_s and pap_a else ""
        rows.append([p.dataset, p.standard, p.adversarial, ours, pap, verdict])
    return rows
