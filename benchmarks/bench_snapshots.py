"""What snapshots cost on the mnist-cpu PGD run: seconds and bytes per snapshot, the overhead in
percent of training at the default cadence and at a dense one, and the cost of resuming.

Runs ``configs/mnist-cpu/pgd.yaml`` for ``--epochs`` epochs with a snapshot every
``--every-steps`` steps (the real training loop and run folder), reads each write's time and size
from the run's log, then kills nothing: the resume cost is the time to find and read the newest
snapshot and load it into a fresh model and optimiser, timed ``--repeats`` times.

    OMP_NUM_THREADS=1 python benchmarks/bench_snapshots.py --data-root DIR [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tradeoff.config.build import load_spec
from tradeoff.models import model_for
from tradeoff.pipeline.experiment import run_experiment
from tradeoff.training import snapshots
from tradeoff.training.loop import make_optimizer

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(r"snapshot at step (\d+): \S+ \(([\d.]+) MB in ([\d.]+) s\)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", help="folder holding mnist/ (default: $TRADEOFF_DATA)")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (default: 2)")
    parser.add_argument("--every-steps", type=int, default=10, help="the dense cadence (default: 10)")
    parser.add_argument("--repeats", type=int, default=10, help="timed resume loads (default: 10)")
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args()

    overrides = [f"train.epochs={args.epochs}", f"snapshots.every_steps={args.every_steps}",
                 "snapshots.every_minutes=0", "snapshots.keep=1000"]
    overrides += [f"data.root={args.data_root}"] if args.data_root else []
    spec = load_spec(REPO / "configs" / "mnist-cpu" / "pgd.yaml", overrides)
    with tempfile.TemporaryDirectory() as tmp:
        # A finished run deletes its snapshots; each write's step, size and time stay in its log.
        run = run_experiment(spec, tmp, show_progress=False)
        log = (run.run_dir / "log.txt").read_text()
        writes = [(int(s), float(mb), float(sec)) for s, mb, sec in LINE.findall(log)]
        train_seconds = run.metrics["train_seconds"]
        steps = run.metrics["train_steps"]

        # Resume cost: write one snapshot of this run's state (Adam's moments filled by a step),
        # then time finding, reading and loading it into a fresh model and optimiser.
        spec, model = run.spec, run.model
        optimizer = make_optimizer(model, spec.train)
        model(torch.zeros(2, *run.data.shape)).sum().backward()
        optimizer.step()
        state = snapshots.TrainState(step=steps, epoch=args.epochs, batch_in_epoch=0, seconds=train_seconds,
                                     history=[], epoch_sums=[[0.0, 0.0, 0]], model=model.state_dict(),
                                     optimizer=optimizer.state_dict(), scaler={}, objective=[{}],
                                     rng=[snapshots.capture_rng({})])
        folder = Path(tmp) / "resume" / snapshots.FOLDER
        folder.mkdir(parents=True)
        snapshots.write(folder / snapshots.snapshot_name(steps), state, spec.digest())
        loads = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            back, _ = snapshots.latest(folder.parent, spec.digest(), print)
            fresh = model_for(spec, run.data.shape, run.data.num_classes, torch.device("cpu"))
            fresh.load_state_dict(back.model)
            make_optimizer(fresh, spec.train).load_state_dict(back.optimizer)
            loads.append(time.perf_counter() - start)

    per_write = [sec for _, _, sec in writes]
    mid = [w for w in writes if w[0] < steps]  # the end-of-training snapshot is written at any cadence
    result = {
        "spec": "configs/mnist-cpu/pgd.yaml", "epochs": args.epochs, "train_steps": steps,
        "train_seconds": train_seconds, "every_steps": args.every_steps, "snapshots_written": len(writes),
        "snapshot_mb": statistics.mean(mb for _, mb, _ in writes),
        "seconds_per_snapshot": {"mean": statistics.mean(per_write), "max": max(per_write)},
        "dense_overhead_percent": 100 * sum(sec for _, _, sec in mid) / train_seconds,
        "default_overhead_percent_per_10_minutes": 100 * statistics.mean(per_write) / 600,
        "resume_seconds": {"mean": statistics.mean(loads), "max": max(loads)},
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
