"""The HTML report (``report.html``): a self-contained page with multi-level column headers and
the plots inlined as data URLs."""

from __future__ import annotations

import base64
import html
from typing import Optional

from tradeoff.report.collect import Entry, TableReport
from tradeoff.report.layout import (
    COMPARISON_HEADERS,
    COST_HEADERS,
    LEGEND,
    SYNTHETIC_WARNING,
    caption,
    collapse_mark,
    comparison_rows,
    cost_line,
    cost_rows,
    fmt_number,
    fmt_spread,
    fmt_status,
    grid_layout,
    masking_mark,
    pairs_line,
    saliency_line,
    significance_lines,
)

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #bbb;padding:3px 8px}
th{background:#eee}td{text-align:right}td.k{text-align:left}.paper{color:#777}.miss{color:#b00}
caption{caption-side:top;text-align:left;color:#444;padding-bottom:4px}img{max-width:100%}
.synthetic{background:#fdd;border:2px solid #b00;color:#b00;font-weight:bold;padding:6px 10px}"""


def _html_cell(e: Optional[Entry]) -> str:
    if e is None:
        return "<td></td>"
    if e.values:
        ours = html.escape(fmt_spread(e))
        if e.masking:
            ours += f'<span class="miss">{html.escape(masking_mark(e))}</span>'
        if e.collapsed:
            ours += f'<span class="miss">{html.escape(collapse_mark(e))}</span>'
    else:
        ours = f'<span class="miss">{html.escape(fmt_status(e))}</span>'
    paper = f' <span class="paper">({html.escape(fmt_number(e.paper, e.percent))})</span>' if e.paper is not None else ""
    return f"<td>{ours}{paper}</td>"


def _header_rows(row_keys: list, cols: list) -> str:
    """Multi-level column headers: adjacent columns sharing a prefix are merged at each level."""
    depth = max((len(c) for c in cols), default=1)
    padded = [tuple(c[:-1]) + ("",) * (depth - len(c)) + (c[-1],) for c in cols]
    lines = []
    for level in range(depth):
        cells = [f'<th rowspan="{depth}">{html.escape(k)}</th>' for k in row_keys] if level == 0 else []
        i = 0
        while i < len(padded):
            j = i
            while j + 1 < len(padded) and padded[j + 1][:level + 1] == padded[i][:level + 1]:
                j += 1
            cells.append(f'<th colspan="{j - i + 1}">{html.escape(padded[i][level])}</th>')
            i = j + 1
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(lines)


def _simple_table(title: str, headers: list, rows: list) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    trs = "".join("<tr>" + "".join(f'<td class="k">{html.escape(v)}</td>' for v in r) + "</tr>" for r in rows)
    return f"<table><caption>{html.escape(title)}</caption><tr>{head}</tr>{trs}</table>"


def _image(alt: str, png) -> str:
    data = base64.b64encode(png.read_bytes()).decode()
    return f'<img alt="{alt}" src="data:image/png;base64,{data}">'


def html_page(tables: list[TableReport], plots: dict, heatmaps: dict | None = None,
              curves: dict | None = None, saliency: dict | None = None) -> str:
    """The whole page; ``plots``, ``heatmaps`` and ``saliency`` map a table's key to its PNG
    (embedded), ``curves`` to its learning-curve figures, (pair, PNG) each."""
    heatmaps, curves, saliency = heatmaps or {}, curves or {}, saliency or {}
    body = ["<h1>Reproduction report</h1>",
            "<p>Each table in the paper's layout; every cell shows our value and, in grey parentheses, "
            "the paper's.</p>", f"<p>{html.escape(LEGEND)}</p>"]
    for t in tables:
        synthetic = " [SYNTHETIC DATA]" if t.synthetic else ""
        body.append(f"<h2>{html.escape(t.paper_table)}: {html.escape(t.title)} (preset {html.escape(t.preset)})"
                    f"{synthetic}</h2>")
        if t.synthetic:
            body.append(f'<p class="synthetic">{html.escape(SYNTHETIC_WARNING)}</p>')
        row_keys, rows, cols, cells = grid_layout(t)
        lines = [f"<table><caption>{html.escape(caption(t))}</caption>", _header_rows(row_keys, cols)]
        for r in rows:
            tds = "".join(f'<td class="k">{html.escape(v)}</td>' for v in r)
            tds += "".join(_html_cell(cells.get((r, c))) for c in cols)
            lines.append(f"<tr>{tds}</tr>")
        lines.append("</table>")
        body.append("\n".join(lines))
        if t.comparisons:
            body.append(_simple_table(pairs_line(t), COMPARISON_HEADERS, comparison_rows(t)))
        if t.costs:
            body.append(_simple_table(cost_line(t), COST_HEADERS, cost_rows(t)))
        for figures, alt in ((plots, "trade-off plot"), (heatmaps, "phase diagram")):
            if t.key in figures:
                body.append(_image(alt, figures[t.key]))
        if t.key in heatmaps:
            body.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in significance_lines(t)) + "</ul>")
        for pair, png in curves.get(t.key, []):
            body.append(f"<p>Learning curves, {html.escape(pair.label)}:</p>" + _image("learning curves", png))
        if t.key in saliency:
            body.append(f"<p>{html.escape(saliency_line(t))}</p>" + _image("saliency figure", saliency[t.key]))
        if t.notes:
            body.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in t.notes) + "</ul>")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>tradeoff report</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
