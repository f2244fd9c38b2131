"""The GPU path measured in one command: training throughput beside a bare PyTorch loop, peak
memory, one Table 1(a) cell end to end, and the paper's CIFAR-10 adversarial-training cell
projected.

1. Throughput, on generated data of each shape kept on the device: MNIST's small CNN (1x28x28,
   batch 100), the CIFAR-10 paper model (preact-resnet, 3x32x32, batch 100) and ResNet-50
   (3x224x224, batch 64, 1,000 classes). For each: standard and PGD-10 training (L-inf, the
   dataset's eps and step), at fp32 and bf16, each also with channels_last, and for the small CNN
   also with ``torch.compile``. Every variant runs the toolkit (``train_model`` with
   ``InMemoryBatches`` and the spec's objective) and a bare PyTorch loop doing the same work on the
   same freshly seeded model and batches, interleaved over ``--repeats`` (alternating which goes
   first); images per second (medians), the ratio toolkit / bare and its paired median, and the
   peak memory of each (CUDA: peak allocated; CPU: the process's peak RSS).
2. One Table 1(a) MNIST adversarial-training cell at the cpu preset, end to end (training,
   evaluation with its checks, the run folder), on the real MNIST files under ``--data-root`` or
   else on generated images written in the IDX format.
3. The paper preset's CIFAR-10 adversarial-training cell projected: its seconds per training step
   (its model, batch, attack and augmentation, on generated data) times its steps. Evaluation is
   not in the projection.

The TF32 setting is the spec's default (``train.tf32``: convolutions in TF32, matrix products
in fp32, PyTorch's default) and is recorded. Results go to ``--out``/bench_gpu.json.

    python benchmarks/bench_gpu.py --out benchmarks/results/gpu [--data-root /data]

``--tiny`` shrinks every budget (two images a batch, one step, PGD-2, colour images at 16 px, two
no compile, which alone takes minutes on a CPU) so that the test suite runs it on a CPU in
seconds; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from tradeoff.adversarial_defenses import make_objective
from tradeoff.config.build import load_spec
from tradeoff.config.resolve import resolve
from tradeoff.core.device import TF32_SETTINGS, apply_tf32, pick_device
from tradeoff.data.batches import InMemoryBatches
from tradeoff.data.generated import write_mnist
from tradeoff.models import build_model
from tradeoff.pipeline.experiment import run_experiment
from tradeoff.sweeps.grids import expand, load_table
from tradeoff.training.loop import make_optimizer, train_model


@dataclass(frozen=True)
class Workload:
    """A model on generated data of its dataset's shape, and the attack of its PGD training."""

    name: str
    dataset: str  # whose protocol (optimiser, learning rate, eps) the spec takes
    model: str
    shape: tuple
    classes: int
    batch: int
    steps: dict  # timed training steps by objective ("none", "pgd")
    eps: float
    step_size: float


WORKLOADS = (
    Workload("mnist-small-cnn", "mnist", "small-cnn", (1, 28, 28), 10, 100, {"none": 200, "pgd": 60}, 0.3, 0.05),
    Workload("cifar10-preact-resnet", "cifar10", "preact-resnet", (3, 32, 32), 10, 100, {"none": 60, "pgd": 15},
             8 / 255, 2 / 255),
    Workload("resnet50-224", "imagenet", "resnet50", (3, 224, 224), 1000, 64, {"none": 15, "pgd": 4},
             8 / 255, 2 / 255),
)


@dataclass(frozen=True)
class Variant:
    precision: str
    channels_last: bool = False
    compile: bool = False

    @property
    def label(self) -> str:
        return self.precision + ("+channels_last" if self.channels_last else "") + ("+compile" if self.compile else "")


def variants_for(workload: Workload, tiny: bool) -> list[Variant]:
    if tiny:
        return [Variant("fp32"), Variant("bf16", channels_last=True)]
    out = [Variant(p, cl) for p in ("fp32", "bf16") for cl in (False, True)]
    if workload.model == "small-cnn" and not tiny:
        out += [Variant(p, compile=True) for p in ("fp32", "bf16")]
    return out


def shrink(workload: Workload) -> Workload:
    """The ``--tiny`` budget: two images a batch, one step, colour images at 16 px."""
    shape = workload.shape if workload.shape[0] == 1 else (3, 16, 16)
    return dataclasses.replace(workload, shape=shape, batch=2, steps={"none": 1, "pgd": 1})


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mib(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


# --------------------------------------------------------------------------- the two loops


def train_spec(w: Workload, v: Variant, objective: str, attack_steps: int, device):
    raw = {"data": {"dataset": w.dataset}, "model": {"name": w.model},
           "adversarial_defense": {"objective": objective,
                                   "attack": {"eps": w.eps, "step_size": w.step_size, "steps": attack_steps}},
           "train": {"batch_size": w.batch, "device": str(device), "precision": v.precision,
                     "channels_last": v.channels_last, "compile": v.compile}}
    return resolve(load_spec(None, raw))


def fresh_model(w: Workload, v: Variant, device):
    torch.manual_seed(1)
    model = build_model(w.model, w.shape, w.classes).to(device)
    return model.to(memory_format=torch.channels_last) if v.channels_last else model


def toolkit_run(spec, w: Workload, v: Variant, data, device, steps: int) -> float:
    model = fresh_model(w, v, device)
    train = dataclasses.replace(spec.train, steps=steps)
    batches = InMemoryBatches(*data, w.batch, False, spec.seed)
    sync(device)
    start = time.perf_counter()
    result = train_model(model, batches, make_objective(spec), train, device, log=lambda m: None, show_progress=False)
    sync(device)
    return result.steps * w.batch / (time.perf_counter() - start)


def bare_pgd(model, x, y, eps: float, step: float, steps: int):
    delta = ((x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1) - x)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta).float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (x + (delta.detach() + step * grad.sign()).clamp(-eps, eps)).clamp(0, 1) - x
    return (x + delta).detach()


def bare_run(spec, w: Workload, v: Variant, data, device, steps: int) -> float:
    """The same work written directly in PyTorch: the epoch's permutation, crafting in eval mode
    under the same autocast, one optimiser step per batch."""
    x, y = data
    a, adversarial = spec.adversarial_defense.attack, spec.adversarial_defense.objective == "pgd"
    model = fresh_model(w, v, device)
    net = torch.compile(model) if v.compile else model
    optimizer = make_optimizer(model, spec.train)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=v.precision == "bf16")
    memory_format = torch.channels_last if v.channels_last else torch.contiguous_format
    done, epoch = 0, 0
    sync(device)
    start = time.perf_counter()
    while done < steps:
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch)).to(device)
        for i in range(0, len(y) - w.batch + 1, w.batch):
            if done >= steps:
                break
            xb, yb = x[perm[i:i + w.batch]].contiguous(memory_format=memory_format), y[perm[i:i + w.batch]]
            with amp:
                if adversarial:
                    net.eval()
                    xb = bare_pgd(net, xb, yb, a.eps, a.step_size, a.steps)
                    net.train()
                loss = F.cross_entropy(net(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
        epoch += 1
    sync(device)
    return done * w.batch / (time.perf_counter() - start)


# --------------------------------------------------------------------------- 1. throughput


def generated(w: Workload, device, batches: int = 4):
    g = torch.Generator().manual_seed(0)
    n = w.batch * batches
    x = torch.rand((n, *w.shape), generator=g)
    return x.to(device), torch.randint(0, w.classes, (n,), generator=g).to(device)


def measure_pair(spec, w, v, data, device, steps: int, repeats: int, warm_up: bool = True) -> dict:
    runs = {"toolkit": [], "bare": []}
    peaks = {"toolkit": 0.0, "bare": 0.0}
    loops = {"toolkit": toolkit_run, "bare": bare_run}
    for impl in loops if warm_up else ():  # kernels, allocator, compilation
        loops[impl](spec, w, v, data, device, 1)
    for r in range(repeats):
        for impl in (("toolkit", "bare") if r % 2 == 0 else ("bare", "toolkit")):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            runs[impl].append(loops[impl](spec, w, v, data, device, steps))
            peaks[impl] = max(peaks[impl], peak_mib(device))
    toolkit, bare = statistics.median(runs["toolkit"]), statistics.median(runs["bare"])
    paired = statistics.median(t / b for t, b in zip(runs["toolkit"], runs["bare"]))
    return {"toolkit_images_per_s": toolkit, "bare_images_per_s": bare, "ratio": toolkit / bare,
            "paired_ratio": paired, "peak_mib": peaks, "runs": runs}


def throughput(device, args) -> list[dict]:
    rows = []
    for w in WORKLOADS:
        w = shrink(w) if args.tiny else w
        if args.models and w.name not in args.models:
            continue
        data = generated(w, device)
        for objective in ("none", "pgd"):
            for v in variants_for(w, args.tiny):
                spec = train_spec(w, v, objective, args.attack_steps, device)
                row = {"workload": w.name, "model": w.model, "shape": list(w.shape), "batch": w.batch,
                       "objective": "standard" if objective == "none" else f"pgd-{args.attack_steps}",
                       "variant": v.label, **dataclasses.asdict(v)}
                row.update(measure_pair(spec, w, v, data, device, w.steps[objective], args.repeats, not args.tiny))
                print(f"{w.name:22} {row['objective']:8} {v.label:24} toolkit {row['toolkit_images_per_s']:9.0f} "
                      f"bare {row['bare_images_per_s']:9.0f} img/s  ratio {row['ratio']:.3f} "
                      f"(paired {row['paired_ratio']:.3f})  peak {row['peak_mib']['toolkit']:.0f}"
                      f"/{row['peak_mib']['bare']:.0f} MiB", flush=True)
                rows.append(row)
    return rows


# --------------------------------------------------------------------------- 2. one cell end to end


def mnist_root(args, scratch: Path) -> tuple[str, str]:
    """(data root, what it holds): ``--data-root`` (real MNIST), else generated IDX files of the
    real set's sizes (the cpu preset takes 5,000 training images and the whole test set)."""
    if args.data_root:
        return args.data_root, "real MNIST"
    train, test = (200, 100) if args.tiny else (5000, 10000)
    write_mnist(scratch / "mnist", n_train=train, n_test=test, gz=True, seed=0, noise=False)
    return str(scratch), f"generated IDX files ({train} training / {test} test images, class-dependent noise)"


TINY_CELL = ["train.epochs=1", "train.batch_size=50", "data.train_subset=200", "data.test_subset=100",
             "adversarial_defense.attack.steps=2", "eval.attack.steps=2", "eval.masking_images=20"]


def end_to_end_cell(device, args, scratch: Path) -> dict:
    root, holds = mnist_root(args, scratch)
    overrides = [f"train.device={device}"] + (TINY_CELL if args.tiny else [])
    grid = expand(load_table("table1a"), "cpu", seeds=1, datasets=["mnist"], only=["adv-training"],
                  overrides=overrides, data_root=root)
    cell = grid.cells[0]
    if cell.error:
        raise SystemExit(f"the Table 1(a) cell has no spec: {cell.error}")
    sync(device)
    start = time.perf_counter()
    run = run_experiment(cell.spec, out_dir=scratch / "runs", show_progress=False, run_name=cell.run_name)
    sync(device)
    wall = time.perf_counter() - start
    keys = ("accuracy", "adversarial_robustness", "backdoor_success_rate", "train_steps", "train_seconds",
            "eval_seconds")
    return {"cell": cell.label, "data": holds, "wall_seconds": wall, "precision": cell.spec.train.precision,
            **{k: run.metrics.get(k) for k in keys}}


# --------------------------------------------------------------------------- 3. the paper's CIFAR-10 cell


def paper_cifar_projection(device, args) -> dict:
    """Seconds per step of the paper preset's CIFAR-10 adversarial-training cell (its model,
    batch, optimiser, attack and augmentation) on generated 32x32 images, times its steps."""
    grid = expand(load_table("table1a"), "paper", seeds=1, datasets=["cifar10"], only=["adv-training"],
                  overrides=[f"train.device={device}"])
    spec = grid.cells[0].spec
    steps = 1 if args.tiny else 20
    batch = 2 if args.tiny else spec.train.batch_size
    g = torch.Generator().manual_seed(0)
    x = torch.rand((batch * 8, 3, 32, 32), generator=g).to(device)
    y = torch.randint(0, 10, (batch * 8,), generator=g).to(device)
    torch.manual_seed(1)
    model = build_model(spec.model.name, (3, 32, 32), 10).to(device)
    train = dataclasses.replace(spec.train, batch_size=batch)
    objective = make_objective(spec)
    batches = InMemoryBatches(x, y, batch, bool(spec.data.augment), spec.seed)
    if not args.tiny:  # warm-up
        train_model(model, batches, objective, dataclasses.replace(train, steps=2), device, lambda m: None, False)
    sync(device)
    start = time.perf_counter()
    result = train_model(model, batches, make_objective(spec), dataclasses.replace(train, steps=steps), device,
                         lambda m: None, False)
    sync(device)
    per_step = (time.perf_counter() - start) / result.steps
    total = total_steps(spec)
    return {"cell": grid.cells[0].label, "model": spec.model.name, "batch": batch,
            "attack": f"PGD-{spec.adversarial_defense.attack.steps}", "precision": spec.train.precision,
            "augment": bool(spec.data.augment), "seconds_per_step": per_step, "steps": total,
            "projected_hours": per_step * total / 3600, "timed_steps": result.steps}


def total_steps(spec) -> int:
    if spec.train.steps is not None:
        return spec.train.steps
    return spec.train.epochs * math.ceil(50000 / spec.train.batch_size)


# --------------------------------------------------------------------------- driver


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="a folder for bench_gpu.json")
    p.add_argument("--data-root", default=None, help="the folder holding mnist/ (else generated images)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved toolkit/bare pairs (default 3; tiny 1)")
    p.add_argument("--attack-steps", type=int, default=None, help="PGD steps of the throughput runs (10; tiny 2)")
    p.add_argument("--models", default=None, help="comma-separated workload names (default: all)")
    p.add_argument("--skip-cell", action="store_true", help="leave out the end-to-end cell")
    p.add_argument("--tiny", action="store_true", help="a seconds-long run for tests (numbers mean nothing)")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (1 if args.tiny else 3)
    args.attack_steps = args.attack_steps or (2 if args.tiny else 10)
    args.models = args.models.split(",") if args.models else None
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    device = pick_device(args.device)
    tf32 = "convolutions"
    setting = apply_tf32(tf32)
    started = time.perf_counter()
    result = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
              else platform.processor() or platform.machine(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "tiny": args.tiny, "repeats": args.repeats,
              "tf32": {"setting": tf32, "description": TF32_SETTINGS.entry(tf32).description,
                       **dataclasses.asdict(setting)}}
    result["throughput"] = throughput(device, args)
    with tempfile.TemporaryDirectory() as scratch:
        if not args.skip_cell:
            result["table1a_mnist_adv_training_cpu_preset"] = end_to_end_cell(device, args, Path(scratch))
            print(f"end to end: {result['table1a_mnist_adv_training_cpu_preset']}", flush=True)
    result["paper_cifar10_adv_training_projection"] = paper_cifar_projection(device, args)
    print(f"projected: {result['paper_cifar10_adv_training_projection']}", flush=True)
    result["seconds"] = time.perf_counter() - started
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_gpu.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"done in {result['seconds']:.0f} s", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
