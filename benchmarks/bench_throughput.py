"""Training and evaluation throughput of the toolkit beside a bare PyTorch loop doing the same work.

The CPU MNIST experiment: small-cnn, batch 100, PGD eps 0.3 / step 0.05 / 10 steps, on the real
MNIST training files (5,000 images here) and a slice of the test set. Three workloads:

- ``standard``: training with clean batches (images/s of training data),
- ``pgd``: PGD adversarial training, every batch 100% adversarial (images/s),
- ``eval``: the evaluation pass: clean, stamped and PGD predictions (test images/s).

For each, the toolkit path (``train_model`` with ``InMemoryBatches`` and the spec's objective;
``evaluate``) and a bare loop written directly in PyTorch run on the same poisoned tensors with
the same freshly seeded model. The two are interleaved (alternating which goes first) over
several repeats, because the machine may be shared; medians and the ratio toolkit / bare are
reported with the peak memory (CUDA: peak allocated per measurement; CPU: the process's peak RSS).

    OMP_NUM_THREADS=1 python benchmarks/bench_throughput.py --data-root /work/shared/datasets
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn.functional as F

from tradeoff.adversarial_defenses import make_objective
from tradeoff.config.build import load_spec
from tradeoff.config.resolve import resolve
from tradeoff.core.device import pick_device, seed_everything
from tradeoff.data.batches import InMemoryBatches
from tradeoff.evaluation.metrics import evaluate
from tradeoff.models import build_model
from tradeoff.pipeline.experiment import prepare
from tradeoff.training.loop import train_model


def make_spec(args, adversarial: str):
    raw = {"data": {"dataset": "mnist", "root": args.data_root, "test_subset": args.test_images},
           "model": {"name": "small-cnn"},
           "adversarial_defense": {"objective": adversarial, "attack": {"eps": 0.3, "step_size": 0.05, "steps": 10}},
           "eval": {"attack": {"eps": 0.3, "step_size": 0.05, "steps": 10}, "batch_size": args.eval_batch},
           "train": {"batch_size": args.batch, "device": args.device, "precision": args.precision,
                     "channels_last": args.channels_last}}
    return resolve(load_spec(None, raw))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fresh_model(spec, device):
    torch.manual_seed(1)
    model = build_model(spec.model.name, (1, 28, 28), 10).to(device)
    return model.to(memory_format=torch.channels_last) if spec.train.channels_last else model


# --------------------------------------------------------------------------- the toolkit

def toolkit_train(spec, data, device, steps):
    x, y = data["train"]
    model = fresh_model(spec, device)
    spec.train.steps = steps
    batches = InMemoryBatches(x, y, spec.train.batch_size, False, spec.seed)
    sync(device)
    start = time.perf_counter()
    result = train_model(model, batches, make_objective(spec), spec.train, device, log=lambda m: None,
                         show_progress=False)
    sync(device)
    return result.steps * spec.train.batch_size / (time.perf_counter() - start)


def toolkit_eval(spec, data, device, model):
    sync(device)
    start = time.perf_counter()
    m = evaluate(model, data["test"], data["trigger"], spec.poison.target, spec.eval, device,
                 precision=spec.train.precision, show_progress=False)
    sync(device)
    return m["test_images"] / (time.perf_counter() - start)


# --------------------------------------------------------------------------- the bare loops

def bare_pgd(model, x, y, eps, step, steps):
    delta = torch.empty_like(x).uniform_(-eps, eps)
    delta = (x + delta).clamp(0, 1) - x
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + step * grad.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def bare_train(spec, data, device, steps):
    x, y = data["train"]
    a = spec.adversarial_defense.attack
    adversarial = spec.adversarial_defense.objective == "pgd"
    model = fresh_model(spec, device)
    opt = torch.optim.Adam(model.parameters(), lr=spec.train.lr)
    bs, done = spec.train.batch_size, 0
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec.train.precision == "bf16")
    cl = torch.channels_last if spec.train.channels_last else torch.contiguous_format
    sync(device)
    start = time.perf_counter()
    epoch = 0
    while done < steps:
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch)).to(device)
        for i in range(0, len(y), bs):
            if done >= steps:
                break
            idx = perm[i:i + bs]
            xb, yb = x[idx].contiguous(memory_format=cl), y[idx]
            with amp:
                if adversarial:
                    xb = bare_pgd(model, xb, yb, a.eps, a.step_size, a.steps)
                loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
        epoch += 1
    sync(device)
    return done * bs / (time.perf_counter() - start)


def bare_eval(spec, data, device, model):
    test, trigger, target, a = data["test"], data["trigger"], spec.poison.target, spec.eval.attack
    stamp = trigger.stamp_for((1, 28, 28), device)
    mask, fill = stamp.mask[3], stamp.fill[3]  # bottom-right
    counts = torch.zeros(5, device=device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec.train.precision == "bf16")
    model.eval()
    sync(device)
    start = time.perf_counter()
    with amp:
        for i in range(0, len(test.y), spec.eval.batch_size):
            xb, yb = test.x[i:i + spec.eval.batch_size], test.y[i:i + spec.eval.batch_size]
            with torch.no_grad():
                clean = model(xb).argmax(1)
                hit = model(((1 - mask) * xb + mask * fill).clamp(0, 1)).argmax(1) == target
            robust = model(bare_pgd(model, xb, yb, a.eps, a.step_size, a.steps)).argmax(1) == yb
            counts += torch.stack([(clean == yb).sum(), (hit & (clean != target)).sum(), (clean != target).sum(),
                                   robust.sum(), (hit & (yb != target)).sum()]).float()
    counts.tolist()
    sync(device)
    model.train()
    return len(test.y) / (time.perf_counter() - start)


# --------------------------------------------------------------------------- driver

def measure(fn, device, *args):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    value = fn(*args)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return value, peak / 2**20


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--eval-batch", type=int, default=500)
    p.add_argument("--test-images", type=int, default=1000)
    p.add_argument("--pgd-steps", type=int, default=25, help="training steps timed for PGD training")
    p.add_argument("--standard-steps", type=int, default=150, help="training steps timed for standard training")
    p.add_argument("--modes", default="standard,pgd,eval")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args()

    device = pick_device(args.device)
    seed_everything(0)
    specs = {"standard": make_spec(args, "none"), "pgd": make_spec(args, "pgd")}
    poisoned = prepare(specs["pgd"], device)
    data = {"train": (poisoned.train.x, poisoned.train.y), "test": poisoned.test.to(device), "trigger": poisoned.trigger}
    eval_model = fresh_model(specs["pgd"], device)
    jobs = {
        "standard": (lambda: toolkit_train(specs["standard"], data, device, args.standard_steps),
                     lambda: bare_train(specs["standard"], data, device, args.standard_steps)),
        "pgd": (lambda: toolkit_train(specs["pgd"], data, device, args.pgd_steps),
                lambda: bare_train(specs["pgd"], data, device, args.pgd_steps)),
        "eval": (lambda: toolkit_eval(specs["pgd"], data, device, eval_model),
                 lambda: bare_eval(specs["pgd"], data, device, eval_model)),
    }
    modes = args.modes.split(",")
    for mode in modes:  # warm-up (allocator, kernels), not timed
        for fn in jobs[mode]:
            fn()
    results = {m: {"toolkit": [], "bare": [], "peak_mib": {}} for m in modes}
    for r in range(args.repeats):
        for mode in modes:
            order = ("toolkit", "bare") if r % 2 == 0 else ("bare", "toolkit")
            for impl in order:
                value, peak = measure(jobs[mode][0 if impl == "toolkit" else 1], device)
                results[mode][impl].append(value)
                results[mode]["peak_mib"][impl] = max(results[mode]["peak_mib"].get(impl, 0), peak)
            print(f"repeat {r}: {mode}: toolkit {results[mode]['toolkit'][-1]:.0f} img/s, "
                  f"bare {results[mode]['bare'][-1]:.0f} img/s", flush=True)
    print(f"\ndevice {device}, precision {args.precision}, channels_last {args.channels_last}, "
          f"torch threads {torch.get_num_threads()}, {args.repeats} repeats (medians)")
    print(f"{'workload':10} {'toolkit img/s':>14} {'bare img/s':>11} {'ratio':>6} {'paired':>7} "
          f"{'peak MiB (toolkit/bare)':>24}")
    summary = {}
    for mode in modes:
        t, b = statistics.median(results[mode]["toolkit"]), statistics.median(results[mode]["bare"])
        pk = results[mode]["peak_mib"]
        # the median of each repeat's toolkit/bare ratio: the pair ran back to back
        paired = statistics.median(a / c for a, c in zip(results[mode]["toolkit"], results[mode]["bare"]))
        summary[mode] = {"toolkit_images_per_s": t, "bare_images_per_s": b, "ratio": t / b, "paired_ratio": paired,
                         "peak_mib": pk, "runs": {k: results[mode][k] for k in ("toolkit", "bare")}}
        print(f"{mode:10} {t:14.0f} {b:11.0f} {t / b:6.3f} {paired:7.3f} {pk['toolkit']:11.0f} / {pk['bare']:.0f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": str(device), "args": vars(args), "results": summary}, fh, indent=2)


if __name__ == "__main__":
    main()
