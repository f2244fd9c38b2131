"""The Markdown report (``report.md``): each table in the paper's layout, its trade-off pairs,
plot link and notes."""

from __future__ import annotations

from tradeoff.report.collect import TableReport
from tradeoff.report.layout import PAIR_HEADERS, SYNTHETIC_WARNING, caption, fmt_entry, grid_layout, pair_rows
from tradeoff.tables import markdown_table


def markdown_text(tables: list[TableReport], plots: dict) -> str:
    """The whole page; ``plots`` maps a table's key to its PNG (linked by file name)."""
    out = ["# Reproduction report", "",
           "Each table in the paper's layout; every cell shows our value and, in parentheses, the paper's. "
           "Trade-off pairs join each standard cell to its adversarially trained twin.", ""]
    for t in tables:
        synthetic = " [SYNTHETIC DATA]" if t.synthetic else ""
        out += [f"## {t.paper_table}: {t.title} (preset {t.preset}){synthetic}", ""]
        if t.synthetic:
            out += [f"> **{SYNTHETIC_WARNING}**", ""]
        out += [caption(t), ""]
        row_keys, rows, cols, cells = grid_layout(t)
        headers = list(row_keys) + [" · ".join(c) for c in cols]
        body = [list(r) + [fmt_entry(cells[(r, c)]) if (r, c) in cells else "" for c in cols] for r in rows]
        out += [markdown_table(body, headers), ""]
        if t.pairs:
            out += ["Trade-off pairs (backdoor success rate, standard → adversarially trained):", "",
                    markdown_table(pair_rows(t), PAIR_HEADERS), ""]
        if t.key in plots:
            out += [f"![trade-off plot]({plots[t.key].name})", ""]
        if t.notes:
            out += ["Notes:", ""] + [f"- {n}" for n in t.notes] + [""]
    return "\n".join(out)
