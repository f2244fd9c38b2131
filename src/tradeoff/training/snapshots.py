"""Mid-training snapshots: everything the rest of a run depends on, in one safetensors file.

A snapshot holds the model, the optimiser, the gradient scaler, the step, the epoch and the
position in that epoch's batch order, the partial sums of the epoch's log line, the training
objective's own state (free training's carried perturbation), the learning curve so far and every
random generator the rest of the run draws from (Python, NumPy, torch CPU and CUDA, the batches' augmentation).
Tensors are safetensors entries; everything else is JSON in the file's metadata: nothing is
unpickled. A file is written under a temporary name and renamed, so a kill during a write leaves
the previous snapshots intact; a truncated or corrupt file is skipped for the one before it.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors import safe_open

from tradeoff.core.distributed import SINGLE, DistContext, any_rank, gather_to_main
from tradeoff.core.errors import OutOfSpace, TradeoffError
from tradeoff.records.folders import save_tensors_atomic

FORMAT = 1
FOLDER = "snapshots"
METADATA_KEY = "tradeoff-snapshot"


@dataclass
class TrainState:
    """The training loop's position and state at a step boundary."""

    step: int
    epoch: int
    batch_in_epoch: int  # batches of ``epoch`` already taken
    seconds: float  # training time so far
    history: list  # (epoch, mean loss, mean accuracy) of the finished epochs
    epoch_sums: list  # per rank: loss sum, correct count, images seen of the unfinished epoch
    model: dict
    optimizer: dict
    scaler: dict
    objective: list  # per rank: name -> tensor
    rng: list = field(default_factory=list)  # per rank: see capture_rng
    curve: list = field(default_factory=list)  # the learning curve's points so far (tradeoff.training.curves)
    curve_seconds: float = 0.0  # time spent measuring them, not counted in ``seconds``


def capture_rng(generators: dict[str, torch.Generator]) -> dict:
    """Every random generator's state: Python, NumPy, torch CPU and CUDA, and ``generators``."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(mt), gauss], "numpy": [name, keys.astype(np.int64), pos, has_gauss, cached],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "generators": {k: g.get_state() for k, g in generators.items()}}


def restore_rng(rng: dict, generators: dict[str, torch.Generator]) -> None:
    version, mt, gauss = rng["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    for k, g in generators.items():
        g.set_state(rng["generators"][k])


# --------------------------------------------------------------------------- one file


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", copy=True).contiguous()


def encode(state: TrainState, digest: str) -> tuple[dict, dict]:
    """(tensors, JSON metadata) of ``state``."""
    tensors = {f"model/{k}": _cpu(v) for k, v in state.model.items()}
    for rank, objective in enumerate(state.objective):
        tensors.update({f"objective/{rank}/{k}": _cpu(v) for k, v in objective.items()})
    optimizer_values = {}
    for index, values in state.optimizer["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{key}"] = _cpu(value)
            else:
                optimizer_values[f"{index}/{key}"] = value
    ranks = []
    for rank, rng in enumerate(state.rng):
        tensors[f"rng/{rank}/torch"] = rng["torch"]
        tensors[f"rng/{rank}/numpy"] = torch.from_numpy(rng["numpy"][1])
        tensors.update({f"rng/{rank}/cuda/{i}": s for i, s in enumerate(rng["cuda"])})
        tensors.update({f"rng/{rank}/generator/{k}": s for k, s in rng["generators"].items()})
        ranks.append({"python": rng["python"], "numpy": [rng["numpy"][0], *rng["numpy"][2:]],
                      "cuda": len(rng["cuda"]), "generators": sorted(rng["generators"]),
                      "objective": sorted(state.objective[rank])})
    meta = {"format": FORMAT, "spec_digest": digest, "step": state.step, "epoch": state.epoch,
            "batch_in_epoch": state.batch_in_epoch, "seconds": state.seconds, "history": state.history,
            "epoch_sums": state.epoch_sums, "optimizer_groups": state.optimizer["param_groups"],
            "optimizer_indices": sorted(state.optimizer["state"]), "optimizer_values": optimizer_values,
            "scaler": state.scaler, "ranks": ranks, "curve": state.curve, "curve_seconds": state.curve_seconds}
    return tensors, meta


def decode(tensors: dict, meta: dict) -> TrainState:
    def under(prefix: str) -> dict:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    optimizer_state = {}
    for index in meta["optimizer_indices"]:
        values = {k.split("/", 1)[1]: v for k, v in meta["optimizer_values"].items() if k.split("/", 1)[0] == str(index)}
        values.update(under(f"optimizer/{index}/"))
        optimizer_state[index] = values
    rngs, objectives = [], []
    for rank, r in enumerate(meta["ranks"]):
        numpy_name, pos, has_gauss, cached = r["numpy"]
        rngs.append({"python": r["python"],
                     "numpy": [numpy_name, tensors[f"rng/{rank}/numpy"].numpy(), pos, has_gauss, cached],
                     "torch": tensors[f"rng/{rank}/torch"],
                     "cuda": [tensors[f"rng/{rank}/cuda/{i}"] for i in range(r["cuda"])],
                     "generators": {k: tensors[f"rng/{rank}/generator/{k}"] for k in r["generators"]}})
        objectives.append({k: tensors[f"objective/{rank}/{k}"] for k in r["objective"]})
    return TrainState(step=meta["step"], epoch=meta["epoch"], batch_in_epoch=meta["batch_in_epoch"],
                      seconds=meta["seconds"], history=[tuple(h) for h in meta["history"]],
                      epoch_sums=meta["epoch_sums"], model=under("model/"),
                      optimizer={"state": optimizer_state, "param_groups": meta["optimizer_groups"]},
                      scaler=meta["scaler"], objective=objectives, rng=rngs, curve=meta.get("curve", []),
                      curve_seconds=meta.get("curve_seconds", 0.0))


def snapshot_name(step: int) -> str:
    return f"step-{step:09d}.safetensors"


def write(path: Path, state: TrainState, digest: str) -> int:
    """Write ``state`` to ``path`` atomically; its size in bytes."""
    tensors, meta = encode(state, digest)
    save_tensors_atomic(path, tensors, metadata={METADATA_KEY: json.dumps(meta)})
    return path.stat().st_size


def read(path: Path) -> tuple[TrainState, str]:
    """(state, spec digest) of one snapshot file; any problem raises ValueError."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {})[METADATA_KEY])
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as e:  # noqa: BLE001  truncated, corrupt or foreign: the caller tries an older one
        raise ValueError(f"{e.__class__.__name__}: {e}") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"snapshot format {meta.get('format')!r}, expected {FORMAT}")
    return decode(tensors, meta), meta["spec_digest"]


def snapshot_files(run_dir: Path) -> list[Path]:
    """The run folder's snapshots, newest first (temporary files of an interrupted write excluded)."""
    folder = Path(run_dir) / FOLDER
    return sorted(folder.glob("step-*.safetensors"), reverse=True) if folder.is_dir() else []


def latest(run_dir: Path, digest: str, warn: Callable[[str], None]) -> tuple[TrainState, Path] | None:
    """(state, file) of the newest readable snapshot of ``run_dir``, skipping bad ones with a
    warning; None when the run has none; one sentence when every one of them is bad."""
    files = snapshot_files(run_dir)
    for path in files:
        try:
            state, written_for = read(path)
        except ValueError as e:
            warn(f"snapshot {path.name} cannot be read ({e}); trying the one before it")
            continue
        if written_for != digest:
            raise TradeoffError(f"{path} was written for another spec (digest {written_for}, this spec's is "
                                f"{digest}); pass --restart to start the run over.")
        return state, path
    if files:
        raise TradeoffError(f"every snapshot in {Path(run_dir) / FOLDER} is unreadable; pass --restart to start "
                            "the run over.")
    return None


# --------------------------------------------------------------------------- when to write


class Snapshotter:
    """Decides when the training loop writes a snapshot (every N steps, every M minutes, at the
    end of training, and when a stop was requested) and keeps the newest ``keep`` files.

    In a data-parallel run every rank has one: the decision is taken on all ranks together, each
    rank's random generators and objective state are gathered, and rank 0 writes the file."""

    def __init__(self, run_dir: Path, snapshot_spec, digest: str, log: Callable[[str], None] = print,
                 stop_requested: Callable[[], bool] = lambda: False, ctx: DistContext = SINGLE):
        self.folder = Path(run_dir) / FOLDER
        self.spec, self.digest, self.log = snapshot_spec, digest, log
        self.stop_requested, self.ctx = stop_requested, ctx
        self.last_write = time.monotonic()

    def due(self, step: int) -> bool:
        every_steps, every_minutes = self.spec.every_steps, self.spec.every_minutes
        return bool((every_steps and step % every_steps == 0)
                    or (every_minutes and time.monotonic() - self.last_write >= 60 * every_minutes))

    def decide(self, step: int, device: torch.device) -> tuple[bool, bool]:
        """(stop, write) at this step boundary, the same on every rank."""
        stop, write = any_rank([self.stop_requested(), self.due(step)], self.ctx, device)
        return stop, stop or write

    def write(self, state: TrainState) -> Path | None:
        """Write ``state`` (this rank's generators, objective state and epoch sums first in their
        lists); the file on rank 0, None on the others."""
        mine = (state.rng[0], {k: _cpu(v) for k, v in state.objective[0].items()}, state.epoch_sums[0])
        per_rank = gather_to_main(mine, self.ctx)
        self.last_write = time.monotonic()
        if per_rank is None:
            return None
        state.rng, state.objective, state.epoch_sums = (list(part) for part in zip(*per_rank))
        start = time.perf_counter()
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / snapshot_name(state.step)
        try:
            size = write(path, state, self.digest)
        except OutOfSpace as e:
            self.log(f"snapshot at step {state.step} not written: {e}")
            raise
        for old in snapshot_files(self.folder.parent)[self.spec.keep:]:
            old.unlink(missing_ok=True)
        seconds = time.perf_counter() - start
        self.log(f"snapshot at step {state.step}: {path.name} ({size / 1e6:.2f} MB in {seconds:.3f} s)")
        return path
