"""Swept tables beside the paper's numbers: Markdown, CSV, a self-contained HTML page and
trade-off plots (adversarial robustness against backdoor success rate, each standard run joined
to its adversarially trained twin).

The report reads the manifests ``sweep-<table>-<preset>.json`` a sweep leaves in its folder and
finds each cell's finished run folders by spec digest; values are means over seeds with the sample
standard deviation, in percent like the paper's (``paper_tables.csv`` ships with the package).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Optional

from tradeoff.errors import TradeoffError
from tradeoff.runs import finished_runs, write_text_atomic

ASR_KEY, ROBUSTNESS_KEY = "backdoor_success_rate", "adversarial_robustness"
_EXTRA_METRIC = re.compile(r"^(Succ\. Rate w/o? Defense)=([\d.]+)%$")


# --------------------------------------------------------------------------- the paper's numbers


def split_setting(setting: str) -> list[tuple[str, str]]:
    """``"Adv. Defense=None; Trigger Size=2 x 2"`` -> [("Adv. Defense", "None"), ("Trigger Size", "2 x 2")]."""
    parts = []
    for part in setting.split(";"):
        key, _, value = part.strip().partition("=")
        parts.append((key.strip(), value.strip()))
    return parts


def paper_values(path: Optional[Path] = None) -> list[dict]:
    """The rows of ``paper_tables.csv`` (table, dataset, setting, metric, value), in order. Settings
    that carry numbers of their own (Supplement 5's "Succ. Rate w/ Defense=98.9%") are split into
    the setting proper and extra metric rows."""
    if path is None:
        text = (resources.files("tradeoff") / "resources" / "paper_tables.csv").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    rows, seen = [], set()
    for r in csv.DictReader(io.StringIO(text)):
        kept, extras = [], []
        for key, value in split_setting(r["setting"]):
            m = _EXTRA_METRIC.match(f"{key}={value}")
            if m:
                extras.append((m.group(1), float(m.group(2))))
            else:
                kept.append(f"{key}={value}")
        setting = "; ".join(kept)
        for metric, value in [(r["metric"], float(r["value"]))] + extras:
            key = (r["table"], r["dataset"], setting, metric)
            if key not in seen:
                seen.add(key)
                rows.append({"table": r["table"], "dataset": r["dataset"], "setting": setting,
                             "metric": metric, "value": value})
    return rows


# --------------------------------------------------------------------------- collecting


@dataclass
class Entry:
    dataset: str  # the paper's dataset name (or ours, for datasets the paper lacks)
    setting: str
    metric: str
    paper: Optional[float] = None
    values: list = field(default_factory=list)  # ours, one per seed, in the paper's unit
    status: str = ""  # why there is no value of ours
    percent: bool = True
    runs: list = field(default_factory=list)  # the run folders of ``values``
    collapsed: int = 0  # seeds whose training collapsed: marked, and left out of ``values``

    @property
    def mean(self) -> Optional[float]:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> Optional[float]:
        return statistics.stdev(self.values) if len(self.values) > 1 else None


@dataclass
class Pair:
    dataset: str
    standard: str  # setting of the un-trained twin
    adversarial: str
    ours: dict = field(default_factory=dict)  # role -> (mean ASR, mean robustness) in percent
    paper: dict = field(default_factory=dict)


@dataclass
class TableReport:
    id: str
    paper_table: str
    title: str
    preset: str
    layout_rows: list
    entries: dict  # (dataset, setting, metric) -> Entry, in display order
    pairs: list
    notes: list
    seeds: list  # distinct seed counts among the cells with values

    @property
    def key(self) -> str:
        return f"{self.id}-{self.preset}"


def _index_runs(out: Path) -> dict:
    """spec digest -> [metrics dict with its folder name under "run"] of finished runs."""
    index: dict = {}
    for run in finished_runs(out):
        try:
            metrics = json.loads((run / "metrics.json").read_text())
        except (OSError, ValueError):
            continue
        digest = metrics.get("spec_digest") or run.name.rsplit("-", 1)[-1]
        index.setdefault(digest, []).append({**metrics, "run": run.name})
    return index


def _number(value) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def _pick(metrics: dict, keys: list) -> Optional[float]:
    """The first of ``keys`` present in ``metrics`` (``-`` and ``_`` are interchangeable)."""
    normal = {k.replace("-", "_"): v for k, v in metrics.items()}
    for key in keys:
        value = _number(normal.get(key.replace("-", "_")))
        if value is not None:
            return value
    return None


def collect(manifest: dict, runs: dict, paper: list[dict]) -> TableReport:
    from tradeoff.grids import load_presets

    name_of = {ds: info.get("paper_name", ds) for ds, info in (load_presets().get("datasets") or {}).items()}
    entries: dict = {}

    def entry(dataset, setting, metric) -> Entry:
        key = (dataset, setting, metric)
        if key not in entries:
            entries[key] = Entry(dataset, setting, metric)
        return entries[key]

    for r in paper:
        if r["table"] == manifest["paper_table"]:
            entry(r["dataset"], r["setting"], r["metric"]).paper = r["value"]

    swept = {c["paper_dataset"] for c in manifest["cells"]}
    skipped = {name_of.get(ds, ds): why for ds, why in (manifest.get("skipped") or {}).items()}
    notes = [f"{ds}: {why}" for ds, why in skipped.items()]
    per_cell: dict = {}  # (dataset, setting) -> list of run metrics, one per converged seed
    collapsed: dict = {}  # (dataset, setting) -> [seeds whose training collapsed]
    for c in manifest["cells"]:
        ds, setting = c["paper_dataset"], c["setting"]
        found = runs.get(c["digest"]) if c.get("digest") else None
        if found and found[0].get("collapsed"):
            collapsed.setdefault((ds, setting), []).append(c["seed"])
        elif found:
            per_cell.setdefault((ds, setting), []).append(found[0])
        if c.get("error"):
            notes.append(f"{ds}, {setting}, seed {c['seed']}: {c['error']}")
        for m in c["metrics"]:
            e = entry(ds, setting, m["paper"])
            e.percent = m.get("percent", True)
            if found and found[0].get("collapsed"):
                e.collapsed += 1
                e.status = e.status or "collapsed"
            elif found:
                value = _pick(found[0], m["keys"])
                if value is None:
                    e.status = e.status or f"no metric {' or '.join(m['keys'])} in the run"
                else:
                    e.values.append(100 * value if e.percent else value)
                    e.runs.append(found[0]["run"])
            elif c.get("skipped"):
                e.status = "skipped"
            elif c.get("error"):
                e.status = "error"
            else:
                e.status = e.status or "not run"
    for (ds, setting), seeds in collapsed.items():
        total = len(seeds) + len(per_cell.get((ds, setting), []))
        notes.append(f"{ds}, {setting}: training collapsed on {len(seeds)} of {total} seed(s) "
                     f"(seed {', '.join(map(str, sorted(seeds)))}); left out of the means and pairs")
    for e in entries.values():
        if not e.values and not e.status:
            e.status = "skipped" if e.dataset in skipped else ("not swept" if e.dataset not in swept else "not run")
        if e.values:
            e.status = ""

    pairs = []
    for c in manifest["cells"]:
        if not c.get("twin") or c["seed"] != 0:
            continue
        p = Pair(c["paper_dataset"], c["twin"], c["setting"])
        for role, setting in (("standard", p.standard), ("adversarial", p.adversarial)):
            ms = per_cell.get((p.dataset, setting), [])
            asr = [v for v in (_number(m.get(ASR_KEY)) for m in ms) if v is not None]
            rob = [v for v in (_number(m.get(ROBUSTNESS_KEY)) for m in ms) if v is not None]
            if asr:
                p.ours[role] = (100 * statistics.fmean(asr), 100 * statistics.fmean(rob) if rob else None)
            pa = entries.get((p.dataset, setting, "Backdoor Success rate"))
            pr = entries.get((p.dataset, setting, "Adv. Robustness"))
            if pa is not None and pa.paper is not None:
                p.paper[role] = (pa.paper, pr.paper if pr is not None else None)
        pairs.append(p)
    seeds = sorted({len(e.values) for e in entries.values() if e.values})
    return TableReport(manifest["table"], manifest["paper_table"], manifest.get("title", ""), manifest["preset"],
                       manifest.get("layout_rows") or [], entries, pairs, notes, seeds)


# --------------------------------------------------------------------------- layout


def fmt_number(value: Optional[float], percent: bool = True) -> str:
    if value is None:
        return ""
    return f"{value:.1f}" if percent else f"{value:.3g}"


def collapse_mark(e: Entry) -> str:
    return f" [{e.collapsed} collapsed]" if e.collapsed else ""


def fmt_entry(e: Entry) -> str:
    if e.values:
        ours = fmt_number(e.mean, e.percent)
        if e.std is not None:
            ours += f" ± {fmt_number(e.std, e.percent)}"
        ours += collapse_mark(e)
    else:
        ours = "–" if e.status in ("", "not run", "not swept") else e.status + collapse_mark(e)
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


def caption(t: TableReport) -> str:
    if not t.seeds:
        seeds = "no runs of ours yet"
    elif len(t.seeds) == 1:
        n = t.seeds[0]
        seeds = f"mean ± sample standard deviation over {n} seeds" if n > 1 else "1 seed"
    else:
        seeds = f"mean ± sample standard deviation over {t.seeds[0]} to {t.seeds[-1]} seeds"
    return f"Ours ({seeds}, preset {t.preset}), the paper's value in parentheses; percent unless noted."


def _pair_rows(t: TableReport) -> list[list[str]]:
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


PAIR_HEADERS = ["dataset", "standard", "adversarially trained twin", "backdoor success, ours",
                "paper", "higher with adv. training (ours)"]


# --------------------------------------------------------------------------- writers


def markdown(tables: list[TableReport], plots: dict) -> str:
    from tradeoff.tables import markdown_table

    out = ["# Reproduction report", "",
           "Each table in the paper's layout; every cell shows our value and, in parentheses, the paper's. "
           "Trade-off pairs join each standard cell to its adversarially trained twin.", ""]
    for t in tables:
        out += [f"## {t.paper_table}: {t.title} (preset {t.preset})", "", caption(t), ""]
        row_keys, rows, cols, cells = grid_layout(t)
        headers = list(row_keys) + [" · ".join(c) for c in cols]
        body = [list(r) + [fmt_entry(cells[(r, c)]) if (r, c) in cells else "" for c in cols] for r in rows]
        out += [markdown_table(body, headers), ""]
        if t.pairs:
            out += ["Trade-off pairs (backdoor success rate, standard → adversarially trained):", "",
                    markdown_table(_pair_rows(t), PAIR_HEADERS), ""]
        if t.key in plots:
            out += [f"![trade-off plot]({plots[t.key].name})", ""]
        if t.notes:
            out += ["Notes:", ""] + [f"- {n}" for n in t.notes] + [""]
    return "\n".join(out)


CSV_COLUMNS = ["table", "preset", "dataset", "setting", "metric", "paper", "ours_mean", "ours_std", "n_seeds",
               "ours_values", "status", "n_collapsed", "runs"]


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
                        ";".join(e.runs)])
    return buf.getvalue()


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #bbb;padding:3px 8px}
th{background:#eee}td{text-align:right}td.k{text-align:left}.paper{color:#777}.miss{color:#b00}
caption{caption-side:top;text-align:left;color:#444;padding-bottom:4px}img{max-width:100%}"""


def _html_cell(e: Optional[Entry]) -> str:
    if e is None:
        return "<td></td>"
    if e.values:
        ours = html.escape(fmt_number(e.mean, e.percent))
        if e.std is not None:
            ours += f" ± {html.escape(fmt_number(e.std, e.percent))}"
        if e.collapsed:
            ours += f'<span class="miss">{html.escape(collapse_mark(e))}</span>'
    else:
        ours = f'<span class="miss">{html.escape((e.status or "–") + collapse_mark(e))}</span>'
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


def html_page(tables: list[TableReport], plots: dict) -> str:
    body = ["<h1>Reproduction report</h1>",
            "<p>Each table in the paper's layout; every cell shows our value and, in grey parentheses, "
            "the paper's.</p>"]
    for t in tables:
        body.append(f"<h2>{html.escape(t.paper_table)}: {html.escape(t.title)} (preset {html.escape(t.preset)})</h2>")
        row_keys, rows, cols, cells = grid_layout(t)
        lines = [f"<table><caption>{html.escape(caption(t))}</caption>", _header_rows(row_keys, cols)]
        for r in rows:
            tds = "".join(f'<td class="k">{html.escape(v)}</td>' for v in r)
            tds += "".join(_html_cell(cells.get((r, c))) for c in cols)
            lines.append(f"<tr>{tds}</tr>")
        lines.append("</table>")
        body.append("\n".join(lines))
        if t.pairs:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in PAIR_HEADERS)
            trs = "".join("<tr>" + "".join(f'<td class="k">{html.escape(v)}</td>' for v in r) + "</tr>"
                          for r in _pair_rows(t))
            body.append(f"<table><caption>Trade-off pairs: backdoor success rate, standard → adversarially "
                        f"trained</caption><tr>{head}</tr>{trs}</table>")
        if t.key in plots:
            data = base64.b64encode(plots[t.key].read_bytes()).decode()
            body.append(f'<img alt="trade-off plot" src="data:image/png;base64,{data}">')
        if t.notes:
            body.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in t.notes) + "</ul>")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>tradeoff report</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def plot_tradeoff(t: TableReport, path: Path) -> Optional[Path]:
    """Adversarial robustness against backdoor success rate, one panel per dataset; an arrow from
    each standard cell to its adversarially trained twin (ours solid, the paper's dashed)."""
    def complete(source: dict) -> bool:
        return len(source) == 2 and all(rob is not None for _, rob in source.values())

    drawable = [p for p in t.pairs if complete(p.ours) or complete(p.paper)]
    if not drawable:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(p.dataset for p in drawable))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, ds in zip(axes[0], datasets):
        for i, p in enumerate(q for q in drawable if q.dataset == ds):
            color = colors[i % len(colors)]
            label = ", ".join(v for _, v in split_setting(p.adversarial))
            for source, style, marker in ((p.ours, "-", "o"), (p.paper, "--", "s")):
                if not complete(source):
                    continue
                (xs, ys), (xa, ya) = source["standard"], source["adversarial"]
                filled = color if source is p.ours else "none"
                ax.scatter([xs], [ys], marker=marker, facecolors=filled, edgecolors=color)
                ax.scatter([xa], [ya], marker=marker, facecolors=filled, edgecolors=color,
                           label=f"{label} ({'ours' if source is p.ours else 'paper'})")
                ax.annotate("", xy=(xa, ya), xytext=(xs, ys),
                            arrowprops={"arrowstyle": "->", "color": color, "linestyle": style})
        ax.set_title(ds)
        ax.set_xlabel("backdoor success rate (%)")
        ax.set_ylabel("adversarial robustness (%)")
        ax.set_xlim(-3, 103)
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{t.paper_table}: standard → adversarially trained (preset {t.preset})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def build_reports(folder: str | Path) -> list[TableReport]:
    from tradeoff.sweep import read_manifests

    folder = Path(folder)
    if not folder.is_dir():
        raise TradeoffError(f"{folder} is not a folder.")
    manifests = read_manifests(folder)
    if not manifests:
        raise TradeoffError(f"{folder} holds no sweep manifests (sweep-*.json); run `tradeoff sweep` into it first.")
    runs, paper = _index_runs(folder), paper_values()
    return [collect(m, runs, paper) for m in manifests]


def write_report(folder: str | Path, dest: str | Path | None = None) -> list[Path]:
    """report.md, report.csv, report.html and one trade-off PNG per table with pairs."""
    tables = build_reports(folder)
    dest = Path(dest) if dest else Path(folder)
    dest.mkdir(parents=True, exist_ok=True)
    plots = {}
    for t in tables:
        png = plot_tradeoff(t, dest / f"tradeoff-{t.id}-{t.preset}.png")
        if png is not None:
            plots[t.key] = png
    paths = [dest / "report.md", dest / "report.csv", dest / "report.html"]
    for path, text in zip(paths, (markdown(tables, plots), csv_text(tables), html_page(tables, plots))):
        write_text_atomic(path, text)
    return paths + list(plots.values())
