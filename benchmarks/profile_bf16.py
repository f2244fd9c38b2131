"""Where the time of PGD training goes at bf16 and at fp32 on a CPU (torch.profiler).

The mnist-cpu PGD cell (``configs/mnist-cpu/pgd.yaml``: small-cnn, batch 100, PGD-10 at eps 0.3
with the eps ramp, 100% adversarial batches) trained for ``--steps`` optimiser steps at each
precision, under the profiler, after a few unprofiled warm-up steps. Printed per precision: the
wall time, the share spent crafting (the attack) and on the training step itself, the time in
autocast's casts (``aten::to`` / ``_to_copy`` / ``copy_``) and in memory-format reorders, and the
operators with the most self time; then the operators side by side, bf16 against fp32, so that
what bf16 does not speed up (or slows down) stands out. Run it on quiet cores: the numbers are
only worth anything when nothing else competes for them.

    OMP_NUM_THREADS=1 python benchmarks/profile_bf16.py --data-root /work/shared/datasets [--steps 100]
        [--channels-last] [--json out.json] [--trace-dir traces/]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from tradeoff.adversarial_defenses import make_objective
from tradeoff.config.build import load_spec
from tradeoff.config.resolve import resolve
from tradeoff.core.device import pick_device, seed_everything
from tradeoff.models import model_for
from tradeoff.pipeline.experiment import prepare
from tradeoff.training.loop import train_model

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mnist-cpu" / "pgd.yaml"
CASTS = ("aten::to", "aten::_to_copy", "aten::copy_")
REORDERS = ("aten::contiguous", "aten::clone", "aten::to_mkldnn", "aten::to_dense", "mkldnn_reorder")
STAGES = ("attack (crafting)", "training loss")


def spec_at(args, precision: str):
    sets = [f"train.precision={precision}", f"train.channels_last={str(args.channels_last).lower()}",
            "eval.adversarial=false", "train.device=cpu"]
    if args.data_root:
        sets.append(f"data.root={args.data_root}")
    if args.train_images:
        sets.append(f"data.train_subset={args.train_images}")
    return resolve(load_spec(CONFIG, sets))


def labelled(fn, name: str):
    def call(*a, **k):
        with record_function(name):
            return fn(*a, **k)
    return call


def train(spec, data, steps: int) -> None:
    """``steps`` optimiser steps of the spec's objective from a fresh seeded model, with the
    attack and the whole loss labelled in the profile."""
    seed_everything(spec.seed)
    model = model_for(spec, data.shape, data.num_classes, torch.device("cpu"))
    objective = make_objective(spec)
    objective.inputs = labelled(objective.inputs, STAGES[0])
    objective.loss = labelled(objective.loss, STAGES[1])
    spec.train.steps = steps
    batches = data.train.batches(spec.train.batch_size, spec.seed, "cpu", augment=spec.data.augment,
                                 flip=spec.data.augment_flip)
    train_model(model, batches, objective, spec.train, torch.device("cpu"), log=lambda m: None, show_progress=False)


def summarise(prof, wall: float) -> dict:
    events = prof.key_averages()
    self_us = {e.key: e.self_cpu_time_total for e in events}
    total_us = {e.key: e.cpu_time_total for e in events}
    ops = sorted(((k, v) for k, v in self_us.items() if not k.startswith(STAGES) and k != "ProfilerStep*"),
                 key=lambda kv: -kv[1])
    return {"wall_seconds": wall,
            "stage_seconds": {s: total_us.get(s, 0) / 1e6 for s in STAGES},
            "cast_seconds": sum(self_us.get(k, 0) for k in CASTS) / 1e6,
            "reorder_seconds": sum(v for k, v in self_us.items() if k.startswith(REORDERS)) / 1e6,
            "ops_self_seconds": {k: v / 1e6 for k, v in ops},
            "ops_calls": {e.key: e.count for e in events}}


def report(name: str, s: dict, top: int) -> None:
    attack, loss = (s["stage_seconds"][k] for k in STAGES)
    print(f"\n== {name}: {s['wall_seconds']:.2f} s wall; attack {attack:.2f} s, whole loss (attack + final "
          f"forward) {loss:.2f} s, rest (backward, optimiser, batches) {s['wall_seconds'] - loss:.2f} s; "
          f"casts {s['cast_seconds']:.2f} s, reorders/copies {s['reorder_seconds']:.2f} s")
    for k, v in list(s["ops_self_seconds"].items())[:top]:
        print(f"   {v:8.3f} s  {100 * v / s['wall_seconds']:5.1f}%  {s['ops_calls'].get(k, 0):7d} calls  {k}")


def side_by_side(bf16: dict, fp32: dict, top: int) -> None:
    print(f"\n== operators, bf16 vs fp32 (self seconds; ratio fp32/bf16 > 1: bf16 faster), wall "
          f"{fp32['wall_seconds'] / bf16['wall_seconds']:.2f}x")
    names = sorted(set(bf16["ops_self_seconds"]) | set(fp32["ops_self_seconds"]),
                   key=lambda k: -max(bf16["ops_self_seconds"].get(k, 0), fp32["ops_self_seconds"].get(k, 0)))
    for k in names[:top]:
        b, f = bf16["ops_self_seconds"].get(k, 0.0), fp32["ops_self_seconds"].get(k, 0.0)
        ratio = f"{f / b:5.2f}" if b > 0 else "  n/a"
        print(f"   bf16 {b:8.3f} s  fp32 {f:8.3f} s  {ratio}  {k}")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", default=None)
    p.add_argument("--steps", type=int, default=100, help="profiled optimiser steps per precision")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--train-images", type=int, default=None, help="a smaller training subset (tiny checks)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--json", default=None)
    p.add_argument("--trace-dir", default=None, help="Chrome traces of each precision here")
    args = p.parse_args(argv)
    pick_device("cpu")
    results = {}
    for precision in ("bf16", "fp32"):
        spec = spec_at(args, precision)
        data = prepare(spec, torch.device("cpu"))
        train(spec, data, args.warmup)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            train(spec_at(args, precision), data, args.steps)
            wall = time.perf_counter() - start
        if args.trace_dir:
            Path(args.trace_dir).mkdir(parents=True, exist_ok=True)
            prof.export_chrome_trace(str(Path(args.trace_dir) / f"pgd-{precision}.json"))
        results[precision] = summarise(prof, wall)
        report(precision, results[precision], args.top)
    side_by_side(results["bf16"], results["fp32"], args.top)
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} thread(s), channels_last {args.channels_last}, "
          f"{args.steps} steps; bf16 is {results['fp32']['wall_seconds'] / results['bf16']['wall_seconds']:.2f}x fp32 "
          "(profiler overhead included; time without it with tradeoff run)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1, default=str))
    return results


if __name__ == "__main__":
    main()
