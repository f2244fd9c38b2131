"""What each cell of a table costs on one core, estimated from a short probe of the cell itself.

For each distinct cell of the tables at a preset (one seed), its own resolved spec runs through the
pipeline with two cuts: ``train.steps`` set to ``--probe-steps`` and the test set cut by the same
factor for every stage after training (``data.test_subset`` scaled from the cell's test images to
``--probe-test``). Everything else is the cell's: model, objective and its attack, trigger,
poisoning, evaluation attack, spatial grid, masking checks, saliency, backdoor defences. The
estimate is the probe's training seconds times the cell's steps / probe steps plus the probe's
post-training seconds over the test images times the cell's test images / probe test images,
plus the rest of the probe's wall time unscaled (loading and poisoning the data, which the probe
does as the cell does: label-consistent perturbations, Narcissus's trigger; backdoor defences,
which work on the held-out training images). Per-step and per-image
costs are what make a cell long (a spatial step is many clean steps; the spatial grid is 775
forward passes an image), and both scale linearly; the learning curve (``eval.every_steps``) is
not in the estimate and the cell is marked when it has one.

Run it on an idle machine, one thread a process, as a sweep's workers run:

    OMP_NUM_THREADS=1 python benchmarks/cell_cost.py beyond-spatial beyond-attacks --preset cpu \\
        --datasets mnist --data-root /work/shared/datasets [--markdown results/cell-cost/cpu-mnist.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

import torch

from tradeoff.data.loading import load_data
from tradeoff.pipeline.experiment import run_experiment
from tradeoff.records.names import TRAIN_STEPS
from tradeoff.sweeps import grids

from outputs import emit

PER_TEST_IMAGE = ("eval_seconds", "masking_seconds", "saliency_seconds", "autoattack_seconds")


@dataclasses.dataclass
class CellEstimate:
    label: str
    steps: int
    test_images: int
    train_seconds: float  # the cell's, estimated
    after_seconds: float  # the stages after training that go over the test images, estimated
    fixed_seconds: float  # the probe's: loading and poisoning the data, backdoor defences, writing
    curve: bool

    @property
    def total(self) -> float:
        return self.train_seconds + self.after_seconds + self.fixed_seconds


def cell_test_images(spec) -> int:
    """How many test images the cell evaluates on (its subset, else the whole split)."""
    return len(load_data(spec.data, spec.seed, download=False).test)


def probe(cell, probe_steps: int, probe_test: int, data_root: str | None) -> CellEstimate:
    """Run the cut copy of ``cell``'s spec and scale its stage times back up."""
    spec = cell.spec
    if data_root:
        spec = dataclasses.replace(spec, data=dataclasses.replace(spec.data, root=data_root))
    n_test = cell_test_images(spec)
    m_test = min(probe_test, n_test)
    cut = dataclasses.replace(spec, train=dataclasses.replace(spec.train, steps=probe_steps),
                              data=dataclasses.replace(spec.data, test_subset=m_test))
    start = time.perf_counter()
    record = run_experiment(cut, show_progress=False).record
    wall = time.perf_counter() - start
    steps_done = record.number(TRAIN_STEPS) or probe_steps
    full = spec.train.steps or spec.train.epochs * math.ceil(record.number("train_images") / spec.train.batch_size)
    per_image = sum(record.number(k) or 0.0 for k in PER_TEST_IMAGE)
    train = record.number("train_seconds") or 0.0
    fixed = wall - train - per_image  # loading, poisoning (label-consistent, Narcissus), defences: not scaled
    return CellEstimate(cell.label, int(full), n_test, train * full / steps_done,
                        per_image * n_test / m_test, fixed, bool(spec.eval.every_steps))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tables", nargs="+", help="table ids")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--datasets", nargs="+")
    p.add_argument("--cells", help="only cells whose label contains this")
    p.add_argument("--data-root")
    p.add_argument("--probe-steps", type=int, default=20)
    p.add_argument("--probe-test", type=int, default=100)
    p.add_argument("--markdown", type=Path, help="also write the table here")
    args = p.parse_args(argv)

    distinct: dict = {}
    for table in args.tables:
        for c in grids.expand(grids.load_table(table), args.preset, 1, args.datasets).cells:
            if c.spec is not None and (not args.cells or args.cells in c.label):
                distinct.setdefault(c.digest, c)
    estimates = []
    for cell in distinct.values():
        estimates.append(probe(cell, args.probe_steps, args.probe_test, args.data_root))
        e = estimates[-1]
        print(f"{e.label}: {e.total / 60:.1f} min ({e.train_seconds / e.steps:.2f} s a step)", flush=True)
    lines = [f"Estimated cost of one seed of each cell of `{' '.join(args.tables)}` at preset {args.preset}"
             + (f", datasets {' '.join(args.datasets)}" if args.datasets else "")
             + f", on one core ({torch.get_num_threads()} torch thread), from probes of {args.probe_steps} steps "
             f"and {args.probe_test} test images", "",
             "| cell | steps | s a step | training min | test images | evaluation min | data, poisoning, "
             "defences min | total min |", "|---|---|---|---|---|---|---|---|"]
    for e in estimates:
        lines.append(f"| {e.label}{' (+ curve)' if e.curve else ''} | {e.steps} | {e.train_seconds / e.steps:.2f} | "
                     f"{e.train_seconds / 60:.1f} | {e.test_images} | {e.after_seconds / 60:.1f} | {e.fixed_seconds / 60:.1f} | "
                     f"{e.total / 60:.1f} |")
    total = sum(e.total for e in estimates)
    lines += ["", f"Summed: {total / 3600:.2f} core-hours over {len(estimates)} cells (one seed)."]
    emit("\n".join(lines), args.markdown)


if __name__ == "__main__":
    main()
