"""The training loop: optimiser and schedule from the spec, an objective, batches, progress."""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from tradeoff.data.augment import pad_crop_flip
from tradeoff.progress import progress_bar


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
        self.steps_per_epoch = math.ceil(len(y) / batch_size)
        self._augment_gen = torch.Generator().manual_seed(seed + 7919 * (rank + 1))

    def epoch(self, index: int):
        g = torch.Generator().manual_seed(self.seed * 100003 + index)
        perm = torch.randperm(len(self.y), generator=g).to(self.y.device)
        for start in range(0, len(perm), self.batch_size):
            idx = perm[start:start + self.batch_size]
            idx = idx[self.rank::self.world] if self.world > 1 else idx
            xb, yb = self.x[idx], self.y[idx]
            if self.augment:
                xb = pad_crop_flip(xb, 2, self._augment_gen)
            yield xb, yb


def lr_at(step: int, base_lr: float, schedule: list, steps_per_unit: int = 1) -> float:
    """Piecewise-constant learning rate: ``schedule`` = [[at, lr], ...] in steps or epochs."""
    lr = base_lr
    for at, value in sorted(schedule, key=lambda p: p[0]):
        if step >= at * steps_per_unit:
            lr = value
    return lr


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


def train_model(model, batches, objective, train_spec, device, log=print, show_progress=True) -> TrainResult:
    """Run ``objective`` over ``batches`` for the spec's number of steps."""
    optimizer = make_optimizer(model, train_spec)
    scaler = torch.amp.GradScaler(enabled=train_spec.precision == "fp16" and device.type == "cuda")
    steps = total_steps(train_spec, batches.steps_per_epoch)
    unit = batches.steps_per_epoch if train_spec.lr_schedule_unit == "epochs" else 1
    model.train()
    start, step, epoch, history = time.perf_counter(), 0, 0, []
    bar = progress_bar(total=steps, desc="train", unit="step", enabled=show_progress)
    loss_value = float("nan")
    while step < steps:
        loss_sum, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
        for xb, yb in batches.epoch(epoch):
            if step >= steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, train_spec.lr, train_spec.lr_schedule, unit)
            for _ in range(objective.replays):
                with autocast_for(device, train_spec.precision):
                    loss, logits, _ = objective.loss(model, xb, yb, step)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                objective.after_backward()
                scaler.step(optimizer)
                scaler.update()
            loss_sum += loss.detach() * len(yb)
            correct += (logits.detach().argmax(1) == yb).sum()
            seen += len(yb)
            step += 1
            bar.update(1)
        loss_value = (loss_sum / max(seen, 1)).item()
        history.append((epoch, loss_value, (correct / max(seen, 1)).item()))
        log(f"epoch {epoch}: loss {loss_value:.4f}, accuracy on training inputs {history[-1][2]:.4f}")
        epoch += 1
    bar.close()
    return TrainResult(steps=step, seconds=time.perf_counter() - start, final_loss=loss_value, history=history)
