"""Snapshots and exact resume: a real training process killed (SIGKILL, also during a snapshot
write) or stopped (SIGTERM) and resumed gives the uninterrupted run's metrics.json apart from
timings, and the same weights; bad snapshots and changed specs are answered in one sentence."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from slow_steps import slow_steps_source
from tradeoff.core.spec import Spec
from tradeoff.evaluation.metrics import TIMING_KEYS
from tradeoff.training import snapshots

# 6 steps an epoch, 4 epochs; every 4 steps is a snapshot, so they fall inside epochs too.
SPEC = """name: t
data: {dataset: digits, train_subset: 300, test_subset: 100}
train: {epochs: 4, batch_size: 50}
adversarial_defense: {objective: OBJECTIVE, eps_ramp: 0.25, attack: {steps: 2}}
eval: {attack: {steps: 3}}
snapshots: {every_steps: 4, keep: 3}
"""
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SLOW_STEPS = slow_steps_source(0.05)  # steps of 50 ms: a kill lands between snapshots


def tradeoff(*args, preamble: str = ""):
    """``tradeoff ARGS`` in a new process, after ``preamble`` (Python run before the CLI)."""
    code = f"import sys\n{preamble}\nfrom tradeoff.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(*args, preamble: str = ""):
    proc = tradeoff(*args, preamble=preamble)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, err


def wait_for_snapshot(folder, step: int, proc, timeout: float = 120):
    path = folder / "snapshots" / snapshots.snapshot_name(step)
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "the run ended before its snapshot"
        assert time.monotonic() < deadline
        time.sleep(0.02)


def metrics(folder) -> dict:
    return {k: v for k, v in json.loads((folder / "metrics.json").read_text()).items() if k not in TIMING_KEYS}


def same_weights(a, b) -> bool:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


_REFERENCES = {}


def uninterrupted(objective: str, tmp_path_factory):
    """The spec file and the folder of its uninterrupted run (made once per objective)."""
    if objective not in _REFERENCES:
        root = tmp_path_factory.mktemp(f"reference-{objective}")
        spec = root / "s.yaml"
        spec.write_text(SPEC.replace("OBJECTIVE", objective))
        assert finish("run", str(spec), "--out", str(root / "out"), "--quiet")[0] == 0
        _REFERENCES[objective] = spec, root / "out" / "t"
    return _REFERENCES[objective]


@pytest.fixture
def reference(tmp_path_factory):
    return uninterrupted("pgd", tmp_path_factory)


# pgd: 24 steps, killed after step 8 (the second batch of epoch 1); free: 4 replays of 6 steps,
# killed after step 4; free also carries a perturbation from batch to batch.
@pytest.mark.parametrize("objective,step", [("pgd", 8), ("free", 4)])
def test_a_run_killed_mid_epoch_resumes_to_the_same_result(objective, step, tmp_path, tmp_path_factory):
    spec, done = uninterrupted(objective, tmp_path_factory)
    out = tmp_path / "out"
    proc = tradeoff("run", str(spec), "--out", str(out), "--quiet", preamble=SLOW_STEPS)
    wait_for_snapshot(out / "t", step, proc)
    time.sleep(0.07)  # into the next step
    proc.kill()
    proc.wait()
    folder = out / "t"
    assert json.loads((folder / "unfinished.json").read_text())["stage"] == "training"
    code, err = finish("run", str(spec), "--out", str(out), "--quiet")
    assert code == 2 and "pass --resume" in err and "Traceback" not in err
    code, err = finish("run", str(spec), "--out", str(out), "--quiet", "--resume")
    assert code == 0, err
    assert metrics(folder) == metrics(done)
    assert same_weights(folder, done)
    assert not (folder / "unfinished.json").exists() and not (folder / "snapshots").exists()


def test_a_kill_during_a_snapshot_write_resumes_from_the_one_before(reference, tmp_path):
    """The process writes half of its third snapshot's temporary file and is SIGKILLed."""
    spec, done = reference
    out = tmp_path / "out"
    preamble = """
import os, signal
import tradeoff.records.folders as s
real = s.save_file
def half_then_die(tensors, path, metadata=None):
    real(tensors, path, metadata=metadata)
    if "step-000000012" in path:
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
s.save_file = half_then_die
"""
    code, _ = finish("run", str(spec), "--out", str(out), "--quiet", preamble=preamble)
    assert code == -signal.SIGKILL
    folder = out / "t"
    assert [p.name for p in snapshots.snapshot_files(folder)] == [snapshots.snapshot_name(8), snapshots.snapshot_name(4)]
    assert any(p.name.startswith(".step-000000012") for p in (folder / "snapshots").iterdir())
    code, err = finish("run", str(spec), "--out", str(out), "--quiet", "--resume")
    assert code == 0, err
    assert metrics(folder) == metrics(done) and same_weights(folder, done)


def test_sigterm_writes_a_snapshot_and_exits_75_then_resumes(reference, tmp_path):
    spec, done = reference
    out = tmp_path / "out"
    proc = tradeoff("run", str(spec), "--out", str(out), "--quiet", preamble=SLOW_STEPS)
    wait_for_snapshot(out / "t", 4, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    assert "stopped on request" in err and "Traceback" not in err
    assert snapshots.snapshot_files(out / "t")  # the stop wrote one at its step boundary
    code, err = finish("run", str(spec), "--out", str(out), "--quiet", "--resume")
    assert code == 0, err
    assert metrics(out / "t") == metrics(done) and same_weights(out / "t", done)


def _killed_run(spec, out, step: int):
    proc = tradeoff("run", str(spec), "--out", str(out), "--quiet", preamble=SLOW_STEPS)
    wait_for_snapshot(out / "t", step, proc)
    proc.kill()
    proc.wait()
    return out / "t"


def test_corrupt_snapshots_are_skipped_then_refused_in_one_sentence(reference, tmp_path):
    spec, done = reference
    folder = _killed_run(spec, tmp_path / "out", 8)
    files = snapshots.snapshot_files(folder)
    files[0].write_bytes(files[0].read_bytes()[:100])  # the newest, truncated
    code, err = finish("run", str(spec), "--out", str(tmp_path / "out"), "--resume")
    assert code == 0, err
    assert "cannot be read" in err and "trying the one before it" in err
    assert metrics(folder) == metrics(done)

    folder = _killed_run(spec, tmp_path / "out2", 8)
    for f in snapshots.snapshot_files(folder):
        f.write_bytes(b"not a snapshot")
    code, err = finish("run", str(spec), "--out", str(tmp_path / "out2"), "--quiet", "--resume")
    assert code == 2 and "every snapshot" in err and "--restart" in err and "Traceback" not in err
    code, err = finish("run", str(spec), "--out", str(tmp_path / "out2"), "--quiet", "--restart")
    assert code == 0, err
    assert metrics(folder) == metrics(done)


def test_resuming_with_another_spec_names_the_fields(reference, tmp_path):
    spec, _ = reference
    _killed_run(spec, tmp_path / "out", 4)
    code, err = finish("run", str(spec), "--out", str(tmp_path / "out"), "--quiet", "--resume",
                       "--set", "train.lr=0.01", "--set", "seed=3", "--set", "snapshots.every_steps=2")
    assert code == 2 and "Traceback" not in err
    assert "seed, train.lr differ" in err  # the snapshot cadence may change on a resume


def test_the_snapshot_cadence_is_not_part_of_the_digest():
    a, b = Spec(), Spec()
    b.snapshots.every_steps, b.snapshots.every_minutes = 7, 0.5
    assert a.digest() == b.digest()
    b.seed = 1
    assert a.digest() != b.digest()


def test_every_generator_comes_back_from_a_snapshot_file(tmp_path):
    """Python, NumPy, torch and a named generator draw the same numbers after a write and read
    as they did before; optimiser and objective tensors and JSON values survive exactly."""
    gen = torch.Generator().manual_seed(5)
    random.random(), np.random.rand(), torch.rand(1), torch.rand(1, generator=gen)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    state = snapshots.TrainState(step=3, epoch=1, batch_in_epoch=2, seconds=1.5, history=[[0, 2.3, 0.1]],
                                 epoch_sums=[[4.5, 3.0, 20]], model=model.state_dict(),
                                 optimizer=optimizer.state_dict(), scaler={}, objective=[{"delta": torch.ones(2)}],
                                 rng=[snapshots.capture_rng({"augment": gen})])
    expected = (random.random(), np.random.rand(), torch.rand(1), torch.rand(1, generator=gen))
    path = tmp_path / snapshots.snapshot_name(3)
    snapshots.write(path, state, "abc")
    back, digest = snapshots.read(path)
    assert digest == "abc" and (back.step, back.epoch, back.batch_in_epoch) == (3, 1, 2)
    assert back.history == [(0, 2.3, 0.1)] and back.epoch_sums == [[4.5, 3.0, 20]]
    snapshots.restore_rng(back.rng[0], {"augment": gen})
    assert (random.random(), np.random.rand(), torch.rand(1), torch.rand(1, generator=gen)) == expected
    fresh = torch.optim.Adam(torch.nn.Linear(3, 2).parameters())
    fresh.load_state_dict(back.optimizer)
    for a, b in zip(optimizer.state_dict()["state"].values(), fresh.state_dict()["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(back.objective[0]["delta"], torch.ones(2))


def test_a_run_killed_while_writing_its_first_marker_starts_again(tmp_path):
    """A process killed between writing its first marker's temporary file and renaming it leaves a
    run folder holding only that leftover (seen in a killed sweep): opening the folder again starts
    the run (leftover removed, marker written) instead of refusing the folder; any other file
    there still makes it "not a run folder"."""
    import tempfile

    from tradeoff.core.errors import TradeoffError
    from tradeoff.records.folders import UNFINISHED, RunFolder

    run = tmp_path / "cell"
    run.mkdir()
    fd, leftover = tempfile.mkstemp(prefix=f".{UNFINISHED}.", dir=run)  # as write_text_atomic names it
    os.write(fd, b'{"stage": "starting"}')
    os.close(fd)
    with RunFolder(run, resume=True):
        assert not os.path.exists(leftover)
        assert json.loads((run / UNFINISHED).read_text())["stage"] == "starting"

    other = tmp_path / "other"
    other.mkdir()
    (other / ".DS_Store").write_text("not ours")
    with pytest.raises(TradeoffError, match="not a run folder"):
        with RunFolder(other, resume=True):
            pass
