"""FINDINGS.md: which of the paper's claims hold at this scale, from the recorded results under
``benchmarks/results/cpu-mnist/<table>/`` (each the table's ``report.csv`` and ``summary.csv``).

Each comparison the paper makes, grouped by the claim it supports, with our MNIST difference, its
interval, seeds and verdict beside the paper's numbers; the verdict counts per table, plain and
after a Holm correction over the table's pairs; the findings beyond the paper where their results
are recorded, and the exact commands where they are not; and what this machine could not run."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from tradeoff.core.stats import FIRST_SEEDS, INCONCLUSIVE, JUDGED, MORE_SEEDS, OPPOSITE, REPRODUCED, verdict_counts
from tradeoff.core.tables import markdown_table
from tradeoff.records.folders import write_text_atomic
from tradeoff.report.layout import LEGEND, fmt_interval, fmt_p
from tradeoff.report.paper import split_setting
from tradeoff.report.recorded import RecordedPair, RecordedTable, read_recorded
from tradeoff.sweeps.grids import expand, load_table, paper_table_ids

RESULTS = "benchmarks/results/cpu-mnist"
SWEEPS = "sweeps/cpu-mnist"
SIDE_METRICS = ("Accuracy", "Adv. Robustness")  # what adversarial training buys and costs, in every table
# the paper's tables in the paper's order: the main tables, then the supplement's
PAPER_TABLES = tuple(sorted(paper_table_ids(), key=lambda t: (t.startswith("supp"), t)))


@cache
def no_mnist_tables() -> tuple[str, ...]:
    """The paper's tables with no cell at the cpu preset on MNIST (Supplement 4's model widths): they
    wait for CIFAR-10 and ImageNet."""
    return tuple(t for t in PAPER_TABLES if not expand(load_table(t), "cpu", seeds=1, datasets=["mnist"]).cells)


@dataclass
class Claim:
    """One claim of the paper and the comparisons that bear on it: the pairs of ``tables`` whose
    metric is in ``only`` (every metric when empty) and not in ``exclude``."""

    title: str
    tables: tuple
    only: tuple = ()
    exclude: tuple = ()

    def covers(self, pair: RecordedPair) -> bool:
        metric = pair.comparison.metric
        return pair.table in self.tables and (not self.only or metric in self.only) and metric not in self.exclude


CLAIMS = (
    Claim("Adversarial training makes a clean-label backdoor more successful (defence, trigger type, size, "
          "poison rate and position, training budget, FGSM, L2, model width)",
          ("table1a", "table2a", "table2b", "table2c", "table2d", "supp1", "supp2", "supp3", "supp4"),
          exclude=SIDE_METRICS),
    Claim("IBP certified training makes a clean-label backdoor more successful", ("table1b",), exclude=SIDE_METRICS),
    Claim("Robust models weaken the pre-training defences (spectral signatures, activation clustering, and the "
          "backdoor left after retraining without what they remove)", ("table3ab", "supp5a", "supp5b"),
          exclude=SIDE_METRICS),
    Claim("A post-training defence (Neural Cleanse + unlearning) still removes the backdoor of robust models",
          ("table3c",), exclude=SIDE_METRICS),
    Claim("What robust training buys and costs: adversarial robustness and clean accuracy", PAPER_TABLES,
          only=SIDE_METRICS),
)


@dataclass
class Beyond:
    """A finding beyond the paper: its table and what the section says."""

    table: str
    title: str
    what: str


BEYOND = (
    Beyond("phase", "Phase diagram: adversarial-training eps against sticker size",
           "per sticker size, the smallest eps at which adversarial training raises the backdoor success rate "
           "significantly (the 95% interval of the paired difference above 0)"),
    Beyond("beyond-training", "TRADES and MART", "each training objective against standard training"),
    Beyond("beyond-attacks", "Each new attack", "each clean-label attack under standard and adversarial training"),
    Beyond("beyond-purification", "Each purifier on robust victims",
           "each post-training defence on standard and adversarially trained victims"),
    Beyond("beyond-spatial", "Spatial adversarial training", "sticker and blended backdoors under L-inf PGD, spatial "
           "and composite adversarial training"),
)

PAIR_HEADERS = ["table", "metric", "cells: without → with", "paper", "MNIST: with − without", "95% interval",
                "seeds", "p", "verdict", "after Holm", f"at seeds 0-{FIRST_SEEDS - 1}"]
COUNT_HEADERS = ["table", "pairs", "seeds", REPRODUCED, OPPOSITE, INCONCLUSIVE, "no verdict",
                 f"after Holm: {REPRODUCED}", f"after Holm: {OPPOSITE}", f"after Holm: {INCONCLUSIVE}"]


@dataclass
class Findings:
    results: Path
    tables: dict = field(default_factory=dict)  # table id -> RecordedTable, for the tables recorded

    def missing(self, ids) -> list[str]:
        """The tables of ``ids`` with MNIST cells that are not recorded."""
        return [t for t in ids if t not in self.tables and t not in no_mnist_tables()]


def gather(results: str | Path) -> Findings:
    """Every paper and beyond table recorded under ``results`` (a folder per table id)."""
    results = Path(results)
    found = Findings(results)
    for table in list(PAPER_TABLES) + [b.table for b in BEYOND]:
        recorded = read_recorded(results / table, table)
        if recorded is not None:
            found.tables[table] = recorded
    return found


def sweep_commands(table: str) -> list[str]:
    """The commands that record ``table`` (``$t`` stands for its id in a loop): 3 seeds, the
    rule's extension to 10, the report into its results folder."""
    out, dest = f"{SWEEPS}/{table}", f"{RESULTS}/{table}"
    return [f"tradeoff sweep {table} --preset cpu --datasets mnist --seeds {FIRST_SEEDS} --workers 2 --out {out}",
            f"tradeoff more-seeds {out} --run --workers 2",
            f"tradeoff report {out} --out {dest} && cp {out}/summary.csv {dest}/"]


def command_block(tables: list[str]) -> list[str]:
    """The exact commands that record ``tables``: one table's, or a loop over several."""
    if len(tables) == 1:
        return ["```"] + sweep_commands(tables[0]) + ["```", ""]
    return ["```", f"for t in {' '.join(tables)}; do"] + [f"  {c}" for c in sweep_commands("$t")] + ["done", "```", ""]


MISSING_ANCHOR = "#to-record-what-is-missing"


def not_yet_run(tables: list[str]) -> list[str]:
    if not tables:
        return []
    return [f"Not yet run: {', '.join(tables)} (the commands: [to record what is missing]({MISSING_ANCHOR})).", ""]


def missing_section(f: Findings) -> list[str]:
    missing = f.missing(PAPER_TABLES)
    if not missing:
        return []
    return (["## To record what is missing", "",
             f"Each paper table not recorded yet, at the cpu preset on MNIST over {FIRST_SEEDS} seeds, its pairs "
             f"inconclusive at {FIRST_SEEDS} seeds taken to {MORE_SEEDS}, and its report recorded under "
             f"`{RESULTS}/` (then `python benchmarks/findings.py` again):", ""] + command_block(missing))


def pair_row(p: RecordedPair) -> list[str]:
    c, ci = p.comparison, p.comparison.interval
    cells = c.with_ if c.without == c.with_ else f"{c.without} → {c.with_}"  # one cell's two metrics
    return [p.table, c.metric, cells, p.paper or "–",
            "" if c.mean is None else f"{c.mean:+.1f}", "" if ci is None else fmt_interval(ci, signed=True),
            str(len(c.seeds)), "" if c.p_value is None else fmt_p(c.p_value), c.verdict, p.holm,
            c.first_seeds().verdict if c.extended else ""]


def pairs_table(pairs: list[RecordedPair]) -> list[str]:
    """The pairs with a finished seed on both sides, and how many have none yet."""
    shown = [p for p in pairs if p.comparison.differences]
    out = [markdown_table([pair_row(p) for p in shown], PAIR_HEADERS), ""] if shown else []
    if len(shown) < len(pairs):
        out += [f"{len(pairs) - len(shown)} more pair(s) without a seed finished on both sides.", ""]
    return out


def count_row(t: RecordedTable) -> list[str]:
    counts = verdict_counts(t.comparisons)
    seeds = f"{t.seeds[0]}-{t.seeds[-1]}" if len(t.seeds) > 1 else ", ".join(map(str, t.seeds)) or "–"
    return [f"{t.paper_table} (`{t.id}`)", str(counts.pairs), seeds, *(str(counts.counts[v]) for v in JUDGED),
            str(counts.pairs - counts.judged), *(str(counts.holm_counts[v]) for v in JUDGED)]


def counts_section(f: Findings) -> list[str]:
    rows = [count_row(f.tables[t]) for t in PAPER_TABLES if t in f.tables]
    rows += [count_row(f.tables[b.table]) for b in BEYOND if b.table in f.tables]
    out = ["## Counts per table", "",
           f"MNIST pairs by verdict, then after Holm's correction over each table's judged pairs (family-wise alpha "
           f"0.05). Seeds: those of the table's runs in its summary.csv; a pair inconclusive at seeds "
           f"0-{FIRST_SEEDS - 1} goes to {MORE_SEEDS} seeds (a rule fixed in advance).", ""]
    out += [markdown_table(rows, COUNT_HEADERS), ""] if rows else ["No table is recorded yet.", ""]
    return out + not_yet_run(f.missing(PAPER_TABLES))


def claims_section(f: Findings) -> list[str]:
    out = ["## The paper's claims", ""]
    placed: set = set()
    for claim in CLAIMS:
        pairs = [p for t in claim.tables if t in f.tables for p in f.tables[t].pairs
                 if id(p) not in placed and claim.covers(p)]
        placed |= {id(p) for p in pairs}
        out += [f"### {claim.title}", ""]
        if pairs:
            counts = verdict_counts([p.comparison for p in pairs])
            out += [f"{counts.counts[REPRODUCED]} of {counts.pairs} comparisons reproduced, "
                    f"{counts.counts[OPPOSITE]} opposite, {counts.counts[INCONCLUSIVE]} inconclusive.", ""]
            out += pairs_table(pairs)
        out += not_yet_run(f.missing(claim.tables))
    return out


def phase_lines(t: RecordedTable) -> list[str]:
    """Per sticker size, the smallest eps whose paired difference of the heatmap's metric is
    significantly above 0, in the table's eps order."""
    keys = load_table(t.id).heatmap
    by_size: dict = {}
    for p in t.pairs:
        parts = dict(split_setting(p.comparison.with_))
        if p.comparison.metric == keys["metric"] and keys["rows"] in parts and keys["columns"] in parts:
            by_size.setdefault(parts[keys["columns"]], []).append((parts[keys["rows"]], p.comparison))
    lines = []
    for size, steps in by_size.items():
        first = next(((eps, c) for eps, c in steps if c.interval is not None and c.interval.low > 0), None)
        if first is None:
            judged = [eps for eps, c in steps if c.interval is not None]
            lines.append(f"- {keys['columns']} {size}: " + (
                f"no eps raises it significantly (of {', '.join(judged)})." if judged
                else "undecided: no eps has 2 seeds finished on both sides."))
        else:
            eps, c = first
            lines.append(f"- {keys['columns']} {size}: from {keys['rows']} {eps} on ({c.mean:+.1f} points, "
                         f"{fmt_interval(c.interval, signed=True)}, {len(c.seeds)} seeds).")
    return lines


def beyond_section(f: Findings) -> list[str]:
    out = ["## Beyond the paper", ""]
    for b in BEYOND:
        out += [f"### {b.title}", "", f"{b.what[0].upper()}{b.what[1:]}.", ""]
        t = f.tables.get(b.table)
        if t is None:
            out += ["Not yet run. To record it:", ""] + command_block([b.table])
            continue
        if b.table == "phase":
            out += phase_lines(t) + [""]
        out += pairs_table(t.pairs)
    return out


def unrun_section() -> list[str]:
    return ["## What this machine could not run", "",
            "- **CIFAR-10 and ImageNet**: no copy of either is on this machine and it has no internet access. "
            "With the data under a data root:", "", "```",
            "tradeoff sweep all --preset cpu --datasets cifar10 --seeds 3 --workers 2 --data-root DATA "
            "--out sweeps/cpu-cifar10",
            "tradeoff sweep all --preset paper --datasets cifar10 imagenet --seeds 3 --data-root DATA "
            "--executor slurm --gpus-per-cell 1 --out sweeps/paper",
            "```", "",
            "  (the cpu preset skips ImageNet: it does not fit a CPU budget.)"
            + (f" The paper's tables without an MNIST cell wait for them: {', '.join(no_mnist_tables())}."
               if no_mnist_tables() else ""),
            "- **The paper preset** (the paper's budgets): no GPU here. On a GPU cluster, MNIST over the paper's "
            "10 seeds:", "", "```",
            "tradeoff sweep all --preset paper --datasets mnist --seeds 10 --executor slurm --gpus-per-cell 1 "
            "--out sweeps/paper-mnist",
            "tradeoff report sweeps/paper-mnist",
            "```", ""]


def findings_text(results: str | Path) -> str:
    f = gather(results)
    head = ["# Findings", "",
            f"Which of the paper's claims hold at the cpu preset on MNIST, from the recorded results in "
            f"`{RESULTS}/` (one folder per table: its `report.md`, `report.csv`, `report.html`, figures and "
            "`summary.csv`). Each comparison is a paired difference (with − without, in points) over matching "
            "seeds with its 95% interval; reproduced: the paper's direction, the interval excluding 0; opposite: "
            "the other direction; inconclusive: the interval includes 0. The paper's numbers: its two values, or "
            "its difference on another dataset where it has none for MNIST. Regenerate with "
            "`python benchmarks/findings.py`.", "", LEGEND, ""]
    return "\n".join(head + counts_section(f) + claims_section(f) + beyond_section(f) + missing_section(f)
                     + unrun_section())


def write_findings(results: str | Path, dest: str | Path) -> Path:
    dest = Path(dest)
    write_text_atomic(dest, findings_text(results))
    return dest

