"""Do the adversarially trained families converge on every seed at the cpu preset (MNIST)?

Runs, one process at a time, each family's seeds and checks that none collapses:

- the cheap families first: configs/table1a-mnist-cpu/{fgsm,fast,free,l2-pgd}.yaml through
  ``tradeoff run CONFIG --set seed=S``, each evaluated under the attack its config defines;
- then Table 1(a)'s cells through ``tradeoff sweep table1a --preset cpu --datasets mnist``:
  ``adv-training`` (--seeds-adv seeds), ``lipschitz-adv-training`` and ``denoise-adv-training``.

Criteria: adv-training: every seed reaches clean accuracy >= 90% and robustness >= 60% (under
the cpu preset's evaluation attack: L-inf PGD-10, eps 0.3, step 0.05, 1 restart); every other
family: every seed reaches clean accuracy >= 90% and a robustness within 10 points of its
family's median.

Resumable: the sweep skips its finished cells by itself, and a ``tradeoff run`` whose run folder
already holds metrics.json is not run again (remove the folder after changing its config).
Prints a per-seed and a per-family table and writes them as Markdown and JSON.

    OMP_NUM_THREADS=1 python benchmarks/bench_convergence.py --data-root DIR [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "convergence"
CONFIGS = {name: REPO / "configs" / "table1a-mnist-cpu" / f"{name}.yaml" for name in ("fgsm", "fast", "free", "l2-pgd")}
CELLS = ("adv-training", "lipschitz-adv-training", "denoise-adv-training")  # Table 1(a) slugs
FAMILIES = (*CONFIGS, *CELLS)  # the order they run in: cheap ones first
MIN_ACCURACY, ADV_MIN_ROBUSTNESS, MAX_SPREAD = 0.90, 0.60, 0.10


def tradeoff(*args: str) -> int:
    """``python -m tradeoff ARGS`` in a child process (the same interpreter, one thread)."""
    command = [sys.executable, "-m", "tradeoff", *args]
    print("$ " + " ".join(command), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(command, env=env).returncode


def config_runs(family: str, seeds: int, out: Path, data_root: str | None, run: bool) -> list[Path]:
    folders = []
    for seed in range(seeds):
        folder = out / "runs" / f"{family}-s{seed}"
        if run and not (folder / "metrics.json").is_file():
            tradeoff("run", str(CONFIGS[family]), "--set", f"seed={seed}", "--set", f"name={folder.name}",
                     "--out", str(folder.parent), "--quiet", *(["--data-root", data_root] if data_root else []))
        folders.append(folder)
    return folders


def cell_runs(cell: str, seeds: int, out: Path, data_root: str | None, run: bool) -> list[Path]:
    sweep = out / "sweep"
    if run:
        tradeoff("sweep", "table1a", "--preset", "cpu", "--datasets", "mnist", "--cells", cell,
                 "--seeds", str(seeds), "--out", str(sweep), *(["--data-root", data_root] if data_root else []))
    manifest = sweep / "sweep-table1a-cpu.json"
    cells = json.loads(manifest.read_text())["cells"] if manifest.is_file() else []
    names = {c["seed"]: c["run"] for c in cells if c["dataset"] == "mnist" and c["slug"] == cell and c.get("run")}
    return [sweep / names.get(seed, f"missing-{cell}-s{seed}") for seed in range(seeds)]


def describe_attack(a: dict) -> str:
    restarts = a.get("restarts", 1)
    if a["steps"] == 1 and not a.get("random_start", True):
        return f"{a['norm']} FGSM eps {a['eps']}"
    return (f"{a['norm']} PGD-{a['steps']} eps {a['eps']} step {a['step_size']}"
            f"{'' if a.get('random_start', True) else ' no random start'}, {restarts} restart{'s' * (restarts != 1)}")


def read_row(family: str, seed: int, folder: Path) -> dict:
    row = {"family": family, "seed": seed, "run": folder.name}
    if not (folder / "metrics.json").is_file():
        return {**row, "missing": True}
    m = json.loads((folder / "metrics.json").read_text())
    spec = yaml.safe_load((folder / "spec.yaml").read_text())
    return {**row, "missing": False, "accuracy": m["accuracy"], "robustness": m["adversarial_robustness"],
            "backdoor_success_rate": m["backdoor_success_rate"], "collapsed": bool(m.get("collapsed", False)),
            "train_seconds": m["train_seconds"], "eval_seconds": m["eval_seconds"],
            "eval_attack": describe_attack(spec["eval"]["attack"]),
            "eps_ramp": spec["adversarial_defense"].get("eps_ramp", 0.0)}


def judge(family: str, rows: list[dict], seeds: int) -> dict:
    done = [r for r in rows if not r["missing"]]
    verdict = {"family": family, "seeds": len(done), "seeds_wanted": seeds}
    if not done:
        return {**verdict, "passed": False, "why": "no finished runs"}
    for key in ("accuracy", "robustness", "backdoor_success_rate", "train_seconds"):
        values = [r[key] for r in done]
        verdict[key] = {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                        "min": min(values), "max": max(values)}
    median = statistics.median(r["robustness"] for r in done)
    why = []
    if len(done) < seeds:
        why.append(f"{seeds - len(done)} seed(s) missing")
    why += [f"s{r['seed']} accuracy {100 * r['accuracy']:.1f}% < {100 * MIN_ACCURACY:.0f}%"
            for r in done if r["accuracy"] < MIN_ACCURACY]
    if family == "adv-training":
        criterion = f"every seed: accuracy >= {100 * MIN_ACCURACY:.0f}%, robustness >= {100 * ADV_MIN_ROBUSTNESS:.0f}%"
        why += [f"s{r['seed']} robustness {100 * r['robustness']:.1f}% < {100 * ADV_MIN_ROBUSTNESS:.0f}%"
                for r in done if r["robustness"] < ADV_MIN_ROBUSTNESS]
    else:
        criterion = (f"every seed: accuracy >= {100 * MIN_ACCURACY:.0f}%, robustness within "
                     f"{100 * MAX_SPREAD:.0f} points of the median ({100 * median:.1f}%)")
        why += [f"s{r['seed']} robustness {100 * r['robustness']:.1f}% is {100 * abs(r['robustness'] - median):.1f} "
                f"points from the median" for r in done if abs(r["robustness"] - median) > MAX_SPREAD + 1e-9]
    return {**verdict, "median_robustness": median, "criterion": criterion, "passed": not why, "why": "; ".join(why)}


def markdown(rows: list[dict], verdicts: list[dict]) -> str:
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    lines = ["| family | seed | clean acc % | robustness % | backdoor success % | collapsed | train s | eval attack |",
             "|---|---:|---:|---:|---:|---|---:|---|"]
    for r in rows:
        if r["missing"]:
            lines.append(f"| {r['family']} | {r['seed']} | - | - | - | (not run) | - | |")
        else:
            lines.append(f"| {r['family']} | {r['seed']} | {pct(r['accuracy'])} | {pct(r['robustness'])} | "
                         f"{pct(r['backdoor_success_rate'])} | {'YES' if r['collapsed'] else 'no'} | "
                         f"{r['train_seconds']:.0f} | {r['eval_attack']} |")
    lines += ["", "| family | seeds | clean acc % mean ± std (min) | robustness % mean ± std (min) | "
                  "backdoor % mean ± std | train s mean | criterion | result |", "|---|---:|---|---|---|---:|---|---|"]
    for v in verdicts:
        if v["seeds"] == 0:
            lines.append(f"| {v['family']} | 0/{v['seeds_wanted']} | | | | | | FAIL ({v['why']}) |")
            continue
        a, rob, b = v["accuracy"], v["robustness"], v["backdoor_success_rate"]
        lines.append(f"| {v['family']} | {v['seeds']}/{v['seeds_wanted']} | {pct(a['mean'])} ± {pct(a['std'])} "
                     f"({pct(a['min'])}) | {pct(rob['mean'])} ± {pct(rob['std'])} ({pct(rob['min'])}) | "
                     f"{pct(b['mean'])} ± {pct(b['std'])} | {v['train_seconds']['mean']:.0f} | {v['criterion']} | "
                     f"{'pass' if v['passed'] else 'FAIL: ' + v['why']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", help="folder holding mnist/ (default: $TRADEOFF_DATA)")
    parser.add_argument("--out", default="/tmp/tradeoff-bench-convergence", help="run folders (default: %(default)s)")
    parser.add_argument("--results", default=str(RESULTS), help="where the Markdown and JSON go (default: %(default)s)")
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES), help="run only these")
    parser.add_argument("--seeds-adv", type=int, default=5, help="seeds of adv-training (default: 5)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of every other family (default: 3)")
    parser.add_argument("--report-only", action="store_true", help="run nothing; tabulate the finished runs")
    args = parser.parse_args()

    out, start = Path(args.out), time.perf_counter()
    rows, verdicts = [], []
    for family in [f for f in FAMILIES if f in args.families]:
        seeds = args.seeds_adv if family == "adv-training" else args.seeds
        runs = config_runs if family in CONFIGS else cell_runs
        folders = runs(family, seeds, out, args.data_root, run=not args.report_only)
        family_rows = [read_row(family, seed, folder) for seed, folder in enumerate(folders)]
        verdicts.append(judge(family, family_rows, seeds))
        rows += family_rows
        print(f"{family}: {'pass' if verdicts[-1]['passed'] else 'FAIL ' + verdicts[-1]['why']}", flush=True)

    table = markdown(rows, verdicts)
    print("\n" + table)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / "convergence.md").write_text("# Convergence of adversarial training at the cpu preset (MNIST)\n\n"
                                            + table)
    (results / "convergence.json").write_text(json.dumps(
        {"rows": rows, "families": verdicts, "script_seconds": round(time.perf_counter() - start, 1),
         "run_seconds": round(sum(r.get("train_seconds", 0) + r.get("eval_seconds", 0) for r in rows), 1)},
        indent=1) + "\n")
    print(f"written to {results}/convergence.md and convergence.json")
    return 0 if all(v["passed"] for v in verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
