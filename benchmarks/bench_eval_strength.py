"""Is the evaluation attack strong enough? Our robustness beside AutoAttack's on the same images.

For each model kind: the quickstart's PGD model and, at the cpu preset on MNIST, every
adversarially trained cell kind: Table 1(a)'s PGD cell, beyond-training's TRADES and MART cells,
Table 1(b)'s IBP cell, beyond-spatial's spatial and composite cells (and Table 1(a)'s PGD cell at
the smoke preset, only reported). A sweep cell's kind is named ``TABLE-DATASET-CELL-PRESET``; with
``--seeds N`` each kind is measured on seeds 0..N-1. Each model is loaded from its finished run
folder in ``--sweep`` (or ``--runs NAME=FOLDER``), or trained there first if there is none
(``tradeoff sweep TABLE --cells CELL --seeds N``), then evaluated on the same seeded subset of its
test images (the subset ``eval.autoattack`` takes) under:

- ``ours``: the evaluation attack the current code gives that cell (the quickstart's spec, the
  preset's cell), which is what its reported robustness uses;
- ``before``: the evaluation attack written in the run folder's spec.yaml, when it differs;
- ``autoattack``: AutoAttack (pyautoattack, version standard) with APGD-CE + APGD-T, the
  gradient attacks of the standard version (FAB-T and Square are left out: on these models they
  are the costly part and rarely add a point), at the evaluation attack's norm and eps;
- ``--attack steps=50,restarts=2,loss=margin,...``: candidate attacks, for choosing one;
- for cells that measure spatial robustness: the cell's grid beside a denser grid of the same
  range (``DENSE_GRID``), whose worst case the cell's grid should come within the same 2 points of.

The gap is ours minus the reference in points; the criterion is a gap of at most 2 points on every
checked model (the quickstart and every cpu kind; the smoke cell's 2-step attack is for tests and
only reported). Writes eval-strength.md and eval-strength.json.

    OMP_NUM_THREADS=1 python benchmarks/bench_eval_strength.py --data-root DIR --seeds 3 \
        --sweep SWEEP_FOLDER [--models KIND ...] [--results DIR]

Kinds measured apart (one process per core, each with its own ``--results``) make one table with
``--merge A/eval-strength.json B/eval-strength.json --results DIR``. A run writes its rows into
``--results`` after every model; stopped, the same command again keeps those and measures the rest
(models trained in ``--sweep`` are reused; AutoAttack's results are cached there too).
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

from tradeoff.attacks.autoattack import run_autoattack
from tradeoff.attacks.pgd import describe, perturb
from tradeoff.attacks.spatial import spatial_attack
from tradeoff.config.resolve import resolve
from tradeoff.core.spec import AttackSpec, AutoAttackSpec, SpatialSpec
from tradeoff.pipeline.defend import load_trained_run
from tradeoff.records.folders import write_text_atomic
from tradeoff.sweeps import grids
from tradeoff.sweeps.quickstart import quickstart_specs

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "eval-strength"
AUTOATTACK = AutoAttackSpec(version="standard", attacks=["apgd-ce", "apgd-t"])
MAX_GAP = 0.02
MODELS = {"quickstart": 400, "table1a-mnist-adv-training-cpu": 1000, "beyond-training-mnist-trades-cpu": 1000,
          "beyond-training-mnist-mart-cpu": 1000, "table1b-mnist-rate5-ibp-cpu": 1000,
          "beyond-spatial-mnist-sticker-spatial-cpu": 1000, "beyond-spatial-mnist-sticker-composite-cpu": 1000,
          "table1a-mnist-adv-training-smoke": 100}
# the models the criterion applies to: the smoke cell's 2-step attack is only reported
CHECKED = tuple(k for k in MODELS if not k.endswith("-smoke"))
DENSE_GRID = {"rotations": 61, "translations": 7}  # the spatial reference: 7 x 7 x 61 transformations


def tradeoff(*args: str) -> int:
    """``python -m tradeoff ARGS`` in a child process (the same interpreter, one thread)."""
    command = [sys.executable, "-m", "tradeoff", *args]
    print("$ " + " ".join(command), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(command, env=env).returncode


def finished(folder: Path) -> bool:
    return (folder / "metrics.json").is_file() and (folder / "model.safetensors").is_file()


def find_or_train(kind: str, seed: int, sweep: Path, seeds: int, data_root: str | None) -> Path:
    """A finished run folder of ``kind`` at ``seed`` in ``sweep``, trained first (all ``seeds``)
    if there is none."""
    if kind == "quickstart":
        folder = sweep / "quickstart" / "pgd"
        if not finished(folder):
            tradeoff("quickstart", "--out", str(folder.parent), "--quiet")
        return folder
    table, dataset, cell, preset = sweep_cell(kind)
    pattern = f"{table}-{dataset}-{cell}-s{seed}-*"
    found = sorted(p for p in sweep.glob(pattern) if finished(p))
    if not found:
        tradeoff("sweep", table, "--preset", preset, "--datasets", dataset, "--cells", cell, "--seeds", str(seeds),
                 "--out", str(sweep), *(["--data-root", data_root] if data_root else []))
        found = sorted(p for p in sweep.glob(pattern) if finished(p))
    if not found:
        raise SystemExit(f"no finished run of {kind} seed {seed} in {sweep}")
    return found[-1]


def sweep_cell(kind: str) -> tuple[str, str, str, str]:
    """``beyond-training-mnist-trades-cpu`` -> (table, dataset, cell slug, preset)."""
    table = max((t for t in grids.table_ids() if kind.startswith(t + "-")), key=len)
    dataset, rest = kind[len(table) + 1:].split("-", 1)
    cell, preset = rest.rsplit("-", 1)
    return table, dataset, cell, preset


def current_eval(kind: str):
    """The evaluation section the current code gives the model kind (resolved)."""
    if kind == "quickstart":
        return resolve(next(s for s in quickstart_specs() if s.name == "pgd")).eval
    table, dataset, cell, preset = sweep_cell(kind)
    grid = grids.expand(grids.load_table(table), preset, seeds=1, datasets=[dataset], only=[cell])
    return grid.cells[0].spec.eval


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


def measure(kind: str, seed: int, folder: Path, images: int, data_root: str | None, candidates: list[str],
            skip_autoattack: bool, cache: Path) -> dict:
    run = load_trained_run(folder, data_root)
    subset = run.data.test.subset(images, run.spec.seed)
    batches = list(subset.loader(500, device=run.device))
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    with torch.no_grad():
        clean = torch.cat([run.model(xb).argmax(1) == yb for xb, yb in zip(x.split(500), y.split(500))])
    evaluation = current_eval(kind)
    ours = evaluation.attack
    attacks = {"ours": ours}
    if run.spec.eval.attack != ours:
        attacks["before"] = run.spec.eval.attack
    for text in candidates:
        attacks[f"candidate {text}"] = candidate(text, ours)
    row = {"model": kind, "seed": seed, "run": str(folder), "dataset": run.spec.data.dataset, "images": len(y),
           "norm": ours.norm, "eps": ours.eps, "clean_accuracy": clean.float().mean().item(), "attacks": {}}
    flags = {}
    for label, a in attacks.items():
        robust, seconds = robust_under(run.model, x, y, a, 500)
        flags[label] = robust
        row["attacks"][label] = {"attack": describe(a), "spec": dataclasses.asdict(a),
                                 "robustness": robust.float().mean().item(), "seconds": round(seconds, 1)}
        print(f"{kind} s{seed}: {label}: {describe(a)}: {100 * robust.float().mean():.1f}% ({seconds:.0f} s)",
              flush=True)
    if not skip_autoattack:
        aa, aa_seconds = autoattack_flags(run, x, y, ours, cache)
        row["autoattack"] = {"attacks": "APGD-CE + APGD-T (version standard)", "robustness": aa.float().mean().item(),
                             "seconds": round(aa_seconds, 1)}
        print(f"{kind} s{seed}: AutoAttack APGD-CE + APGD-T: {100 * aa.float().mean():.1f}% ({aa_seconds:.0f} s)",
              flush=True)
        for label, robust in flags.items():
            entry = row["attacks"][label]
            entry["gap_points"] = round(100 * (entry["robustness"] - row["autoattack"]["robustness"]), 2)
            entry["missed_by_ours"] = int((robust & ~aa.to(robust.device)).sum())  # AutoAttack breaks, ours not
    if evaluation.spatial is not None:
        row["spatial"] = spatial_check(run.model, x, y, evaluation.spatial)
        print(f"{kind} s{seed}: spatial grid {row['spatial']['grid']}: {100 * row['spatial']['robustness']:.1f}%, "
              f"dense grid {row['spatial']['dense_grid']}: {100 * row['spatial']['dense_robustness']:.1f}%", flush=True)
    return row


def spatial_check(model, x: torch.Tensor, y: torch.Tensor, grid: SpatialSpec, batch_size: int = 100) -> dict:
    """Spatial robustness on the cell's grid and on the denser grid of the same range, same images."""
    dense = dataclasses.replace(grid, **DENSE_GRID)
    out = {}
    for label, s in (("", grid), ("dense_", dense)):
        start = time.perf_counter()
        robust = torch.cat([spatial_attack(model, xb, yb, s)[1] for xb, yb in zip(x.split(batch_size),
                                                                                  y.split(batch_size))])
        out[f"{label}grid"] = f"{s.translations} x {s.translations} x {s.rotations}"
        out[f"{label}robustness"] = robust.float().mean().item()
        out[f"{label}seconds"] = round(time.perf_counter() - start, 1)
    out["gap_points"] = round(100 * (out["robustness"] - out["dense_robustness"]), 2)
    return out


def markdown(rows: list[dict]) -> str:
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    lines = ["| model | seed | images | eps | clean % | attack | which | robustness % | AutoAttack % | gap (points) "
             "| ours s | AutoAttack s |", "|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        aa = r.get("autoattack")
        for label, e in r["attacks"].items():
            lines.append(f"| {r['model']} | {r['seed']} | {r['images']} | {r['eps']:g} | {pct(r['clean_accuracy'])} | "
                         f"{e['attack']} | {label} | {pct(e['robustness'])} | {pct(aa['robustness']) if aa else '-'} | "
                         f"{e.get('gap_points', '-')} | {e['seconds']:.0f} | {aa['seconds'] if aa else '-'} |")
    spatial = [r for r in rows if "spatial" in r]
    if spatial:
        lines += ["", "Spatial robustness: the cell's grid beside a denser grid over the same range, same images.", "",
                  "| model | seed | grid | robustness % | dense grid | robustness % | gap (points) | s | dense s |",
                  "|---|---:|---|---:|---|---:|---:|---:|---:|"]
        for r in spatial:
            c = r["spatial"]
            lines.append(f"| {r['model']} | {r['seed']} | {c['grid']} | {pct(c['robustness'])} | {c['dense_grid']} | "
                         f"{pct(c['dense_robustness'])} | {c['gap_points']} | {c['seconds']:.0f} | "
                         f"{c['dense_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def gaps_by_kind(rows: list[dict]) -> str:
    """Per model kind: the seeds, the mean and largest gap of ours to AutoAttack (and of the
    spatial grid to the dense grid)."""
    lines = ["| model | seeds | ours - AutoAttack, mean (points) | largest | spatial grid - dense, largest |",
             "|---|---:|---:|---:|---:|"]
    for kind in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == kind]
        gaps = [r["attacks"]["ours"]["gap_points"] for r in mine if "gap_points" in r["attacks"]["ours"]]
        spatial = [r["spatial"]["gap_points"] for r in mine if "spatial" in r]
        lines.append(f"| {kind} | {len(mine)} | {sum(gaps) / len(gaps):.2f} | {max(gaps):.2f} | "
                     f"{max(spatial) if spatial else '-'} |" if gaps else f"| {kind} | {len(mine)} | - | - | - |")
    return "\n".join(lines) + "\n"


def failures(rows: list[dict]) -> list[str]:
    """``KIND sSEED`` of each checked model whose attack (or spatial grid) is off by over MAX_GAP."""
    out = []
    for r in rows:
        if r["model"] not in CHECKED:
            continue
        gap = r["attacks"]["ours"].get("gap_points", 0)
        spatial_gap = r.get("spatial", {}).get("gap_points", 0)
        if max(gap, spatial_gap) > 100 * MAX_GAP:
            out.append(f"{r['model']} s{r['seed']}")
    return out


def measure_all(args, sweep: Path, earlier: list[dict], keep) -> list[dict]:
    """A row per model and seed; those in ``earlier`` (a stopped run's) are kept, not measured again,
    and ``keep(rows)`` is called after each new one."""
    given = dict(item.split("=", 1) for item in args.runs)
    images = {**MODELS, **{k: int(v) for k, v in (item.split("=", 1) for item in args.images)}}
    done = {(r["model"], r["seed"]): r for r in earlier}
    rows = []
    for kind in args.models:
        for seed in range(1 if kind == "quickstart" else args.seeds):
            if (kind, seed) in done:
                rows.append(done[kind, seed])
                continue
            folder = (Path(given[kind]) if kind in given and seed == 0
                      else find_or_train(kind, seed, sweep, args.seeds, args.data_root))
            rows.append(measure(kind, seed, folder, images[kind], args.data_root, args.attack, args.no_autoattack,
                                sweep / "autoattack-cache"))
            keep(rows)
    return rows


def partial_rows(results: Path) -> list[dict]:
    """The rows a stopped run left in ``results`` (none when it finished or never ran)."""
    file = results / "eval-strength.json"
    if not file.is_file():
        return []
    saved = json.loads(file.read_text())
    return saved["rows"] if saved.get("partial") else []


def merged_rows(files: list[str]) -> tuple[list[dict], list[str]]:
    """The rows of earlier runs, in the order of MODELS, then seed; and each file's command (its
    path where it records none)."""
    runs = [(f, json.loads(Path(f).read_text())) for f in files]
    rows = [row for _, run in runs for row in run["rows"]]
    order = list(MODELS)
    rows.sort(key=lambda r: (order.index(r["model"]) if r["model"] in order else len(order), r["seed"]))
    return rows, [run.get("command", f) for f, run in runs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", help="folder holding mnist/ (default: $TRADEOFF_DATA)")
    parser.add_argument("--sweep", default="/tmp/tradeoff-bench-eval-strength",
                        help="the sweep folder holding (or to get) the run folders (default: %(default)s)")
    parser.add_argument("--results", default=str(RESULTS), help="where the Markdown and JSON go (default: %(default)s)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="only these kinds")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 of each sweep kind (default: 1)")
    parser.add_argument("--runs", nargs="*", default=[], metavar="KIND=FOLDER", help="a finished run folder to use "
                        "(seed 0)")
    parser.add_argument("--images", nargs="*", default=[], metavar="KIND=N", help="test images per kind "
                        f"(default: {', '.join(f'{k} {v}' for k, v in MODELS.items())})")
    parser.add_argument("--attack", action="append", default=[], metavar="KEY=VALUE,...",
                        help="a candidate evaluation attack, on top of ours (repeatable)")
    parser.add_argument("--no-autoattack", action="store_true", help="only our attacks (for exploring)")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="measure nothing: the tables of the rows of "
                        "earlier runs' eval-strength.json files (run apart, e.g. one process per core)")
    args = parser.parse_args()

    sweep, start = Path(args.sweep), time.perf_counter()
    command = " ".join(["python", *sys.argv])
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)

    def keep(rows: list[dict]) -> None:  # so that a stopped run resumes after its last measured model
        write_text_atomic(results / "eval-strength.json",
                          json.dumps({"rows": rows, "partial": True, "command": command}, indent=1) + "\n")

    if args.merge:
        rows, sources = merged_rows(args.merge)
    else:
        earlier = partial_rows(results)
        if earlier:
            print(f"{len(earlier)} model(s) measured by the stopped run in {results}: kept, not measured again")
        rows, sources = measure_all(args, sweep, earlier, keep), [command]

    table, summary = markdown(rows), gaps_by_kind(rows)
    print("\n" + summary + "\n" + table)
    failed = failures(rows)
    missing = [kind for kind in CHECKED if kind not in {r["model"] for r in rows}]
    (results / "eval-strength.md").write_text(
        "# The evaluation attack beside AutoAttack (APGD-CE + APGD-T), same models and images\n\n"
        f"Criterion: ours minus AutoAttack at most {100 * MAX_GAP:.0f} points on every checked model "
        f"({', '.join(CHECKED)}), and the spatial grid within as much of the dense grid. "
        f"1 thread per process. " + (f"Command: `{command}`; {time.perf_counter() - start:.0f} s in all.\n\n"
                                      if not args.merge else "The rows of: " + "; ".join(f"`{c}`" for c in sources)
                                      + ".\n\n")
        + ("Over the checked models measured here: " + (f"above the criterion: {', '.join(failed)}" if failed
                                                           else "all within")
           + (f"; not measured here: {', '.join(missing)}" if missing else "") + ".\n\n") + summary + "\n" + table)
    write_text_atomic(results / "eval-strength.json", json.dumps(
        {"rows": rows, "max_gap_points": 100 * MAX_GAP, "failed": failed, "command": command, "sources": sources,
         "script_seconds": round(time.perf_counter() - start, 1)}, indent=1) + "\n")
    print(f"written to {results}/eval-strength.md and eval-strength.json"
          + (f"; gap above {100 * MAX_GAP:.0f} points: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
