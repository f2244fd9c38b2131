"""The Markdown report (``report.md``): each table in the paper's layout, its trade-off pairs,
plot link and notes."""

from __future__ import annotations

from tradeoff.core.tables import markdown_table
from tradeoff.report.collect import TableReport
from tradeoff.report.layout import (
    COMPARISON_HEADERS,
    COST_HEADERS,
    LEGEND,
    SYNTHETIC_WARNING,
    caption,
    comparison_rows,
    cost_line,
    cost_rows,
    fmt_entry,
    grid_layout,
    saliency_line,
    significance_lines,
)


def markdown_text(tables: list[TableReport], plots: dict, heatmaps: dict | None = None,
                  curves: dict | None = None, saliency: dict | None = None) -> str:
    """The whole page; ``plots``, ``heatmaps`` and ``saliency`` map a table's key to its PNG
    (linked by file name), ``curves`` to its learning-curve figures, (pair, PNG) each."""
    heatmaps, curves, saliency = heatmaps or {}, curves or {}, saliency or {}
    out = ["# Reproduction report", "",
           "Each table in the paper's layout; every cell shows our value and, in parentheses, the paper's. "
           "Each with/without pair the paper compares (adversarial training or not, IBP or not, a defence or "
           "not) is a paired difference over matching seeds with its 95% interval and a verdict: reproduced "
           "(the paper's direction, interval excluding 0), opposite, or inconclusive.", "", LEGEND, ""]
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
        if t.comparisons:
            out += [f"With/without pairs: **{t.verdicts}**; {t.holm_line}.", "",
                    markdown_table(comparison_rows(t), COMPARISON_HEADERS), ""]
        if t.key in plots:
            out += [f"![trade-off plot]({plots[t.key].name})", ""]
        if t.key in heatmaps:
            out += [f"![phase diagram]({heatmaps[t.key].name})", ""] + [f"- {line}" for line in significance_lines(t)] + [""]
        for pair, png in curves.get(t.key, []):
            out += [f"Learning curves, {pair.label}:", "", f"![learning curves]({png.name})", ""]
        if t.key in saliency:
            out += [saliency_line(t), "", f"![saliency figure]({saliency[t.key].name})", ""]
        if t.costs:
            out += [cost_line(t), "", markdown_table(cost_rows(t), COST_HEADERS), ""]
        if t.notes:
            out += ["Notes:", ""] + [f"- {n}" for n in t.notes] + [""]
    return "\n".join(out)
