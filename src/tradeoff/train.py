"""The training loop: optimiser and schedule from the spec, an objective, batches, progress."""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from tradeoff.data.augment import pad_crop_flip
from tradeoff.progress import progress_bar
from tradeoff.registry import Registry


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class InMemoryBatches:
    """Shuffled minibatches of device-resident tensors; augmentation on the device.

    With ``world > 1`` each rank takes its own slice of the same global permutation
    (every rank draws the same permutation from the same seed)."""

    def __init__(self, x, y, batch_size: int, augment: bool, seed: int, rank: int = 0, world: int = 1):
        self.x, self.y = x, y
        self.batch_size, self.augment, self.seed = batch_size, augment, seed
        self.rank, self.world = rank, world
        self.steps_per_epoch = len(global_batches(len(y), batch_size, world))
        # Augmentation draws on the data's device (no host round trip per batch).
        self._augment_gen = torch.Generator(device=x.device).manual_seed(seed + 7919 * (rank + 1))
        self.last_global_size = 0  # size of the global batch the last yielded slice belongs to

    def epoch(self, index: int):
        perm = epoch_permutation(len(self.y), self.seed, index).to(self.y.device)
        for start, stop in global_batches(len(self.y), self.batch_size, self.world):
            idx = perm[start:stop]
            idx = idx[self.rank::self.world] if self.world > 1 else idx
            xb, yb = self.x[idx], self.y[idx]
            if self.augment:
                xb = pad_crop_flip(xb, 2, self._augment_gen)
            self.last_global_size = stop - start
            yield xb, yb


def training_batches(spec, bundle, train_tensors, device, ctx):
    """This rank's batch source: in-memory tensors, or a streamed dataset's loader."""
    if bundle.streamed:
        return bundle.train.batches(spec.train.batch_size, spec.seed, device, ctx.rank, ctx.world)
    return InMemoryBatches(*train_tensors, spec.train.batch_size, spec.data.augment, spec.seed, ctx.rank, ctx.world)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's order of the training set: drawn on the CPU, so it is the same on every rank
    and every device."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))


def global_batches(n: int, batch_size: int, world: int = 1) -> list[tuple[int, int]]:
    """(start, stop) of each global batch of an epoch. With several ranks a last batch smaller
    than the number of ranks is dropped (some rank would get no image)."""
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if world > 1 and bounds and bounds[-1][1] - bounds[-1][0] < world:
        bounds.pop()
    return bounds


def piecewise_lr(step: int, total: int, train_spec, steps_per_unit: int = 1) -> float:
    """Piecewise-constant learning rate: ``lr``, then ``lr_schedule`` = [[at, lr], ...] in steps or epochs."""
    lr = train_spec.lr
    for at, value in sorted(train_spec.lr_schedule, key=lambda p: p[0]):
        if step >= at * steps_per_unit:
            lr = value
    return lr


def triangular_lr(step: int, total: int, train_spec, steps_per_unit: int = 1) -> float:
    """The cyclic schedule of fast adversarial training (Wong et al. 2020): linear from 0 up to
    ``lr`` at ``lr_peak`` of training, then linear down to 0 at the end."""
    peak = max(1.0, train_spec.lr_peak * total)
    progress = step / peak if step < peak else max(0.0, (total - step) / max(1.0, total - peak))
    return train_spec.lr * progress


LR_POLICIES = Registry("learning-rate policy")
LR_POLICIES.register("piecewise")(piecewise_lr)
LR_POLICIES.register("triangular")(triangular_lr)


def make_optimizer(model, train_spec) -> torch.optim.Optimizer:
    if train_spec.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=train_spec.lr, weight_decay=train_spec.weight_decay)
    # SGD: weight decay on weights only (not biases or batch-norm parameters), as the protocol.
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": train_spec.weight_decay},
                            {"params": rest, "weight_decay": 0.0}], lr=train_spec.lr,
                           momentum=train_spec.momentum)


def autocast_for(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class TrainResult:
    steps: int
    seconds: float
    final_loss: float
    history: list = field(default_factory=list)  # (epoch, mean loss, mean accuracy on the inputs used)


def total_steps(train_spec, steps_per_epoch: int) -> int:
    return train_spec.steps if train_spec.steps is not None else train_spec.epochs * steps_per_epoch


def prepare_for_training(model, train_spec, device, ctx=None):
    """The module the loop calls: channels-last, DDP-wrapped in a distributed run, compiled on
    request. Parameters are shared with ``model``, which stays the one to save and evaluate."""
    from tradeoff import distributed

    if train_spec.channels_last:
        model.to(memory_format=torch.channels_last)
    net = distributed.wrap(model, ctx or distributed.SINGLE, device)
    return torch.compile(net) if train_spec.compile else net


def train_model(model, batches, objective, train_spec, device, log=print, show_progress=True,
                ctx=None) -> TrainResult:
    """Run ``objective`` over ``batches`` for the spec's number of steps. ``ctx``: the
    :class:`tradeoff.distributed.DistContext` of a data-parallel run (``batches`` then yields this
    rank's slices and sets ``last_global_size``)."""
    from tradeoff import distributed

    ctx = ctx or distributed.SINGLE
    net = prepare_for_training(model, train_spec, device, ctx)
    memory_format = torch.channels_last if train_spec.channels_last else torch.contiguous_format
    optimizer = make_optimizer(model, train_spec)
    scaler = torch.amp.GradScaler(enabled=train_spec.precision == "fp16" and device.type == "cuda")
    # Minibatch replays (free training) count against the budget: epochs/steps are divided by
    # them so that every objective makes the same number of optimiser updates.
    replays = objective.replays
    steps = math.ceil(total_steps(train_spec, batches.steps_per_epoch) / replays)
    objective.total_steps = steps
    unit = batches.steps_per_epoch if train_spec.lr_schedule_unit == "epochs" else 1
    lr_policy = LR_POLICIES.get(train_spec.lr_policy)
    model.train()
    start, step, epoch, history = time.perf_counter(), 0, 0, []
    bar = progress_bar(total=steps, desc="train", unit="step", enabled=show_progress)
    loss_value = float("nan")
    while step < steps:
        loss_sum, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
        for xb, yb in batches.epoch(epoch):
            if step >= steps:
                break
            xb = xb.contiguous(memory_format=memory_format)
            # DDP averages the ranks' gradients; weighting each rank's mean loss by its share of
            # the global batch makes that average the global batch mean, slices equal or not.
            share = ctx.world * len(yb) / batches.last_global_size if ctx.active else 1.0
            for replay in range(replays):
                for group in optimizer.param_groups:  # the schedule counts optimiser updates
                    group["lr"] = lr_policy(step * replays + replay, steps * replays, train_spec, unit)
                with autocast_for(device, train_spec.precision):
                    loss, logits, _ = objective.loss(net, xb, yb, step)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss * share if share != 1.0 else loss).backward()
                objective.after_backward()
                scaler.step(optimizer)
                scaler.update()
            loss_sum += loss.detach() * len(yb)
            correct += (logits.detach().argmax(1) == yb).sum()
            seen += len(yb)
            step += 1
            bar.update(1)
        totals = distributed.all_reduce_sum(torch.stack([loss_sum, correct.to(loss_sum.dtype),
                                                         torch.tensor(float(seen), device=device)]), ctx)
        loss_value = (totals[0] / totals[2].clamp_min(1)).item()
        history.append((epoch, loss_value, (totals[1] / totals[2].clamp_min(1)).item()))
        log(f"epoch {epoch}: loss {loss_value:.4f}, accuracy on training inputs {history[-1][2]:.4f}")
        epoch += 1
    bar.close()
    distributed.sync_buffers(model, ctx)
    return TrainResult(steps=step, seconds=time.perf_counter() - start, final_loss=loss_value, history=history)
