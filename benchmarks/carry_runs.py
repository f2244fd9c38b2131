"""Carry a sweep's finished runs from one working session to the next, when the sweep folder itself
does not survive (a scratch disk, a fresh checkout): ``save`` copies each finished run folder's
``spec.yaml`` and ``metrics.json`` (a few kilobytes; no weights) into a folder that is kept, and
``restore`` puts them back into a new sweep folder, where the sweep counts them as done and runs
only the rest. What a restored run lacks: its weights (``tradeoff defend`` and the transfer check
of a pair whose other run finishes later need them), its log and its saliency maps (a report's
saliency figure leaves out pairs without them). Each carried run names the commit that made it
(``made_with.txt``: the commit of the checkout ``save`` runs from, when the run is first carried),
which ``record_table.py`` lists when a table's runs come from several.

    python benchmarks/carry_runs.py save SWEEP --to benchmarks/results/in-progress/cpu-mnist
    python benchmarks/carry_runs.py restore benchmarks/results/in-progress/cpu-mnist --to SWEEP
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from tradeoff.records.folders import finished_runs, write_atomic, write_text_atomic

from outputs import head_commit

KEPT = ("spec.yaml", "metrics.json")
MADE_WITH = "made_with.txt"


def save(sweep: Path, carried: Path, code: str) -> list[str]:
    """Copy the kept files of every finished run of ``sweep`` into ``carried`` (replacing an older
    copy of the same run, each file whole or not at all); a run carried for the first time, and not
    restored from an earlier session, is marked as made with ``code``. The names of the runs carried."""
    names = []
    for run in finished_runs(sweep):
        target = carried / run.name
        for name in KEPT:
            source, copy = run / name, target / name
            if not copy.is_file() or copy.read_bytes() != source.read_bytes():
                # whole or not at all: save runs while the sweep does, and a session may stop it mid-copy
                write_atomic(copy, lambda tmp, source=source: shutil.copy2(source, tmp))
        if not (target / MADE_WITH).is_file():
            made_with = run / MADE_WITH
            write_text_atomic(target / MADE_WITH, made_with.read_text() if made_with.is_file() else code + "\n")
        names.append(run.name)
    return names


def restore(carried: Path, sweep: Path) -> tuple[list[str], list[str]]:
    """Copy every carried run into ``sweep`` where no folder of its name exists yet: (the runs
    restored, those left alone because the sweep folder has them already)."""
    restored, present = [], []
    for run in sorted(p for p in carried.iterdir() if (p / "metrics.json").is_file()):
        target = sweep / run.name
        if target.exists():
            present.append(run.name)
            continue
        partial = sweep / f".{run.name}.restoring"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for name in (*KEPT, MADE_WITH):
            if (run / name).is_file():
                shutil.copy2(run / name, partial / name)
        partial.rename(target)  # whole or not at all: a stopped restore leaves no half run folder
        restored.append(run.name)
    return restored, present


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("save", help="copy a sweep folder's finished runs (spec and metrics) into a kept folder")
    s.add_argument("sweep", type=Path)
    s.add_argument("--to", type=Path, required=True, dest="carried")
    s.add_argument("--code", help="the commit the sweep runs (default: this checkout's HEAD)")
    r = sub.add_parser("restore", help="put carried runs back into a sweep folder")
    r.add_argument("carried", type=Path)
    r.add_argument("--to", type=Path, required=True, dest="sweep")
    args = p.parse_args(argv)
    if args.action == "save":
        if not args.sweep.is_dir():
            print(f"carry_runs: no sweep folder {args.sweep}.", file=sys.stderr)
            return 2
        names = save(args.sweep, args.carried, args.code or head_commit())
        print(f"{len(names)} finished run(s) of {args.sweep} carried in {args.carried}")
        return 0
    if not args.carried.is_dir():
        print(f"carry_runs: no carried runs in {args.carried}.", file=sys.stderr)
        return 2
    restored, present = restore(args.carried, args.sweep)
    print(f"{len(restored)} run(s) restored into {args.sweep}"
          + (f"; {len(present)} already there, left as they are" if present else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
