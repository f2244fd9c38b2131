"""Data-parallel runs: two gloo processes launched by torchrun reproduce a single-process run, and
write one run folder; the batch partition and loss weighting are those of the single batch."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from slow_steps import slow_steps_source
from tradeoff.config.build import load_spec
from tradeoff.core import distributed
from tradeoff.core.errors import TradeoffError
from tradeoff.data.batches import InMemoryBatches, global_batches
from tradeoff.evaluation.metrics import TIMING_KEYS
from tradeoff.pipeline.experiment import run_experiment

# On a 697-image digits subset (the last global batch of 97 splits 49/48): standard training for
# 2 epochs, and PGD training (no random start, so both runs craft the same examples) for one.
DATA = {"dataset": "digits", "train_subset": 697, "test_subset": 200}
EVAL = {"attack": {"random_start": False, "steps": 3}}
SPECS = {
    "standard": {"data": DATA, "model": {"name": "small-cnn"}, "train": {"epochs": 2, "batch_size": 100},
                 "eval": EVAL},
    "pgd": {"data": DATA, "model": {"name": "small-cnn"}, "train": {"epochs": 1, "batch_size": 100},
            "adversarial_defense": {"objective": "pgd", "attack": {"random_start": False, "steps": 3}}, "eval": EVAL},
}
WEIGHT_TOLERANCE = 1e-4  # float noise of a different summation order is about 1e-6 here


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_match_a_single_process_run(tmp_path):
    """`torchrun --nproc-per-node 2 -m tradeoff run a.yaml b.yaml` on CPU (gloo) gives the weights
    of the single-process run within 1e-4 and the same metrics (to one test image), and writes
    exactly one run folder and one checkpoint per spec, no partial folders."""
    paths = []
    for name, raw in SPECS.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        paths.append(str(path))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), "-m", "tradeoff", "run", *paths, "--out", str(tmp_path / "ddp"), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run folders and summary.csv") == 1  # only rank 0 reports

    ddp = tmp_path / "ddp"
    assert sorted(os.listdir(ddp)) == ["pgd", "standard", "summary.csv"]
    assert len(list(ddp.rglob("model.safetensors"))) == 2
    for name in SPECS:
        spec = load_spec(tmp_path / f"{name}.yaml")
        single = run_experiment(spec, tmp_path / "single", show_progress=False)
        got = json.loads((ddp / name / "metrics.json").read_text())
        assert got["train_steps"] == single.metrics["train_steps"]
        for key in ("accuracy", "adversarial_robustness", "backdoor_success_rate"):
            assert abs(got[key] - single.metrics[key]) <= 1 / 200 + 1e-9, (name, key)
        a, b = load_file(str(ddp / name / "model.safetensors")), single.model.state_dict()
        assert max((a[k] - b[k]).abs().max().item() for k in b) < WEIGHT_TOLERANCE


# The CLI with training steps of 50 ms, so that a kill lands between snapshots.
SLOW_LAUNCHER = slow_steps_source(0.05) + "import sys\nfrom tradeoff.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def torchrun(tmp_path, *args) -> subprocess.Popen:
    launcher = tmp_path / "launch.py"
    launcher.write_text(SLOW_LAUNCHER)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), str(launcher), *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc), children first."""
    try:
        children = [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []
    return [d for c in children for d in (*descendants(c), c)]


def test_two_gloo_ranks_killed_and_resumed_match_the_uninterrupted_run(tmp_path):
    """torchrun with 2 gloo ranks, PGD with random starts (each rank draws its own): the whole
    process group SIGKILLed after a mid-training snapshot and resumed under torchrun with --resume
    ends with the uninterrupted 2-rank run's metrics.json (apart from timings) and weights. Rank 0
    wrote the snapshots, with both ranks' generators."""
    raw = {**SPECS["pgd"], "train": {"epochs": 2, "batch_size": 100}, "snapshots": {"every_steps": 3, "keep": 5},
           "adversarial_defense": {"objective": "pgd", "attack": {"steps": 2}}}
    spec = tmp_path / "t.yaml"
    spec.write_text(yaml.safe_dump({**raw, "name": "t"}))
    reference = torchrun(tmp_path, "run", str(spec), "--out", str(tmp_path / "reference"), "--quiet")
    assert reference.wait(timeout=300) == 0, reference.stderr.read()[-3000:]

    out = tmp_path / "out"
    proc = torchrun(tmp_path, "run", str(spec), "--out", str(out), "--quiet")
    snapshot = out / "t" / "snapshots" / "step-000000009.safetensors"  # the second batch of epoch 1
    deadline = time.monotonic() + 300
    while not snapshot.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its snapshot"
        time.sleep(0.02)
    time.sleep(0.07)
    for pid in [*descendants(proc.pid), proc.pid]:  # the workers may have sessions of their own
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    assert (out / "t" / "unfinished.json").is_file()
    assert len(load_file(str(snapshot)).keys() & {"rng/0/torch", "rng/1/torch"}) == 2

    resumed = torchrun(tmp_path, "run", str(spec), "--out", str(out), "--quiet", "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-3000:]
    assert "resumed from the snapshot at step 9" in (out / "t" / "log.txt").read_text()

    def record(folder):
        return {k: v for k, v in json.loads((folder / "metrics.json").read_text()).items() if k not in TIMING_KEYS}

    assert record(out / "t") == record(tmp_path / "reference" / "t")
    a, b = load_file(str(out / "t" / "model.safetensors")), load_file(str(tmp_path / "reference" / "t" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


# The CLI with every backdoor defence call recorded in calls-RANK.txt beside the launcher.
COUNTING_LAUNCHER = """import os, sys
from pathlib import Path
import tradeoff.pipeline.experiment
real = tradeoff.pipeline.experiment.try_backdoor_defense
def counted(entry, *args, **kwargs):
    with open(Path(__file__).parent / f"calls-{os.environ['RANK']}.txt", "a") as fh:
        fh.write(entry.name + "\\n")
    return real(entry, *args, **kwargs)
tradeoff.pipeline.experiment.try_backdoor_defense = counted
from tradeoff.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_under_torchrun_backdoor_defenses_run_once_on_rank_0(tmp_path):
    """2 gloo ranks, spectral signatures with retraining and Neural Cleanse: each defence runs once,
    on rank 0 alone (its retraining and unlearning single-process: no rank waits in a collective),
    and the one run folder holds their metrics and outputs."""
    raw = {**SPECS["standard"], "name": "t", "train": {"epochs": 1, "batch_size": 100},
           "backdoor_defenses": [{"name": "spectral", "retrain": True},
                                 {"name": "neural-cleanse", "epochs": 1, "unlearn": "target", "unlearn_epochs": 1,
                                  "clean_data": "test-split"}]}
    spec = tmp_path / "t.yaml"
    spec.write_text(yaml.safe_dump(raw))
    launcher = tmp_path / "count.py"
    launcher.write_text(COUNTING_LAUNCHER)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), str(launcher), "run", str(spec), "--out", str(tmp_path / "out"), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "calls-0.txt").read_text().split() == ["spectral", "neural-cleanse"]
    assert not (tmp_path / "calls-1.txt").exists()
    metrics = json.loads((tmp_path / "out" / "t" / "metrics.json").read_text())
    assert "spectral_detection_rate" in metrics and "spectral_accuracy_after" in metrics
    assert "cleanse_backdoor_success_rate_after" in metrics
    assert (tmp_path / "out" / "t" / "spectral.safetensors").is_file()


@pytest.mark.parametrize("n,batch,world", [(10, 4, 3), (1297, 100, 2), (9, 4, 2), (7, 3, 4)])
def test_rank_slices_and_weights_give_the_global_batch_gradient(n, batch, world):
    """Each global batch is partitioned by the ranks' slices, and averaging the ranks' gradients
    of (share x their mean loss), as DDP does, gives the gradient of the global batch's mean loss
    (reference: autograd on the whole batch), slices equal or not."""
    torch.manual_seed(0)
    x, y = torch.randn(n, 5), torch.randint(0, 3, (n,))
    w = torch.randn(5, 3, requires_grad=True)
    single = InMemoryBatches(x, y, batch, False, seed=1)
    ranks = [InMemoryBatches(x, y, batch, False, seed=1, rank=r, world=world) for r in range(world)]
    assert all(r.steps_per_epoch == len(global_batches(n, batch, world)) for r in ranks)
    streams = [r.epoch(0) for r in ranks]
    for (xb, yb), _ in zip(single.epoch(0), range(ranks[0].steps_per_epoch)):
        (ref,) = torch.autograd.grad(F.cross_entropy(xb @ w, yb), w)
        grads, seen = [], []
        for r, stream in zip(ranks, streams):
            xr, yr = next(stream)
            share = world * len(yr) / r.last_global_size
            grads.append(torch.autograd.grad(share * F.cross_entropy(xr @ w, yr), w)[0])
            seen.append(xr)
        assert r.last_global_size == len(yb)
        assert sorted(torch.cat(seen)[:, 0].tolist()) == sorted(xb[:, 0].tolist())
        torch.testing.assert_close(torch.stack(grads).mean(0), ref)


def test_evaluation_shards_cover_the_test_set_once():
    """The ranks' evaluation batches together hold every test image exactly once."""
    from tradeoff.data.imageset import ImageSet

    test = ImageSet(torch.arange(23.0).view(23, 1, 1, 1), torch.arange(23))
    seen = [int(v) for r in range(3) for _, yb in test.loader(4, "cpu", r, 3) for v in yb]
    assert sorted(seen) == list(range(23))


def test_environment_detection(monkeypatch):
    """No launcher variables: a single process; WORLD_SIZE > 1 without the rendezvous variables:
    one clear error; RANK decides who reports."""
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    ctx, device = distributed.setup(torch.device("cpu"))
    assert ctx == distributed.SINGLE and not ctx.active and device.type == "cpu"
    assert distributed.is_main()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert not distributed.is_main()
    with pytest.raises(TradeoffError, match="MASTER_ADDR"):
        distributed.setup(torch.device("cpu"))
