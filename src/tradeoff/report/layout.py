"""What every output format shares: the table grid in the paper's layout, number and cell
formatting (intervals and collapse marks included), the caption and the with/without pairs' rows."""

from __future__ import annotations

import statistics
from typing import Optional

from tradeoff.core.stats import BOOTSTRAP_FROM, FIRST_SEEDS, MORE_SEEDS, Interval, verdict_counts
from tradeoff.report.collect import Entry, TableReport
from tradeoff.report.paper import split_setting

FIRST_SEEDS_HEADER = f"verdict at seeds 0-{FIRST_SEEDS - 1}"
COMPARISON_HEADERS = ["dataset", "metric", "without", "with", "paper: without → with", "ours: with − without",
                      "95% interval", "seeds", "verdict", "p", "verdict after Holm", FIRST_SEEDS_HEADER]

CLIP_MARK = "†"
LEGEND = (f"{CLIP_MARK} marks an interval's end clipped to the range its quantity can take ([0, 100] for a "
          "percentage, [-100, +100] for a difference of two percentages); report.csv keeps the computed ends "
          "(ci_low_raw, ci_high_raw) and names the clipped ones (ci_clipped). In the pairs' tables, p is the "
          "two-sided p-value of \"no difference\" by the interval's own method (p < 0.05 exactly when the "
          "interval excludes 0); \"verdict after Holm\" is the verdict once Holm's step-down correction over the "
          "table's judged pairs holds the family-wise error at 0.05 (a pair it does not reject is inconclusive); "
          f"\"{FIRST_SEEDS_HEADER}\" is the verdict of a pair's first {FIRST_SEEDS} seeds, shown where it has more "
          f"(a rule fixed in advance takes every pair inconclusive at {FIRST_SEEDS} seeds to {MORE_SEEDS}: "
          "`tradeoff more-seeds FOLDER`).")


def curve_band(curves: list, metric: str) -> tuple[list, list, list]:
    """(steps, mean, sample std) in percent of ``metric`` over several seeds' learning curves, at
    the steps every one of them measured; the std is None for a single curve."""
    steps = sorted(set.intersection(*({p["step"] for p in c if p.get(metric) is not None} for c in curves)))
    at = [{p["step"]: 100 * p[metric] for p in c if p.get(metric) is not None} for c in curves]
    means = [statistics.fmean(a[s] for a in at) for s in steps]
    stds = [statistics.stdev(a[s] for a in at) if len(at) > 1 else None for s in steps]
    return steps, means, stds


def fmt_number(value: Optional[float], percent: bool = True) -> str:
    if value is None:
        return ""
    return f"{value:.1f}" if percent else f"{value:.3g}"


def collapse_mark(e: Entry) -> str:
    return f" [{e.collapsed} collapsed]" if e.collapsed else ""


def masking_mark(e: Entry) -> str:
    """A mark on an adversarial-robustness value whose gradient-masking checks warned (the
    sentences are in the table's notes)."""
    return " [masking?]" if e.masking else ""


def fmt_interval(ci: Interval, percent: bool = True, signed: bool = False, digits: int = 1) -> str:
    """``[low, high]``, an end clipped to its range marked with :data:`CLIP_MARK`."""
    def end(value: float, clipped: bool) -> str:
        text = f"{value:+.{digits}f}" if signed else fmt_number(value, percent)
        return text + (CLIP_MARK if clipped else "")

    return f"[{end(ci.low, ci.clipped_low)}, {end(ci.high, ci.clipped_high)}]"


def fmt_spread(e: Entry) -> str:
    """Our mean, with `` ± std [low, high]`` (the 95% interval) where there is more than one seed
    (for an entry with values)."""
    ours = fmt_number(e.mean, e.percent)
    ci = e.interval
    if ci is not None:
        ours += f" ± {fmt_number(ci.std, e.percent)} {fmt_interval(ci, e.percent)}"
    return ours


def fmt_status(e: Entry) -> str:
    """Why an entry has no value of ours ("collapsed" when every seed collapsed)."""
    if e.status in ("", "not run", "not swept"):
        return "–"
    return e.status if e.status == "collapsed" else e.status + collapse_mark(e)


def fmt_entry(e: Entry) -> str:
    ours = fmt_spread(e) + masking_mark(e) + collapse_mark(e) if e.values else fmt_status(e)
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
    elif t.seeds == [1]:
        seeds = "1 seed: no interval and no verdict is possible"
    else:
        counts = f"{t.seeds[0]}" if len(t.seeds) == 1 else f"{t.seeds[0]} to {t.seeds[-1]}"
        seeds = (f"mean ± sample standard deviation [95% interval] over {counts} seeds; Student's t interval "
                 f"below {BOOTSTRAP_FROM} seeds, a percentile bootstrap from {BOOTSTRAP_FROM}")
    return (f"Ours ({seeds}, preset {t.preset}), the paper's value in parentheses; percent unless noted."
            + "".join(f" {line}" for line in attack_lines(t)))


def attack_lines(t: TableReport) -> list[str]:
    """One sentence per dataset naming the evaluation attack behind our adversarial robustness
    values, as the runs' spec.yaml give it; where the dataset's cells used different attacks, each
    with its settings."""
    lines = []
    for ds, used in t.attacks.items():
        if len(used) == 1:
            lines.append(f"Adv. robustness, {ds}: {next(iter(used))}.")
        else:
            each = "; ".join(f"{name} ({' / '.join(settings)})" for name, settings in used.items())
            lines.append(f"Adv. robustness, {ds}: the cells used different attacks: {each}.")
    return lines


def saliency_line(t: TableReport) -> str:
    """The saliency figure's caption: what it shows, and each pair's trigger saliency shares."""
    shares = [f"{p.dataset}, {p.adversarial_label}: standard {p.saliency['standard']:.1f}% → "
              f"{p.saliency['adversarial']:.1f}%" for p in t.pairs if len(p.saliency) == 2]
    return ("Input gradients |d logit_target / d x| of each standard model and its adversarially trained twin on "
            "the same triggered test images (trigger outlined). Share of the gradient mass on the trigger's pixels "
            "(trigger_saliency_share, mean over seeds): " + ("; ".join(shares) or "not recorded") + ".")


COST_HEADERS = ["dataset", "setting", "cell", "seeds", "minutes per seed", "training steps", "training images / s"]


def cost_rows(t: TableReport) -> list[list[str]]:
    """One row per cell with finished runs, in the order of :data:`COST_HEADERS`."""
    return [[c.dataset, c.setting, c.slug, str(c.seeds),
             f"{c.seconds / 60:.1f}", f"{c.steps:.0f}",
             "" if c.images_per_second is None else f"{c.images_per_second:.0f}"] for c in t.costs]


def cost_line(t: TableReport) -> str:
    runs = sum(c.seeds for c in t.costs)
    return (f"Cost: {t.total_seconds / 3600:.2f} hours over {runs} finished runs (every timed stage: training, "
            "evaluation, checks and backdoor defences, as measured by each run; a run shared with another table "
            "counts in both).")


def heatmap_grid(t: TableReport) -> dict:
    """dataset -> (row values, column values, {(row, column): Comparison}) of the table's heatmap:
    the comparisons of its metric, placed by the setting keys it names (in the table's order)."""
    if not t.heatmap:
        return {}
    grid: dict = {}
    for c in t.comparisons:
        if c.metric != t.heatmap["metric"]:
            continue
        parts = dict(split_setting(c.with_))
        row, col = parts.get(t.heatmap["rows"]), parts.get(t.heatmap["columns"])
        if row is None or col is None:
            continue
        rows, cols, cells = grid.setdefault(c.dataset, ([], [], {}))
        rows += [row] if row not in rows else []
        cols += [col] if col not in cols else []
        cells[(row, col)] = c
    return grid


def significance_lines(t: TableReport) -> list[str]:
    """Per dataset and heatmap column: the first row (the smallest eps, in the table's order) whose
    difference is significant (its 95% interval excludes 0)."""
    lines = []
    rows_key, cols_key = (t.heatmap.get(k) for k in ("rows", "columns"))
    for ds, (rows, cols, cells) in heatmap_grid(t).items():
        for col in cols:
            first = next((r for r in rows if (r, col) in cells and cells[(r, col)].interval is not None
                          and cells[(r, col)].interval.excludes_zero()), None)
            if first is None:
                judged = [cells[(r, col)] for r in rows if (r, col) in cells and cells[(r, col)].interval is not None]
                why = "at no eps" if judged else "undecided: fewer than 2 seeds finished both cells"
                lines.append(f"{ds}, {cols_key}={col}: the difference is significant {why}.")
            else:
                c = cells[(first, col)]
                lines.append(f"{ds}, {cols_key}={col}: significant from {rows_key}={first} on "
                             f"({c.mean:+.1f} points, {fmt_interval(c.interval, signed=True)}).")
    return lines


def comparison_rows(t: TableReport) -> list[list[str]]:
    """One row per with/without pair, in the order of :data:`COMPARISON_HEADERS`."""
    rows = []
    for c, after_holm in zip(t.comparisons, verdict_counts(t.comparisons).holm):
        paper = (f"{c.paper_without:.1f} → {c.paper_with:.1f}"
                 if c.paper_without is not None and c.paper_with is not None else "")
        if paper and c.paper_source != c.dataset:
            paper = f"{c.paper_source}: {paper}"
        ci, p = c.interval, c.p_value
        rows.append([c.dataset, c.metric, c.without, c.with_, paper,
                     "" if c.mean is None else f"{c.mean:+.1f}",
                     "" if ci is None else f"{fmt_interval(ci, signed=True)} ({ci.method})",
                     str(len(c.seeds)), c.verdict, "" if p is None else fmt_p(p), after_holm,
                     c.first_seeds().verdict if c.extended else ""])
    return rows


def fmt_p(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else "< 0.001"


def pairs_line(t: TableReport) -> str:
    """The counts of the table's pairs by verdict, plain and after the Holm correction."""
    return f"With/without pairs: {t.verdicts}; {t.holm_line}"
