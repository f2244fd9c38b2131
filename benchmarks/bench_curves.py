"""What learning curves cost on the quickstart's specs (digits, offline): the training time with
curves off, against the code before curves existed (``--before SRC``, a checkout's ``src``), and
the seconds per curve point with curves on.

Each measurement is one fresh process running the quickstart's standard spec (the cheapest steps,
where a per-step overhead shows most) for ``--steps`` steps; the rounds alternate between the two
code versions so that a busy machine's drift falls on both. Then the quickstart's PGD spec runs
with a point every ``--every-steps`` steps (on ``eval.curve_images``, 500, capped by the digits
test split's 360 images; with the spec's evaluation PGD).

    OMP_NUM_THREADS=1 python benchmarks/bench_curves.py --before /path/to/old/src [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN = """import json, sys
from tradeoff.config.build import spec_from_dict
from tradeoff.pipeline.experiment import run_experiment
from tradeoff.sweeps.quickstart import quickstart_specs
spec = quickstart_specs(0)[int(sys.argv[1])].to_dict()
spec["train"]["steps"] = int(sys.argv[2])
if int(sys.argv[3]):
    spec["eval"]["every_steps"] = int(sys.argv[3])
run = run_experiment(spec_from_dict(spec), sys.argv[4], show_progress=False)
print(json.dumps(run.metrics))
"""


def measure(src: Path, which: int, steps: int, every: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run([sys.executable, "-c", RUN, str(which), str(steps), str(every), out], env=env,
                              capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="src folder of the code before learning curves (omit: no comparison)")
    parser.add_argument("--steps", type=int, default=300, help="training steps per measurement (default: 300)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default: 3)")
    parser.add_argument("--every-steps", type=int, default=50, help="the curve's cadence (default: 50)")
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args()

    here = REPO / "src"
    off, before = [], []
    for _ in range(args.rounds):
        off.append(measure(here, 0, args.steps, 0)["train_seconds"] / args.steps)
        if args.before:
            before.append(measure(Path(args.before), 0, args.steps, 0)["train_seconds"] / args.steps)
    on = measure(here, 1, args.steps, args.every_steps)
    points = len(range(0, args.steps + 1, args.every_steps)) + (args.steps % args.every_steps != 0)  # 0, K, ..., last
    result = {
        "steps": args.steps, "rounds": args.rounds, "threads": os.environ.get("OMP_NUM_THREADS"),
        "standard_seconds_per_step_curves_off": [round(s, 5) for s in off],
        "standard_seconds_per_step_before_curves": [round(s, 5) for s in before],
        "overhead_percent_of_medians": (round(100 * (statistics.median(off) / statistics.median(before) - 1), 1)
                                        if before else None),
        "pgd_every_steps": args.every_steps, "pgd_points": points,
        "pgd_train_seconds": on["train_seconds"], "pgd_curve_seconds": on["curve_seconds"],
        "pgd_seconds_per_point": round(on["curve_seconds"] / points, 3),
        "pgd_final_eval_seconds_360_images": on["eval_seconds"],
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
