"""One experiment, top to bottom (:func:`_run`): data -> trigger -> poison -> model -> train ->
evaluate -> diagnose -> record -> backdoor defences. Each step is one call into the module that
owns it."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file

from tradeoff.adversarial_defenses import adversarial_defense_label, make_objective
from tradeoff.backdoor_defenses import try_backdoor_defense
from tradeoff.config.build import differing_fields, read_yaml, spec_from_dict
from tradeoff.config.resolve import resolve
from tradeoff.core import distributed
from tradeoff.core.device import apply_tf32, pick_device, precision_warning, seed_everything
from tradeoff.core.errors import TradeoffError
from tradeoff.core.preemption import Preempted, StopRequests
from tradeoff.core.spec import Spec
from tradeoff.data import load_data
from tradeoff.evaluation.masking import (
    MASKING_SEED,
    WARNINGS_KEY,
    checks_on,
    masking_checks,
    masking_subset,
    split_warnings,
)
from tradeoff.evaluation.metrics import collapse_reason, evaluate
from tradeoff.evaluation.saliency import FILE_NAME as SALIENCY_FILE, trigger_saliency
from tradeoff.models import model_for
from tradeoff.poisoning import backdoor_target, plan_poison
from tradeoff.records.folders import RunFolder
from tradeoff.records.handoff import PoisonedData, TrainedRun
from tradeoff.records.record import ACCURACY, RunRecord, error_key
from tradeoff.training import snapshots
from tradeoff.training.curves import CURVE_FILE, LearningCurve, TensorBoardSink, curve_subset
from tradeoff.training.loop import TrainResult, train_model
from tradeoff.training.narcissus import narcissus_trigger
from tradeoff.training.snapshots import Snapshotter, TrainState
from tradeoff.training.surrogate import perturb_poisons
from tradeoff.triggers import make_trigger


def prepare(spec: Spec, device: torch.device, log=lambda message: None,
            saved_images: torch.Tensor | None = None, saved_trigger: torch.Tensor | None = None) -> PoisonedData:
    """Data, trigger and the poisoned training set (shared by training and `tradeoff defend`).
    ``saved_images``: the perturbed images a run folder kept (label-consistent poisoning);
    ``saved_trigger``: the optimised trigger it kept (Narcissus)."""
    bundle = load_data(spec.data, spec.seed)
    trigger = make_trigger(spec.trigger, bundle.shape)
    plan = plan_poison(bundle.train.targets, spec.poison, trigger, bundle.num_classes, spec.seed)
    plan = perturb_poisons(spec, bundle.train, plan, bundle.num_classes, device, log, saved_images)
    trigger = narcissus_trigger(spec, bundle.train, plan, trigger, device, log, saved_trigger)
    return PoisonedData(train=bundle.train.poisoned(plan, trigger, device), test=bundle.test, plan=plan,
                        trigger=trigger, backdoor_target=backdoor_target(spec.poison, bundle.num_classes),
                        num_classes=bundle.num_classes, shape=bundle.shape, streamed=bundle.streamed,
                        holdout=bundle.holdout)


def learning_curve(spec: Spec, data: PoisonedData, device, ctx, folder: RunFolder | None,
                   board: Path | None) -> LearningCurve:
    """The run's learning curve on its fixed test subset, written to ``curve.csv`` in the run
    folder and streamed to TensorBoard (``board``) as its points come."""
    sinks = []
    if folder is not None:
        sinks.append(lambda curve, new: folder.write_text(CURVE_FILE, curve.csv_text()))
    if board is not None and ctx.is_main:
        sinks.append(TensorBoardSink(board))
    return LearningCurve(curve_subset(data.test, spec.eval, spec.seed), data.trigger, data.backdoor_target, spec.eval,
                         device, spec.seed, spec.train.precision, ctx, sinks)


def run_experiment(spec: Spec, out_dir: str | Path | None = None, show_progress: bool = True,
                   echo: bool = False, run_name: str | None = None, resume: bool = False,
                   restart: bool = False, tensorboard: str | Path | None = None,
                   records: dict | None = None) -> TrainedRun:
    """Run ``spec``; with ``out_dir``, record it in ``out_dir/<run_name or spec.name>/``, writing
    snapshots there as ``spec.snapshots`` says. ``resume`` continues that folder if it is
    unfinished (from its newest good snapshot); ``restart`` starts an unfinished one over.
    SIGTERM, SIGUSR1 or SIGUSR2 during training write a snapshot and raise :class:`Preempted`.
    ``tensorboard``: a folder where the learning curve (``eval.every_steps``) is streamed to the
    TensorBoard run ``<run_name or spec.name>``. ``records``: further JSON files for the run folder,
    by name (a synthetic cell's synthetic.json)."""
    spec = resolve(spec)
    ctx, _ = distributed.setup(pick_device(spec.train.device))
    run_dir = Path(out_dir) / (run_name or spec.name) if out_dir is not None else None
    board = Path(tensorboard) / (run_name or spec.name) if tensorboard is not None else None
    if not ctx.is_main:  # data-parallel run: only rank 0 shows progress and writes the run folder
        with StopRequests() as stop:
            return _shared(_run(spec, None, False, False, stop, run_dir), ctx)
    if run_dir is None:
        return _shared(_run(spec, None, show_progress, echo, board=board), ctx)
    with RunFolder(run_dir, resume, restart) as folder, StopRequests() as stop:
        for file_name, data in (records or {}).items():
            folder.write_json(file_name, data)
        run = _run(spec, folder, show_progress, echo, stop, run_dir, board)
        run.run_dir = folder.path
    return _shared(run, ctx)


def _shared(run: TrainedRun, ctx) -> TrainedRun:
    """In a data-parallel run every rank returns rank 0's record, once rank 0 has written it.
    With backdoor defences (which rank 0 runs alone, for hours on ImageNet) the other ranks do not
    wait for it: they return their own record, without the defences' metrics."""
    if ctx.active and not run.spec.backdoor_defenses:
        run.record, run.run_dir = distributed.broadcast_object((run.record, run.run_dir), ctx)
    return run


def saved_poison(run_dir: Path | None) -> dict:
    """A run folder's ``poison.safetensors`` (indices, corners, the perturbed images of a
    label-consistent run, the optimised trigger of a Narcissus run), or nothing."""
    path = Path(run_dir) / "poison.safetensors" if run_dir is not None else None
    return load_file(str(path)) if path is not None and path.is_file() else {}


def check_same_spec(folder: RunFolder, spec: Spec) -> None:
    """Resuming a folder written for another spec names the differing fields and stops."""
    try:
        written = spec_from_dict(read_yaml(folder.path / "spec.yaml"))
    except TradeoffError as e:
        raise TradeoffError(f"{folder.path} cannot be resumed: {e}") from None
    unchanging = {"name", "data.root", "data.workers", "data.verify"}  # change nothing a run computes
    differ = [k for k in differing_fields(written.to_dict(), spec.to_dict(), skip=unchanging)
              if not k.startswith("snapshots.")]
    if differ:
        raise TradeoffError(f"{folder.path} was started with another spec ({', '.join(differ)} differ); "
                            "resume it with its own spec.yaml, or pass --restart to start it over.")


def diagnose(model, data: PoisonedData, spec: Spec, device, warn) -> tuple[dict, dict]:
    """The gradient-masking checks and the trigger saliency share on the masking subset (each
    unless the spec turns it off), timed, under their own fixed seed so that they draw nothing
    from the run's random streams; each masking warning is also logged. Returns (metrics, the
    saliency maps for the run folder: {} when there are none)."""
    out: dict = {}
    maps: dict = {}
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(MASKING_SEED)
        if checks_on(spec.eval):
            start = time.perf_counter()
            out.update(masking_checks(model, data.test, data.shape, spec.eval, device, spec.train.precision))
            out["masking_seconds"] = round(time.perf_counter() - start, 2)
            for sentence in split_warnings(out[WARNINGS_KEY]):
                warn(sentence)
        if spec.eval.saliency:
            start = time.perf_counter()
            salient = trigger_saliency(model, masking_subset(data.test, spec.eval.masking_images), data.trigger,
                                       data.backdoor_target, data.shape, device, spec.eval.batch_size)
            out.update(salient.metrics(), saliency_seconds=round(time.perf_counter() - start, 2))
            maps = salient.tensors
    return out, maps


@dataclass
class RunScope:
    """What every step of one run shares: its spec, the process's place in a data-parallel run,
    the folder rank 0 writes (None: no folder, or another rank), and where messages go."""

    spec: Spec
    folder: Optional[RunFolder]
    ctx: object  # distributed.setup's context
    device: torch.device
    show_progress: bool
    echo: bool

    def log(self, message: str) -> None:
        if self.folder is not None:
            self.folder.log(message)
        if self.echo:
            print(f"[{self.spec.name}] {message}", file=sys.stderr)

    def warn(self, message: str) -> None:
        self.log(message)
        if not self.echo:
            print(f"[{self.spec.name}] warning: {message}", file=sys.stderr)


def _run(spec: Spec, folder: RunFolder | None, show_progress: bool, echo: bool,
         stop: StopRequests | None = None, run_dir: Path | None = None, board: Path | None = None) -> TrainedRun:
    """The pipeline. ``folder``: the run folder rank 0 writes; ``run_dir``: its path, where every
    rank of a data-parallel run reads the snapshot to resume from and takes part in writing them;
    ``board``: the TensorBoard run (rank 0) the learning curve is streamed to."""
    ctx, device = distributed.setup(pick_device(spec.train.device))
    scope = RunScope(spec, folder, ctx, device, show_progress, echo)
    resume = resume_point(scope, run_dir)
    seed_everything(spec.seed)
    apply_tf32(spec.train.tf32)
    if (slower := precision_warning(device, spec.train.precision)) and ctx.is_main:
        scope.warn(slower)
    saved = saved_poison(run_dir) if resume is not None or (folder is not None and folder.resuming) else {}
    data = prepare(spec, device, scope.log, saved.get("images"), saved.get("trigger"))
    record_poisoning(scope, data)
    model = model_for(spec, data.shape, data.num_classes, device)
    trained, curve, data_counts = train(scope, model, data, resume, stop, run_dir, board)
    metrics, eval_seconds, collapsed = evaluate_run(scope, model, data, trained)
    diagnostics, saliency_maps = diagnose(model, data, spec, device, scope.warn) if ctx.is_main else ({}, {})
    if folder is not None and saliency_maps:
        folder.save_tensors(SALIENCY_FILE, saliency_maps)
    record = RunRecord.of_run(spec, adversarial_defense_label(spec), metrics, collapsed, trained, eval_seconds,
                              len(data.poisoned_indices), len(data.train), {**diagnostics, **data_counts},
                              curve is not None)
    run = TrainedRun(spec, model, record, data, device)
    if folder is not None:  # every metric so far is kept if a backdoor defence fails
        record.write(folder.path)
    if ctx.is_main:
        run_backdoor_defenses(scope, run)
    if folder is not None:
        for file_name, tensors in run.artifacts.items():  # backdoor defences' outputs
            folder.save_tensors(file_name, tensors)
    return run


def resume_point(scope: RunScope, run_dir: Path | None) -> TrainState | None:
    """The training state to resume from: the newest good snapshot of an unfinished folder of the
    same spec (rank 0 chooses it, every rank of a data-parallel run reads that file), or None.
    Writes the folder's spec.yaml and marks it as training."""
    spec, folder, ctx = scope.spec, scope.folder, scope.ctx
    resume, snapshot_file = None, None
    if folder is not None:
        if folder.resuming and (folder.path / "spec.yaml").is_file():
            check_same_spec(folder, spec)
            resume, snapshot_file = snapshots.latest(folder.path, spec.digest(), scope.warn) or (None, None)
        folder.write_text("spec.yaml", spec.to_yaml())
        folder.mark("training")
    if run_dir is not None and ctx.active:  # every rank resumes from the file rank 0 chose
        snapshot_file = distributed.broadcast_object(snapshot_file, ctx)
        if snapshot_file is not None and not ctx.is_main:
            resume = snapshots.read(snapshot_file)[0]
    if resume is not None and len(resume.rng) != ctx.world:
        raise TradeoffError(f"{snapshot_file} was written by {len(resume.rng)} process(es); resume it with as many "
                            f"(this run has {ctx.world}), or pass --restart.")
    return resume


def record_poisoning(scope: RunScope, data: PoisonedData) -> None:
    """One log line on the data and its poisoning; the poisoning's ground truth (indices, corners,
    the perturbed images of a label-consistent run, an optimised trigger) into the folder's
    ``poison.safetensors``."""
    spec, folder = scope.spec, scope.folder
    held = f" ({len(data.holdout)} clean training images held out for the defences)" if data.holdout is not None else ""
    scope.log(f"{spec.data.dataset}: {len(data.train)} training / {len(data.test)} test images{held}; "
              f"{spec.poison.method} poisoning of {len(data.poisoned_indices)} images, "
              f"target {data.backdoor_target.describe()}")
    if folder is not None:
        perturbed = {"images": data.plan.images} if data.plan.images is not None else {}
        folder.save_tensors("poison.safetensors", {"indices": data.plan.indices, "corners": data.plan.corners,
                                                   **perturbed, **data.trigger.saved_tensors()})


def train(scope: RunScope, model, data: PoisonedData, resume: TrainState | None, stop: StopRequests | None,
          run_dir: Path | None, board: Path | None) -> tuple[TrainResult, LearningCurve | None, dict]:
    """Train ``model`` on the poisoned training set (snapshots into ``run_dir`` when due, the
    learning curve when the spec measures one); the trained weights go into the folder."""
    spec, folder, ctx, device = scope.spec, scope.folder, scope.ctx, scope.device
    distributed.rank_seed(spec.seed, ctx)
    batches = data.train.batches(spec.train.batch_size, spec.seed, device, ctx.rank, ctx.world,
                                 augment=spec.data.augment, flip=spec.data.augment_flip, log=scope.log)
    snapshotter = None
    if run_dir is not None:
        snapshotter = Snapshotter(run_dir, spec.snapshots, spec.digest(), scope.log,
                                  stop_requested=lambda: (stop is not None and stop.requested)
                                  or batches.stop_reason is not None, ctx=ctx)
    if board is not None and not spec.eval.every_steps:
        scope.warn("--tensorboard streams the learning curve, and this run measures none (eval.every_steps is 0)")
    curve = learning_curve(spec, data, device, ctx, folder, board) if spec.eval.every_steps else None
    try:
        result = train_model(model, batches, make_objective(spec), spec.train, device, scope.log, scope.show_progress,
                             ctx=ctx, snapshotter=snapshotter, resume=resume, curve=curve)
    except Preempted:
        if batches.stop_reason is None:
            raise
        raise Preempted(f"{batches.stop_reason}; training stopped before it, after writing a snapshot") from None
    finally:
        if curve is not None:
            curve.close()
    scope.log(f"trained {result.steps} steps in {result.seconds:.1f} s"
              + (f" (and {result.curve_seconds:.1f} s measuring {len(curve.points)} learning-curve points)"
                 if curve else ""))
    if folder is not None:
        folder.save_tensors("model.safetensors", model.state_dict())
        folder.mark("evaluation")
    return result, curve, batches.metrics()


def evaluate_run(scope: RunScope, model, data: PoisonedData, trained: TrainResult) -> tuple[dict, float, str | None]:
    """Every metric on the test set in one pass; (metrics, seconds, why training collapsed or None)."""
    spec = scope.spec
    start = time.perf_counter()
    metrics = evaluate(model, data.test, data.trigger, data.backdoor_target, spec.eval, scope.device,
                       precision=spec.train.precision, show_progress=scope.show_progress, ctx=scope.ctx,
                       seed=spec.seed)
    eval_seconds = time.perf_counter() - start
    scope.log("metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    collapsed = collapse_reason(metrics[ACCURACY], trained.final_loss, data.num_classes)
    if collapsed:
        message = f"training collapsed: {collapsed}; this run is flagged and left out of report means"
        scope.log(message)
        if not scope.echo:  # echo already printed it
            print(f"[{spec.name}] {message}", file=sys.stderr)
    return metrics, eval_seconds, collapsed


def run_backdoor_defenses(scope: RunScope, run: TrainedRun) -> None:
    """The spec's backdoor defences, in order, each one's metrics recorded as it ends.

    They run once, on rank 0, in one process (their own training and evaluation are
    single-process); the other ranks are done. A defence that cannot run on this model is one
    sentence (in the log, on stderr and as <prefix>_error in metrics.json); the run goes on."""
    for entry in scope.spec.backdoor_defenses:
        if scope.folder is not None:
            scope.folder.mark(f"backdoor defence {entry.name}")
        start = time.perf_counter()
        outcome = try_backdoor_defense(entry, run, scope.log, scope.show_progress)
        run.record.add_defense_outcome(outcome, time.perf_counter() - start)
        error = outcome.get(error_key(entry.metric_prefix))
        if error:
            scope.warn(error)
        if scope.folder is not None:
            run.record.write(scope.folder.path)
