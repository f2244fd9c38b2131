"""Data-parallel runs through ``torch.distributed``: set up from the environment that ``torchrun``
(or any launcher) exports, wrap the model in DistributedDataParallel, and share results.

The same spec gives the same numbers with any number of processes: ``train.batch_size`` is the
*global* batch, each rank takes its own slice of every global batch (all ranks draw the same
permutation), and the loss is weighted so that DDP's gradient average equals the mean over the
global batch even when the slices differ in size. Poisoning is planned identically on every rank
(it is seeded); adversarial examples are crafted by each rank for its own slice; the test set is
split across ranks and the counts summed, so evaluation is done once; only rank 0 writes.

Backends: NCCL when the run uses CUDA devices, gloo on CPUs. ``TRADEOFF_DIST_TIMEOUT_S`` sets the
collective timeout (default 3 hours: rank 0 may run the backdoor defences alone while the other
ranks wait for its final metrics).
"""

from __future__ import annotations

import atexit
import inspect
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from tradeoff.core.errors import TradeoffError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistContext()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise TradeoffError(f"environment variable {name}={value!r} must be a whole number.") from None


def launched_world() -> int:
    """The number of processes the launcher started (1 when not launched by torchrun & co.)."""
    return _env_int("WORLD_SIZE", 1)


def context() -> DistContext:
    """The current process's place in the group (single-process when none is set up)."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    return SINGLE


def is_main() -> bool:
    """True on rank 0, and in single-process runs (before or after set-up)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return _env_int("RANK", 0) == 0


def setup(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group described by RANK / WORLD_SIZE / LOCAL_RANK (MASTER_ADDR and
    MASTER_PORT as set by torchrun), once per process. Returns the context and this rank's
    device (``cuda:LOCAL_RANK`` for a CUDA run)."""
    world = launched_world()
    if world <= 1:
        return SINGLE, device
    local_rank = _env_int("LOCAL_RANK", 0)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise TradeoffError(f"LOCAL_RANK {local_rank} has no GPU: this node has {torch.cuda.device_count()}.")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        if not dist.is_available():
            raise TradeoffError("WORLD_SIZE > 1 asks for a distributed run, but this PyTorch lacks torch.distributed.")
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise TradeoffError(f"WORLD_SIZE={world} asks for a distributed run but {', '.join(missing)} "
                                f"is not set; launch with torchrun --nproc-per-node N -m tradeoff ....")
        timeout = timedelta(seconds=_env_int("TRADEOFF_DIST_TIMEOUT_S", 3 * 3600))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
        atexit.register(shutdown)
    return context(), device


def shutdown() -> None:
    """At exit: every rank waits for the others before the process group goes, so that no rank's
    gloo threads still talk to a peer that has already torn its side down (an abort at exit)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        except RuntimeError:  # a peer already gone: nothing left to wait for
            pass
        dist.destroy_process_group()


class _TransparentDDP(DistributedDataParallel):
    """DDP that also answers for the wrapped model's attributes (``model.features`` etc.), so
    objectives written for a plain model keep working. Gradients are averaged for every
    parameter reached from an iteration's ``model(x)`` call, as in plain DDP."""

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def wrap(model: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """The model DDP-wrapped for a distributed run; the model itself otherwise."""
    if not ctx.active:
        return model
    ids = [device.index] if device.type == "cuda" else None
    # Buffers (batch-norm statistics) stay per rank during training, as each rank normalises its
    # own slice; rank 0's are the ones evaluated and saved (broadcast in sync_buffers).
    newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    no_sync = {"forward_sync_buffers": False} if newer else {"broadcast_buffers": False}
    return _TransparentDDP(model, device_ids=ids, **no_sync)


def sync_buffers(model: torch.nn.Module, ctx: DistContext) -> None:
    """Give every rank rank 0's buffers (e.g. batch-norm running statistics) after training."""
    if ctx.active:
        for buf in model.buffers():
            dist.broadcast(buf.data, 0)


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.active:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def union_of_names(names, ctx: DistContext) -> list[str]:
    """The sorted union of ``names`` over all ranks (so every rank reduces the same keys)."""
    if not ctx.active:
        return sorted(names)
    gathered: list = [None] * ctx.world
    dist.all_gather_object(gathered, sorted(names))
    return sorted(set().union(*gathered))


def gather_to_main(obj, ctx: DistContext) -> list | None:
    """Every rank's ``obj`` in rank order on rank 0 (None on the others); ``[obj]`` in one process."""
    if not ctx.active:
        return [obj]
    gathered: list | None = [None] * ctx.world if ctx.is_main else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def any_rank(flags: list[bool], ctx: DistContext, device: torch.device) -> list[bool]:
    """Each flag, true when it is true on any rank (so that every rank takes the same branch)."""
    if not ctx.active:
        return flags
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def broadcast_object(obj, ctx: DistContext):
    """Rank 0's ``obj`` on every rank (a barrier, too)."""
    if not ctx.active:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def rank_seed(seed: int, ctx: DistContext) -> None:
    """Distinct random streams per rank (PGD random starts, augmentation); rank 0 keeps the
    single-process stream."""
    if ctx.rank:
        torch.manual_seed(seed + 1_000_003 * ctx.rank)
