"""Fast and free adversarial training against PGD training on the CPU MNIST experiment.

Runs configs/mnist-cpu/pgd.yaml and configs/table1a-mnist-cpu/{fast,free}.yaml (small CNN, 5,000 MNIST training images, 20 epochs;
free training: 4 replays over 5 epochs), each evaluated with the same L-inf PGD (eps 0.3,
10 steps) on the full test set, and checks the claim of Wong et al. 2020 on this setting:
fast training reaches an adversarial robustness within 5 points of PGD training in at most a
third of its training time.

Training time is reported twice: wall-clock seconds (what a user waits; noisy on a shared
machine) and the process's CPU seconds during training (steadier when other jobs share the
cores; with OMP_NUM_THREADS=1 it is the single thread's work). The check uses CPU seconds.

    OMP_NUM_THREADS=1 python benchmarks/bench_fast_adversarial.py --data-root DIR [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tradeoff.config.build import load_spec
from tradeoff.pipeline import experiment

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CONFIG_FOLDERS = ("mnist-cpu", "table1a-mnist-cpu")


def config_path(root: Path, name: str) -> Path:
    """``name``.yaml from the first of CONFIG_FOLDERS under ``root`` that has it."""
    for folder in CONFIG_FOLDERS:
        if (root / folder / f"{name}.yaml").is_file():
            return root / folder / f"{name}.yaml"
    return root / f"{name}.yaml"


def timed_training(cpu_seconds: list):
    original = experiment.train_model

    def wrapper(*args, **kwargs):
        start = time.process_time()
        result = original(*args, **kwargs)
        cpu_seconds.append(time.process_time() - start)
        return result

    return original, wrapper


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", help="folder holding mnist/ (default: $TRADEOFF_DATA)")
    parser.add_argument("--out", default="runs/bench-fast-adversarial", help="run folders and results")
    parser.add_argument("--configs", default=str(CONFIGS), help="configs folder (holding mnist-cpu/ and table1a-mnist-cpu/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="spec override applied to every run (e.g. train.epochs=5 for a quick look)")
    parser.add_argument("--objectives", nargs="+", default=["pgd", "fast", "free"])
    args = parser.parse_args()

    overrides = args.overrides + ([f"data.root={args.data_root}"] if args.data_root else [])
    rows = []
    for name in args.objectives:
        spec = load_spec(config_path(Path(args.configs), name), overrides)
        cpu: list = []
        original, wrapper = timed_training(cpu)
        experiment.train_model = wrapper
        try:
            run = experiment.run_experiment(spec, args.out, show_progress=False)
        finally:
            experiment.train_model = original
        m = run.metrics
        rows.append({"objective": name, "adversarial_defense": m["adversarial_defense"], "accuracy": m["accuracy"],
                     "adversarial_robustness": m["adversarial_robustness"],
                     "backdoor_success_rate": m["backdoor_success_rate"], "train_steps": m["train_steps"],
                     "train_wall_s": m["train_seconds"], "train_cpu_s": round(cpu[0], 2)})
        print(f"{name}: done ({m['train_seconds']:.0f} s wall training)", flush=True)

    head = f"{'objective':10s} {'acc %':>7s} {'adv %':>7s} {'backdoor %':>10s} {'steps':>6s} {'wall s':>8s} {'cpu s':>8s}"
    print("\n" + head)
    for r in rows:
        print(f"{r['objective']:10s} {100 * r['accuracy']:7.1f} {100 * r['adversarial_robustness']:7.1f} "
              f"{100 * r['backdoor_success_rate']:10.1f} {r['train_steps']:6d} {r['train_wall_s']:8.1f} "
              f"{r['train_cpu_s']:8.1f}")
    by = {r["objective"]: r for r in rows}
    verdict = {}
    if "pgd" in by and "fast" in by:
        pgd, fast = by["pgd"], by["fast"]
        gap = 100 * (pgd["adversarial_robustness"] - fast["adversarial_robustness"])
        ratio = fast["train_cpu_s"] / pgd["train_cpu_s"]
        verdict = {"robustness_gap_points": round(gap, 2), "cpu_time_ratio": round(ratio, 3),
                   "wall_time_ratio": round(fast["train_wall_s"] / pgd["train_wall_s"], 3),
                   "claim_holds": bool(gap <= 5 and ratio <= 1 / 3)}
        print(f"\nfast vs PGD: robustness {gap:+.1f} points below, training CPU time x{ratio:.2f} "
              f"(wall x{verdict['wall_time_ratio']:.2f}); within 5 points in <= 1/3 of the time: "
              f"{'yes' if verdict['claim_holds'] else 'NO'}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "bench_fast_adversarial.json").write_text(json.dumps({"rows": rows, **verdict}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
