"""The training loop: optimiser and schedule from the spec, an objective, batches, progress."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from tradeoff import distributed
from tradeoff.curves import LearningCurve
from tradeoff.device import autocast_for
from tradeoff.preemption import Preempted
from tradeoff.progress import progress_bar
from tradeoff.registry import Registry
from tradeoff.snapshots import Snapshotter, TrainState, capture_rng, restore_rng


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
    :class:`tradeoff.distributed.DistContext` of a data-parallel run (``batches`` then yields this
    rank's slices and sets ``last_global_size``). With a ``snapshotter`` the loop writes snapshots
    when they are due, at the end of training and when a stop is requested (then it raises
    :class:`~tradeoff.preemption.Preempted`); ``resume`` continues from a snapshot's state. With a
    ``curve`` the loop measures its points at step 0, when due and at the last step (after the
    batch-norm buffers are synchronised), outside the training time."""
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
    step, epoch, first_batch, history, seconds_before = 0, 0, 0, [], 0.0
    sums = [0.0, 0.0, 0]  # loss sum, correct, seen of the epoch so far
    if resume is not None:
        model.load_state_dict(resume.model)
        optimizer.load_state_dict(resume.optimizer)
        if resume.scaler:
            scaler.load_state_dict(resume.scaler)
        objective.load_state_dict(resume.objective[ctx.rank])
        restore_rng(resume.rng[ctx.rank], batches.generators())
        step, epoch, first_batch = resume.step, resume.epoch, resume.batch_in_epoch
        history, seconds_before, sums = list(resume.history), resume.seconds, list(resume.epoch_sums[ctx.rank])
        if curve is not None:
            curve.restore(resume.curve, resume.curve_seconds)
        log(f"resumed from the snapshot at step {step} (epoch {epoch}, batch {first_batch})")
    elif curve is not None:
        curve.record(model, 0)
    start = time.perf_counter()
    measuring = 0.0  # seconds spent on the curve since ``start``
    bar = progress_bar(total=steps, initial=step, desc="train", unit="step", enabled=show_progress)

    def state(batch_in_epoch: int, loss_sum, correct, seen) -> TrainState:
        return TrainState(step=step, epoch=epoch, batch_in_epoch=batch_in_epoch,
                          seconds=seconds_before + time.perf_counter() - start - measuring,
                          history=[list(h) for h in history],
                          epoch_sums=[[float(loss_sum), float(correct), int(seen)]], model=model.state_dict(),
                          optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
                          objective=[objective.state_dict()], rng=[capture_rng(batches.generators())],
                          curve=list(curve.points) if curve is not None else [],
                          curve_seconds=curve.seconds if curve is not None else 0.0)

    while step < steps:
        loss_sum = torch.tensor(sums[0], device=device)
        correct, seen = torch.tensor(sums[1], device=device), sums[2]
        taken = first_batch
        for xb, yb in batches.epoch(epoch, first=first_batch):
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
                if train_spec.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), train_spec.grad_clip)
                scaler.step(optimizer)
                scaler.update()
            loss_sum += loss.detach() * len(yb)
            correct += (logits.detach().argmax(1) == yb).sum()
            seen += len(yb)
            step += 1
            taken += 1
            bar.update(1)
            if curve is not None and step < steps and curve.due(step):
                measuring += curve.record(model, step)
            if snapshotter is not None and step < steps:
                stop, write = snapshotter.decide(step, device)
                if write:
                    snapshotter.write(state(taken, loss_sum, correct, seen))
                if stop:
                    bar.close()
                    raise Preempted(f"stopped on request at step {step} of {steps}, after writing a snapshot")
        first_batch, sums = 0, [0.0, 0.0, 0]
        totals = distributed.all_reduce_sum(torch.stack([loss_sum, correct.to(loss_sum.dtype),
                                                         torch.tensor(float(seen), device=device)]), ctx)
        history.append((epoch, (totals[0] / totals[2].clamp_min(1)).item(), (totals[1] / totals[2].clamp_min(1)).item()))
        log(f"epoch {epoch}: loss {history[-1][1]:.4f}, accuracy on training inputs {history[-1][2]:.4f}")
        epoch += 1
    bar.close()
    distributed.sync_buffers(model, ctx)
    if curve is not None and curve.last_step != step:
        measuring += curve.record(model, step)
    seconds = seconds_before + time.perf_counter() - start - measuring
    if snapshotter is not None and (resume is None or resume.step < steps):
        # The end of training: what evaluation and the backdoor defences resume from.
        snapshotter.write(state(0, 0.0, 0.0, 0))
        if snapshotter.decide(step, device)[0]:
            raise Preempted(f"stopped on request at the end of training (step {step}), after writing a snapshot")
    return TrainResult(steps=step, seconds=seconds, final_loss=history[-1][1] if history else float("nan"),
                       history=history, curve_seconds=curve.seconds if curve is not None else 0.0)
