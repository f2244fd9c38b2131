"""Memory of the streamed ImageNet path as the dataset grows.

Generates folder-per-class JPEG datasets (ImageNet-like sizes, 300-500 px) of several sizes under
ROOT/imagenet/{train,val}/<class>/, then runs the experiment on each in a fresh process: dataset
'imagenet' at 224 px (random-resized crops, on-the-fly clean-label poisoning before the crop,
loader worker processes), one full epoch so that every image is decoded, then the evaluation
(clean, stamped, PGD) on the whole val split. Reports peak RSS of the main process and of the
largest loader worker per size; flat numbers mean nothing scales with the number of images
except the file list.

    OMP_NUM_THREADS=1 python benchmarks/bench_folder_memory.py --sizes 200,800
    # the whole ImageNet recipe on a torchvision-format ResNet-50 checkpoint (slow on a CPU):
    OMP_NUM_THREADS=1 python benchmarks/bench_folder_memory.py --sizes 200,800 --model resnet50 --steps 2 --checkpoint
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CLASSES = 8


def generate(root: Path, n_train: int, seed: int = 0) -> Path:
    """n_train training JPEGs and n_train / 4 val JPEGs, smooth colour blobs plus noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("val", max(n_train // 4, CLASSES))):
        for i in range(count):
            c = i % CLASSES
            folder = root / "imagenet" / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            h, w = (int(v) for v in rng.integers(300, 500, 2))
            yy, xx = np.mgrid[0:h, 0:w]
            base = 127 + 100 * np.sin((xx * (c + 1) + yy) / 40.0)[..., None] * rng.uniform(0.3, 1, 3)
            img = (base + rng.normal(0, 20, (h, w, 3))).clip(0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / f"{split}_{i:06d}.JPEG", quality=85)
    return root


def child(args) -> None:
    import torch

    from tradeoff.config.build import load_spec
    from tradeoff.pipeline.experiment import run_experiment

    raw = {"data": {"dataset": "imagenet", "root": args.root, "image_size": args.image_size, "workers": args.workers},
           "poison": {"target": 1}, "model": {"name": args.model, "width": args.width},
           "train": {"epochs": 1, "batch_size": args.batch, "lr": 0.01},
           "eval": {"batch_size": args.batch, "attack": {"steps": 2}}}
    if args.steps:
        raw["train"]["steps"] = args.steps
    if args.checkpoint:
        from torchvision.models import resnet50

        path = Path(args.root) / "torchvision-resnet50.pth"
        torch.save(resnet50(num_classes=1000).state_dict(), path)  # torchvision format, 1000 classes
        raw["model"]["checkpoint"] = str(path)
    start = time.perf_counter()
    run = run_experiment(load_spec(None, raw), None, show_progress=False)
    print(json.dumps({
        "seconds": round(time.perf_counter() - start, 1),
        "train_images": run.metrics["train_images"], "test_images": run.metrics["test_images"],
        "train_steps": run.metrics["train_steps"], "poisoned": run.metrics["poisoned_images"],
        "peak_rss_main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_largest_worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="200,800", help="numbers of training JPEGs (val gets a quarter)")
    p.add_argument("--model", default="small-cnn")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=None, help="cap the training steps (default: one full epoch)")
    p.add_argument("--checkpoint", action="store_true", help="start from a torchvision-format ResNet-50 file")
    p.add_argument("--keep", default=None, help="generate the datasets here (default: a temporary folder)")
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="tradeoff-folder-bench-"))
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        root = base / str(n)
        if not (root / "imagenet").is_dir():
            generate(root, n)
        cmd = [sys.executable, __file__, "--child", "--root", str(root)] + [
            a for a in sys.argv[1:] if not a.startswith("--sizes") and a != args.sizes]
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        if out.returncode != 0:
            sys.exit(out.stderr[-3000:])
        rows.append({"train_jpegs": n, **json.loads(out.stdout.strip().splitlines()[-1])})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'JPEGs':>6} {'val':>5} {'steps':>5} {'seconds':>8} {'peak RSS main MiB':>18} {'largest worker MiB':>19}")
    for r in rows:
        print(f"{r['train_jpegs']:6d} {r['test_images']:5d} {r['train_steps']:5d} {r['seconds']:8.1f} "
              f"{r['peak_rss_main_mib']:18.0f} {r['peak_rss_largest_worker_mib']:19.0f}")


if __name__ == "__main__":
    main()
