"""The training loop: optimiser and schedule from the spec, an objective, batches, progress."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from tradeoff.core import distributed
from tradeoff.core.device import autocast_for
from tradeoff.core.preemption import Preempted
from tradeoff.core.progress import progress_bar
from tradeoff.core.registry import Registry
from tradeoff.training.curves import LearningCurve
from tradeoff.training.snapshots import Snapshotter, TrainState, capture_rng, restore_rng


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


LR_POLICIES = Registry("learning-rate policy", listed=False)
LR_POLICIES.register("piecewise")(piecewise_lr)
LR_POLICIES.register("triangular")(triangular_lr)


def make_adam(params_with_decay, other_params, train_spec) -> torch.optim.Optimizer:
    """Adam with the spec's weight decay on every parameter."""
    return torch.optim.Adam(params_with_decay + other_params, lr=train_spec.lr, weight_decay=train_spec.weight_decay)


def make_sgd(params_with_decay, other_params, train_spec) -> torch.optim.Optimizer:
    """SGD with momentum; weight decay on weights only (not biases or batch-norm parameters), as the protocol."""
    return torch.optim.SGD([{"params": params_with_decay, "weight_decay": train_spec.weight_decay},
                            {"params": other_params, "weight_decay": 0.0}], lr=train_spec.lr,
                           momentum=train_spec.momentum)


OPTIMIZERS = Registry("optimizer", listed=False)
OPTIMIZERS.register("adam")(make_adam)
OPTIMIZERS.register("sgd")(make_sgd)


def make_optimizer(model, train_spec) -> torch.optim.Optimizer:
    weights = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    return OPTIMIZERS.get(train_spec.optimizer)(weights, rest, train_spec)


@dataclass
class TrainResult:
    steps: int
    seconds: float
    final_loss: float
    history: list = field(default_factory=list)  # (epoch, mean loss, mean accuracy on the inputs used)
    curve_seconds: float = 0.0  # measuring the learning curve, not counted in ``seconds``


def total_steps(train_spec, steps_per_epoch: int) -> int:
    return train_spec.steps if train_spec.steps is not None else train_spec.epochs * steps_per_epoch


def prepare_for_training(model, train_spec, device, ctx=None):
    """The module the loop calls: channels-last, DDP-wrapped in a distributed run, compiled on
    request. Parameters are shared with ``model``, which stays the one to save and evaluate."""
    if train_spec.channels_last:
        model.to(memory_format=torch.channels_last)
    net = distributed.wrap(model, ctx or distributed.SINGLE, device)
    return torch.compile(net) if train_spec.compile else net


def train_model(model, batches, objective, train_spec, device, log=print, show_progress=True,
                ctx=None, snapshotter: Snapshotter | None = None, resume: TrainState | None = None,
                curve: LearningCurve | None = None) -> TrainResult:
    """Run ``objective`` over ``batches`` for the spec's number of steps. ``ctx``: the
    :class:`tradeoff.core.distributed.DistContext` of a data-parallel run (``batches`` then yields this
    rank's slices and sets ``last_global_size``). With a ``snapshotter`` the loop writes snapshots
    when they are due, at the end of training and when a stop is requested (then it raises
    :class:`~tradeoff.core.preemption.Preempted`); ``resume`` continues from a snapshot's state. With a
    ``curve`` the loop measures its points at step 0, when due and at the last step (after the
    batch-norm buffers are synchronised), outside the training time."""
    loop = _Loop.build(model, batches, objective, train_spec, device, ctx or distributed.SINGLE, snapshotter, curve)
    model.train()
    progress = _Progress()
    if resume is not None:
        progress = loop.resume(resume, log)
    elif curve is not None:
        curve.record(model, 0)
    loop.start_clock(progress, show_progress)
    while progress.step < loop.steps:
        loop.close_epoch(progress, *loop.run_epoch(progress), log)
    return loop.finish(progress, resume)


@dataclass
class _Progress:
    """Where training stands: the step, the epoch and the batch in it, the epochs' history, the
    seconds of earlier sessions and the running sums (loss, correct, seen) of the epoch so far."""

    step: int = 0
    epoch: int = 0
    first_batch: int = 0
    history: list = field(default_factory=list)
    seconds_before: float = 0.0
    sums: list = field(default_factory=lambda: [0.0, 0.0, 0])


@dataclass
class _Loop:
    """What every step of one training run shares, and the steps of the loop in order."""

    model: torch.nn.Module
    net: torch.nn.Module  # the module called: DDP-wrapped and compiled where asked
    objective: object
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    batches: object
    train_spec: object
    device: torch.device
    ctx: object
    snapshotter: Snapshotter | None
    curve: LearningCurve | None
    steps: int  # optimiser steps of the whole run
    unit: int  # steps per lr_schedule unit
    lr_policy: object
    memory_format: torch.memory_format
    start: float = 0.0
    measuring: float = 0.0  # seconds spent on the curve since ``start``
    bar: object = None

    @classmethod
    def build(cls, model, batches, objective, train_spec, device, ctx, snapshotter, curve) -> "_Loop":
        net = prepare_for_training(model, train_spec, device, ctx)
        # Minibatch replays (free training) count against the budget: epochs/steps are divided by
        # them so that every objective makes the same number of optimiser updates.
        steps = math.ceil(total_steps(train_spec, batches.steps_per_epoch) / objective.replays)
        objective.total_steps = steps
        return cls(model=model, net=net, objective=objective, optimizer=make_optimizer(model, train_spec),
                   scaler=torch.amp.GradScaler(enabled=train_spec.precision == "fp16" and device.type == "cuda"),
                   batches=batches, train_spec=train_spec, device=device, ctx=ctx, snapshotter=snapshotter,
                   curve=curve, steps=steps,
                   unit=batches.steps_per_epoch if train_spec.lr_schedule_unit == "epochs" else 1,
                   lr_policy=LR_POLICIES.get(train_spec.lr_policy),
                   memory_format=torch.channels_last if train_spec.channels_last else torch.contiguous_format)

    def resume(self, resume: TrainState, log) -> _Progress:
        """The model, optimiser, objective, generators and curve as a snapshot left them."""
        rank = self.ctx.rank
        self.model.load_state_dict(resume.model)
        self.optimizer.load_state_dict(resume.optimizer)
        if resume.scaler:
            self.scaler.load_state_dict(resume.scaler)
        self.objective.load_state_dict(resume.objective[rank])
        restore_rng(resume.rng[rank], self.batches.generators())
        if self.curve is not None:
            self.curve.restore(resume.curve, resume.curve_seconds)
        log(f"resumed from the snapshot at step {resume.step} (epoch {resume.epoch}, batch {resume.batch_in_epoch})")
        return _Progress(resume.step, resume.epoch, resume.batch_in_epoch, list(resume.history), resume.seconds,
                         list(resume.epoch_sums[rank]))

    def start_clock(self, progress: _Progress, show_progress: bool) -> None:
        self.start, self.measuring = time.perf_counter(), 0.0
        self.bar = progress_bar(total=self.steps, initial=progress.step, desc="train", unit="step",
                                enabled=show_progress)

    def state(self, p: _Progress, batch_in_epoch: int, loss_sum, correct, seen) -> TrainState:
        curve = self.curve
        return TrainState(step=p.step, epoch=p.epoch, batch_in_epoch=batch_in_epoch,
                          seconds=p.seconds_before + time.perf_counter() - self.start - self.measuring,
                          history=[list(h) for h in p.history],
                          epoch_sums=[[float(loss_sum), float(correct), int(seen)]], model=self.model.state_dict(),
                          optimizer=self.optimizer.state_dict(), scaler=self.scaler.state_dict(),
                          objective=[self.objective.state_dict()], rng=[capture_rng(self.batches.generators())],
                          curve=list(curve.points) if curve is not None else [],
                          curve_seconds=curve.seconds if curve is not None else 0.0)

    def run_epoch(self, p: _Progress):
        """The steps of one epoch (from ``p.first_batch`` on a resumed one); its running sums."""
        loss_sum = torch.tensor(p.sums[0], device=self.device)
        correct, seen = torch.tensor(p.sums[1], device=self.device), p.sums[2]
        taken = p.first_batch
        for xb, yb in self.batches.epoch(p.epoch, first=p.first_batch):
            if p.step >= self.steps:
                break
            loss, logits = self.train_step(xb, yb, p.step)
            loss_sum += loss.detach() * len(yb)
            correct += (logits.detach().argmax(1) == yb).sum()
            seen += len(yb)
            p.step += 1
            taken += 1
            self.bar.update(1)
            self.between_steps(p, taken, loss_sum, correct, seen)
        return loss_sum, correct, seen

    def train_step(self, xb, yb, step: int):
        """One minibatch (with its replays): the objective's loss, backward, clipping, the update."""
        xb = xb.contiguous(memory_format=self.memory_format)
        # DDP averages the ranks' gradients; weighting each rank's mean loss by its share of
        # the global batch makes that average the global batch mean, slices equal or not.
        share = self.ctx.world * len(yb) / self.batches.last_global_size if self.ctx.active else 1.0
        replays, spec = self.objective.replays, self.train_spec
        for replay in range(replays):
            for group in self.optimizer.param_groups:  # the schedule counts optimiser updates
                group["lr"] = self.lr_policy(step * replays + replay, self.steps * replays, spec, self.unit)
            with autocast_for(self.device, spec.precision):
                loss, logits, _ = self.objective.loss(self.net, xb, yb, step)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss * share if share != 1.0 else loss).backward()
            self.objective.after_backward()
            if spec.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), spec.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        return loss, logits

    def between_steps(self, p: _Progress, taken: int, loss_sum, correct, seen) -> None:
        """A curve point and a snapshot when due; a requested stop raises after the snapshot."""
        if self.curve is not None and p.step < self.steps and self.curve.due(p.step):
            self.measuring += self.curve.record(self.model, p.step)
        if self.snapshotter is not None and p.step < self.steps:
            stop, write = self.snapshotter.decide(p.step, self.device)
            if write:
                self.snapshotter.write(self.state(p, taken, loss_sum, correct, seen))
            if stop:
                self.bar.close()
                raise Preempted(f"stopped on request at step {p.step} of {self.steps}, after writing a snapshot")

    def close_epoch(self, p: _Progress, loss_sum, correct, seen, log) -> None:
        """The epoch's mean loss and accuracy over every rank, into the history."""
        p.first_batch, p.sums = 0, [0.0, 0.0, 0]
        totals = distributed.all_reduce_sum(torch.stack([loss_sum, correct.to(loss_sum.dtype),
                                                         torch.tensor(float(seen), device=self.device)]), self.ctx)
        p.history.append((p.epoch, (totals[0] / totals[2].clamp_min(1)).item(),
                          (totals[1] / totals[2].clamp_min(1)).item()))
        log(f"epoch {p.epoch}: loss {p.history[-1][1]:.4f}, accuracy on training inputs {p.history[-1][2]:.4f}")
        p.epoch += 1

    def finish(self, p: _Progress, resume: TrainState | None) -> TrainResult:
        """Buffers synchronised, the curve's last point, the end-of-training snapshot, the result."""
        self.bar.close()
        distributed.sync_buffers(self.model, self.ctx)
        if self.curve is not None and self.curve.last_step != p.step:
            self.measuring += self.curve.record(self.model, p.step)
        seconds = p.seconds_before + time.perf_counter() - self.start - self.measuring
        if self.snapshotter is not None and (resume is None or resume.step < self.steps):
            # The end of training: what evaluation and the backdoor defences resume from.
            self.snapshotter.write(self.state(p, 0, 0.0, 0.0, 0))
            if self.snapshotter.decide(p.step, self.device)[0]:
                raise Preempted(f"stopped on request at the end of training (step {p.step}), after writing a snapshot")
        return TrainResult(steps=p.step, seconds=seconds, final_loss=p.history[-1][1] if p.history else float("nan"),
                           history=p.history, curve_seconds=self.curve.seconds if self.curve is not None else 0.0)
