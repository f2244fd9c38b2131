"""Cost of IBP certified training per epoch, relative to standard and PGD training.

Times optimiser steps of each objective on the same model and synthetic batches of the
dataset's shape (the data do not change the cost), after a few untimed warm-up steps. IBP is
timed after its ramp (verified loss on) and during it with the warm-up regularisers on, PGD with
the dataset's protocol attack (MNIST: 10 steps). Reports wall and process (CPU) time per step and
per epoch of ``--epoch-images``.

    OMP_NUM_THREADS=1 python benchmarks/bench_ibp_cost.py --model ibp-small --steps 20
"""

from __future__ import annotations

import argparse
import time

import torch

from tradeoff.adversarial_defenses import make_objective
from tradeoff.config.build import load_spec
from tradeoff.config.resolve import resolve
from tradeoff.models import build_model
from tradeoff.training.loop import make_optimizer

SHAPES = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32), "digits": (1, 16, 16)}


def time_objective(spec, shape, batch: int, steps: int, warmup: int, step_index: int) -> tuple[float, float]:
    torch.manual_seed(spec.seed)
    model = build_model(spec.model.name, shape, 10)
    model.train()
    objective = make_objective(spec)
    optimizer = make_optimizer(model, spec.train)
    x, y = torch.rand(batch, *shape), torch.randint(0, 10, (batch,))
    for i in range(warmup + steps):
        if i == warmup:
            wall, cpu = time.perf_counter(), time.process_time()
        loss, _, _ = objective.loss(model, x, y, step_index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


# (row, objective, its options): IBP with the full verified loss from the first step, and IBP
# half-way up a ramp with the warm-up regularisers on (the timed steps all run at step 10 of 20)
ROWS = (("none", "none", {}), ("pgd", "pgd", {}), ("ibp", "ibp", {"ibp_warmup_steps": 0, "ibp_ramp_steps": 1}),
        ("ibp+reg", "ibp", {"ibp_warmup_steps": 0, "ibp_ramp_steps": 20, "ibp_warmup_regularizer": 0.5}))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="mnist", choices=sorted(SHAPES))
    p.add_argument("--model", default="ibp-small")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--epoch-images", type=int, default=60000)
    args = p.parse_args(argv)
    shape = SHAPES[args.dataset]
    rows = []
    for name, objective, options in ROWS:
        spec = resolve(load_spec(None, {"data": {"dataset": args.dataset}, "model": {"name": args.model},
                                        "train": {"batch_size": args.batch},
                                        "adversarial_defense": {"objective": objective, **options}}))
        wall, cpu = time_objective(spec, shape, args.batch, args.steps, args.warmup, step_index=10)
        rows.append((name, wall, cpu))
    per_epoch = args.epoch_images / args.batch
    base_cpu = rows[0][2]
    print(f"{args.model} on {args.dataset}-shaped batches of {args.batch}, {args.steps} timed steps, "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"{'objective':<10}{'ms/step':>10}{'cpu ms/step':>13}{'s/epoch':>10}{'x standard (cpu)':>18}")
    for name, wall, cpu in rows:
        print(f"{name:<10}{1000 * wall:>10.1f}{1000 * cpu:>13.1f}{wall * per_epoch:>10.1f}"
              f"{cpu / base_cpu:>18.2f}")


if __name__ == "__main__":
    main()
