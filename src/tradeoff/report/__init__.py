"""Swept tables beside the paper's numbers: Markdown, CSV, a self-contained HTML page and
trade-off plots (adversarial robustness against backdoor success rate, each standard run joined
to its adversarially trained twin).

The report reads the manifests ``sweep-<table>-<preset>.json`` a sweep leaves in its folder and
finds each cell's finished run folders by spec digest; values are means over seeds with the sample
standard deviation, in percent like the paper's (``paper_tables.csv`` ships with the package).

Modules: :mod:`.paper` (the paper's numbers), :mod:`.collect` (run results into tables),
:mod:`.layout` (grid and formatting shared by the formats), :mod:`.markdown`, :mod:`.csvfile`,
:mod:`.htmlpage` and :mod:`.plots` (one output format each); this module writes them all.
"""

from __future__ import annotations

from pathlib import Path

from tradeoff.records.folders import check_output_folder, write_text_atomic
from tradeoff.report.collect import build_reports
from tradeoff.report.csvfile import csv_text
from tradeoff.report.htmlpage import html_page
from tradeoff.report.markdown import markdown_text
from tradeoff.report.paper import paper_values
from tradeoff.report.plots import plot_curves, plot_heatmap, plot_saliency, plot_tradeoff

__all__ = ["build_reports", "paper_values", "write_report"]


def write_report(folder: str | Path, dest: str | Path | None = None) -> list[Path]:
    """report.md, report.csv, report.html, one trade-off PNG per table with pairs, one heatmap
    PNG per table with a phase diagram, one learning-curve PNG per pair whose runs have curves and
    one saliency PNG per table whose paired runs saved their saliency maps."""
    tables = build_reports(folder)
    dest = check_output_folder(Path(dest) if dest else Path(folder))
    plots, heatmaps, curves, saliency = {}, {}, {}, {}
    for t in tables:
        png = plot_tradeoff(t, dest / f"tradeoff-{t.id}-{t.preset}.png")
        if png is not None:
            plots[t.key] = png
        png = plot_heatmap(t, dest / f"heatmap-{t.id}-{t.preset}.png")
        if png is not None:
            heatmaps[t.key] = png
        figures = plot_curves(t, dest / f"curves-{t.id}-{t.preset}")
        if figures:
            curves[t.key] = figures
        png = plot_saliency(t, Path(folder), dest / f"saliency-{t.id}-{t.preset}.png")
        if png is not None:
            saliency[t.key] = png
    paths = [dest / "report.md", dest / "report.csv", dest / "report.html"]
    texts = (markdown_text(tables, plots, heatmaps, curves, saliency), csv_text(tables),
             html_page(tables, plots, heatmaps, curves, saliency))
    for path, text in zip(paths, texts):
        write_text_atomic(path, text)
    return (paths + list(plots.values()) + list(heatmaps.values()) + [png for f in curves.values() for _, png in f]
            + list(saliency.values()))
