"""Record one finished table of a sweep folder under benchmarks/results/: its summary.csv rows,
its report (Markdown, CSV, HTML, figures) and RUN.md (the code's commit, package versions, the
command, the cells' summed and elapsed seconds). No weights are copied.

A sweep folder can hold several tables (their cells share run folders where the specs agree):
the table's manifest and the run folders it names are linked into a scratch folder, and
``tradeoff report`` runs there, so the report holds this table alone.

    python benchmarks/record_table.py table1a --sweep SWEEP_FOLDER --command "tradeoff sweep ..." \\
        [--out benchmarks/results/cpu-mnist/table1a]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import sys
import tempfile
from collections import Counter
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from tradeoff.records.manifest import manifest_path, read_manifest
from tradeoff.report import write_report
from tradeoff.sweeps.sweep import done_digests

from outputs import head_commit

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "torchvision", "numpy", "scipy", "scikit-learn", "pyautoattack")


def finished_runs(sweep: Path, cells: list) -> tuple[list[str], list[str]]:
    """(the finished run folders of the manifest's ``cells``, in their order and each once; the
    run names of the cells not finished). A cell is done by any run folder with its spec digest, as
    the sweep counts it: one whose spec another table named first ran under that table's name."""
    by_digest = done_digests(sweep)
    done = list(dict.fromkeys(by_digest[c.digest] for c in cells if c.digest in by_digest))
    return done, [c.run for c in cells if c.digest not in by_digest]


def seconds(sweep: Path, runs: list[str]) -> tuple[float, float]:
    """(the cells' summed training + evaluation + defence seconds, first start to last finish)."""
    total, starts, ends = 0.0, [], []
    for r in runs:
        metrics = sweep / r / "metrics.json"
        record = json.loads(metrics.read_text())
        total += sum(v for k, v in record.items() if k.endswith("_seconds") and isinstance(v, (int, float)))
        starts.append((sweep / r / "spec.yaml").stat().st_mtime)
        ends.append(metrics.stat().st_mtime)
    return total, max(ends) - min(starts)


def summary_rows(sweep: Path, runs: list[str]) -> tuple[list[str], list[dict]]:
    with open(sweep / "summary.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = [row for row in reader if row["run"] in set(runs)]
        return list(reader.fieldnames or []), rows


def codes(sweep: Path, runs: list[str], current: str) -> str:
    """The commits the runs were made with: each carried run's ``made_with.txt`` (see
    carry_runs.py), ``current`` for the rest; with their counts when there are several."""
    made = Counter()
    for r in runs:
        marker = sweep / r / "made_with.txt"
        made[marker.read_text().strip() if marker.is_file() else current] += 1
    if len(made) == 1:
        return next(iter(made))
    return ", ".join(f"{c} ({n} runs)" for c, n in made.most_common())



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table")
    parser.add_argument("--sweep", required=True, help="the sweep folder")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--out", help="default: benchmarks/results/<preset>-<datasets>/<table>")
    parser.add_argument("--command", required=True, help="the sweep command the table was run with")
    parser.add_argument("--code", help="the commit the runs were made with (default: this checkout's HEAD)")
    args = parser.parse_args()

    sweep = Path(args.sweep)
    manifest_file = manifest_path(sweep, args.table, args.preset)
    if not manifest_file.is_file():
        raise SystemExit(f"{sweep} has no manifest of {args.table} at preset {args.preset}.")
    manifest = read_manifest(manifest_file)
    cells = [c for c in manifest.cells if c.run]
    done, missing = finished_runs(sweep, cells)
    if missing:
        raise SystemExit(f"{args.table}: {len(missing)} of {len(cells)} runs are not finished (first: {missing[0]}).")
    datasets = "-".join(sorted({c.dataset for c in manifest.cells}))
    out = Path(args.out or REPO / "benchmarks" / "results" / f"{args.preset}-{datasets}" / args.table)
    out.mkdir(parents=True, exist_ok=True)

    fields, rows = summary_rows(sweep, done)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        shutil.copy(manifest_file, scratch / manifest_file.name)
        for r in done:
            (scratch / r).symlink_to((sweep / r).resolve())
        with open(scratch / "summary.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        shutil.copy(scratch / "summary.csv", out / "summary.csv")
        written = write_report(scratch, out)

    summed, elapsed = seconds(sweep, done)
    carried = sum(not (sweep / r / "log.txt").is_file() for r in done)
    carried_note = (f"; {carried} of them carried from an earlier working session (`carry_runs.py`: without "
                    "weights, log or saliency maps, so the saliency figure leaves their pairs out)" if carried else "")
    versions = ", ".join(f"{p} {version(p)}" for p in PACKAGES if _installed(p))
    (out / "RUN.md").write_text(
        f"# {manifest.paper_table}: how this was run\n\n"
        f"- command: `{args.command}`\n- code: {codes(sweep, done, args.code or head_commit())}\n"
        f"- Python {platform.python_version()}, {versions}\n"
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, one thread per process\n"
        f"- runs: {len(done)}{carried_note}; the cells' training, evaluation and defence seconds summed: "
        f"{summed / 3600:.2f} core-hours; first start to last finish: {elapsed / 3600:.2f} hours "
        "(with other work on the machine)\n")
    print("\n".join(str(p) for p in [out / "summary.csv", out / "RUN.md", *written]))
    return 0


def _installed(package: str) -> bool:
    try:
        version(package)
        return True
    except PackageNotFoundError:
        return False


if __name__ == "__main__":
    sys.exit(main())
