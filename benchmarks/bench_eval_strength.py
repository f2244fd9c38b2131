"""Is the evaluation attack strong enough? Our robustness beside AutoAttack's on the same images.

For each model: the quickstart's PGD model, Table 1(a)'s MNIST adversarial-training cell at the
cpu and at the smoke preset, and Table 1(b)'s MNIST IBP cell at the cpu preset (whose attack, the
original's IBP-script PGD, is the paper preset's too). A sweep cell's model is named
``TABLE-DATASET-CELL-PRESET``. Each is trained if no finished run folder is found (``tradeoff
quickstart`` / ``tradeoff sweep TABLE ... --cells CELL --seeds 1``), or loaded from one (``--runs
NAME=FOLDER``), then evaluated on the same seeded subset of its test images (the subset
``eval.autoattack`` takes) under:

- ``ours``: the evaluation attack the current code gives that model (the quickstart's spec, the
  preset's cell), which is what its reported robustness uses;
- ``before``: the evaluation attack written in the run folder's spec.yaml, when it differs;
- ``autoattack``: AutoAttack (pyautoattack, version standard) with APGD-CE + APGD-T, the
  gradient attacks of the standard version (FAB-T and Square are left out: on these models they
  are the costly part and rarely add a point), at the evaluation attack's norm and eps;
- ``--attack steps=50,restarts=2,loss=margin,...``: candidate attacks, for choosing one.

The gap is ours minus AutoAttack in points; the criterion is a gap of at most 2 points on the
quickstart and the cpu cell (the smoke cell's 2-step attack is for tests and only reported).
Writes eval-strength.md and eval-strength.json.

    OMP_NUM_THREADS=1 python benchmarks/bench_eval_strength.py --data-root DIR [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from tradeoff import grids
from tradeoff.attacks import describe, perturb
from tradeoff.autoattack import run_autoattack
from tradeoff.defend import load_trained_run
from tradeoff.quickstart import quickstart_specs
from tradeoff.resolve import resolve
from tradeoff.spec import AttackSpec, AutoAttackSpec

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "eval-strength"
AUTOATTACK = AutoAttackSpec(version="standard", attacks=["apgd-ce", "apgd-t"])
MAX_GAP = 0.02
MODELS = {"quickstart": 400, "table1a-mnist-adv-training-cpu": 500, "table1a-mnist-adv-training-smoke": 100,
          "table1b-mnist-rate5-ibp-cpu": 500}
CHECKED = ("quickstart", "table1a-mnist-adv-training-cpu")  # the models the criterion applies to


def tradeoff(*args: str) -> int:
    """``python -m tradeoff ARGS`` in a child process (the same interpreter, one thread)."""
    command = [sys.executable, "-m", "tradeoff", *args]
    print("$ " + " ".join(command), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(command, env=env).returncode


def finished(folder: Path) -> bool:
    return (folder / "metrics.json").is_file() and (folder / "model.safetensors").is_file()


def find_or_train(name: str, out: Path, data_root: str | None) -> Path:
    """A finished run folder of ``name`` under ``out``, trained first if there is none."""
    if name == "quickstart":
        folder = out / "quickstart" / "pgd"
        if not finished(folder):
            tradeoff("quickstart", "--out", str(folder.parent), "--quiet")
        return folder
    table, dataset, cell, preset = sweep_cell(name)
    sweep = out / f"{table}-{preset}"
    pattern = f"{table}-{dataset}-{cell}-s0-*"
    found = sorted(p for p in sweep.glob(pattern) if finished(p))
    if not found:
        tradeoff("sweep", table, "--preset", preset, "--datasets", dataset, "--cells", cell,
                 "--seeds", "1", "--out", str(sweep), *(["--data-root", data_root] if data_root else []))
        found = sorted(p for p in sweep.glob(pattern) if finished(p))
    return found[-1]


def sweep_cell(name: str) -> tuple[str, str, str, str]:
    """``table1a-mnist-adv-training-cpu`` -> (table, dataset, cell slug, preset)."""
    table, dataset, rest = name.split("-", 2)
    cell, preset = rest.rsplit("-", 1)
    return table, dataset, cell, preset


def current_eval_attack(name: str) -> AttackSpec:
    """The evaluation attack the current code gives the model ``name`` (resolved)."""
    if name == "quickstart":
        return resolve([s for s in quickstart_specs() if s.name == "pgd"][0]).eval.attack
    table, dataset, cell, preset = sweep_cell(name)
    grid = grids.expand(grids.load_table(table), preset, seeds=1, datasets=[dataset], only=[cell])
    return grid.cells[0].spec.eval.attack


def candidate(text: str, base: AttackSpec) -> AttackSpec:
    """``steps=50,restarts=2,loss=margin,step_size=0.01``: a plain PGD at ``base``'s norm, eps,
    step and steps, with these fields changed."""
    raw = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in text.split(",") if item)}
    return dataclasses.replace(AttackSpec(norm=base.norm, eps=base.eps, step_size=base.step_size, steps=base.steps),
                               **raw)


def robust_under(model, x: torch.Tensor, y: torch.Tensor, a: AttackSpec, batch_size: int) -> tuple[torch.Tensor, float]:
    """Per image: still correct under ``a``; and the seconds it took."""
    start = time.perf_counter()
    torch.manual_seed(0)
    out = []
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        adv = perturb(model, xb, yb, a)
        with torch.no_grad():
            out.append(model(adv).argmax(1) == yb)
    return torch.cat(out), time.perf_counter() - start


def autoattack_flags(run, x: torch.Tensor, y: torch.Tensor, a: AttackSpec, cache: Path) -> tuple[torch.Tensor, float]:
    """AutoAttack's per-image robustness and seconds, kept in ``cache`` per (run, images, norm,
    eps): rerunning the benchmark after changing our attack does not rerun AutoAttack."""
    key = f"{run.run_dir.resolve()}|{len(y)}|{run.spec.seed}|{a.norm}|{a.eps}|{','.join(AUTOATTACK.attacks)}"
    file = cache / f"autoattack-{hashlib.sha256(key.encode()).hexdigest()[:12]}.pt"
    if file.is_file():
        saved = torch.load(file)
        return saved["robust"], saved["seconds"]
    result = run_autoattack(run.model, x, y, AUTOATTACK, a, run.spec.seed, run.device)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save({"robust": result.robust, "seconds": result.seconds, "key": key}, file)
    return result.robust, result.seconds


def measure(name: str, folder: Path, images: int, data_root: str | None, candidates: list[str],
            skip_autoattack: bool, cache: Path) -> dict:
    run = load_trained_run(folder, data_root)
    subset = run.data.test.subset(images, run.spec.seed)
    batches = list(subset.loader(500, device=run.device))
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    with torch.no_grad():
        clean = torch.cat([run.model(xb).argmax(1) == yb for xb, yb in zip(x.split(500), y.split(500))])
    ours = current_eval_attack(name)
    attacks = {"ours": ours}
    if run.spec.eval.attack != ours:
        attacks["before"] = run.spec.eval.attack
    for text in candidates:
        attacks[f"candidate {text}"] = candidate(text, ours)
    row = {"model": name, "run": str(folder), "dataset": run.spec.data.dataset, "images": len(y),
           "norm": ours.norm, "eps": ours.eps, "clean_accuracy": clean.float().mean().item(), "attacks": {}}
    flags = {}
    for label, a in attacks.items():
        robust, seconds = robust_under(run.model, x, y, a, 500)
        flags[label] = robust
        row["attacks"][label] = {"attack": describe(a), "spec": dataclasses.asdict(a),
                                 "robustness": robust.float().mean().item(), "seconds": round(seconds, 1)}
        print(f"{name}: {label}: {describe(a)}: {100 * robust.float().mean():.1f}% ({seconds:.0f} s)", flush=True)
    if not skip_autoattack:
        aa, aa_seconds = autoattack_flags(run, x, y, ours, cache)
        row["autoattack"] = {"attacks": "APGD-CE + APGD-T (version standard)", "robustness": aa.float().mean().item(),
                             "seconds": round(aa_seconds, 1)}
        print(f"{name}: AutoAttack APGD-CE + APGD-T: {100 * aa.float().mean():.1f}% ({aa_seconds:.0f} s)",
              flush=True)
        for label, robust in flags.items():
            entry = row["attacks"][label]
            entry["gap_points"] = round(100 * (entry["robustness"] - row["autoattack"]["robustness"]), 2)
            entry["missed_by_ours"] = int((robust & ~aa.to(robust.device)).sum())  # AutoAttack breaks, ours not
    return row


def markdown(rows: list[dict]) -> str:
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    lines = ["| model | images | eps | clean % | attack | which | robustness % | AutoAttack % | gap (points) "
             "| ours s | AutoAttack s |", "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        aa = r.get("autoattack")
        for label, e in r["attacks"].items():
            lines.append(f"| {r['model']} | {r['images']} | {r['eps']:g} | {pct(r['clean_accuracy'])} | {e['attack']} | "
                         f"{label} | {pct(e['robustness'])} | {pct(aa['robustness']) if aa else '-'} | "
                         f"{e.get('gap_points', '-')} | {e['seconds']:.0f} | {aa['seconds'] if aa else '-'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", help="folder holding mnist/ (default: $TRADEOFF_DATA)")
    parser.add_argument("--out", default="/tmp/tradeoff-bench-eval-strength", help="run folders (default: %(default)s)")
    parser.add_argument("--results", default=str(RESULTS), help="where the Markdown and JSON go (default: %(default)s)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="only these")
    parser.add_argument("--runs", nargs="*", default=[], metavar="MODEL=FOLDER", help="finished run folders to use")
    parser.add_argument("--images", nargs="*", default=[], metavar="MODEL=N", help="test images per model "
                        f"(default: {', '.join(f'{k} {v}' for k, v in MODELS.items())})")
    parser.add_argument("--attack", action="append", default=[], metavar="KEY=VALUE,...",
                        help="a candidate evaluation attack, on top of ours (repeatable)")
    parser.add_argument("--no-autoattack", action="store_true", help="only our attacks (for exploring)")
    args = parser.parse_args()

    given = dict(item.split("=", 1) for item in args.runs)
    images = {**MODELS, **{k: int(v) for k, v in (item.split("=", 1) for item in args.images)}}
    out, start = Path(args.out), time.perf_counter()
    rows = []
    for name in args.models:
        folder = Path(given[name]) if name in given else find_or_train(name, out, args.data_root)
        rows.append(measure(name, folder, images[name], args.data_root, args.attack, args.no_autoattack,
                            out / "autoattack-cache"))

    table = markdown(rows)
    print("\n" + table)
    failed = [r["model"] for r in rows if r["model"] in CHECKED and "autoattack" in r
              and r["attacks"]["ours"]["gap_points"] > 100 * MAX_GAP]
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / "eval-strength.md").write_text(
        "# The evaluation attack beside AutoAttack (APGD-CE + APGD-T), same models and images\n\n"
        f"Criterion: ours minus AutoAttack at most {100 * MAX_GAP:.0f} points on {' and '.join(CHECKED)}. "
        "2 shared CPU cores, 1 thread.\n\n" + table)
    (results / "eval-strength.json").write_text(json.dumps(
        {"rows": rows, "max_gap_points": 100 * MAX_GAP, "failed": failed,
         "script_seconds": round(time.perf_counter() - start, 1)}, indent=1) + "\n")
    print(f"written to {results}/eval-strength.md and eval-strength.json"
          + (f"; gap above {100 * MAX_GAP:.0f} points: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
