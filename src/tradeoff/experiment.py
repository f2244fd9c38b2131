"""One experiment, top to bottom: data -> trigger -> poison -> model -> train -> evaluate ->
backdoor defences -> record. Each step is one call into the module that owns it."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from tradeoff import distributed, snapshots
from tradeoff.adversarial_defenses import adversarial_defense_label, make_objective
from tradeoff.backdoor_defenses import metric_prefix, try_backdoor_defense
from tradeoff.data import load_data
from tradeoff.config import differing_fields, read_yaml, spec_from_dict
from tradeoff.curves import CURVE_FILE, LearningCurve, TensorBoardSink, curve_subset
from tradeoff.device import pick_device, seed_everything
from tradeoff.errors import TradeoffError
from tradeoff.handoff import PoisonedData, TrainedRun
from tradeoff.masking import MASKING_SEED, WARNINGS_KEY, checks_on, masking_checks, masking_subset, split_warnings
from tradeoff.metrics import collapse_reason, evaluate
from tradeoff.models import model_for
from tradeoff.poisoning import plan_poison
from tradeoff.preemption import StopRequests
from tradeoff.resolve import resolve
from tradeoff.runs import RunFolder, write_summary
from tradeoff.saliency import FILE_NAME as SALIENCY_FILE, trigger_saliency
from tradeoff.snapshots import Snapshotter
from tradeoff.spec import Spec
from tradeoff.surrogate import perturb_poisons
from tradeoff.training import train_model
from tradeoff.triggers import make_trigger


def prepare(spec: Spec, device: torch.device, log=lambda message: None,
            saved_images: torch.Tensor | None = None) -> PoisonedData:
    """Data, trigger and the poisoned training set (shared by training and `tradeoff defend`).
    ``saved_images``: the perturbed images a run folder kept (label-consistent poisoning)."""
    bundle = load_data(spec.data, spec.seed)
    trigger = make_trigger(spec.trigger, bundle.shape)
    plan = plan_poison(bundle.train.targets, spec.poison, trigger, bundle.num_classes, spec.seed)
    plan = perturb_poisons(spec, bundle.train, plan, bundle.num_classes, device, log, saved_images)
    return PoisonedData(train=bundle.train.poisoned(plan, trigger, device), test=bundle.test, plan=plan,
                        trigger=trigger, target=spec.poison.target, num_classes=bundle.num_classes,
                        shape=bundle.shape, streamed=bundle.streamed, holdout=bundle.holdout)


def learning_curve(spec: Spec, data: PoisonedData, device, ctx, folder: RunFolder | None,
                   board: Path | None) -> LearningCurve:
    """The run's learning curve on its fixed test subset, written to ``curve.csv`` in the run
    folder and streamed to TensorBoard (``board``) as its points come."""
    sinks = []
    if folder is not None:
        sinks.append(lambda curve, new: folder.write_text(CURVE_FILE, curve.csv_text()))
    if board is not None and ctx.is_main:
        sinks.append(TensorBoardSink(board))
    return LearningCurve(curve_subset(data.test, spec.eval, spec.seed), data.trigger, data.target, spec.eval, device,
                         spec.seed, spec.train.precision, ctx, sinks)


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
    write_summary(Path(out_dir))
    return _shared(run, ctx)


def _shared(run: TrainedRun, ctx) -> TrainedRun:
    """In a data-parallel run every rank returns rank 0's record, once rank 0 has written it.
    With backdoor defences (which rank 0 runs alone, for hours on ImageNet) the other ranks do not
    wait for it: they return their own record, without the defences' metrics."""
    if ctx.active and not run.spec.backdoor_defenses:
        run.metrics, run.run_dir = distributed.broadcast_object((run.metrics, run.run_dir), ctx)
    return run


def saved_poison(run_dir: Path | None) -> dict:
    """A run folder's ``poison.safetensors`` (indices, corners, and the perturbed images of a
    label-consistent run), or nothing."""
    path = Path(run_dir) / "poison.safetensors" if run_dir is not None else None
    return load_file(str(path)) if path is not None and path.is_file() else {}


def check_same_spec(folder: RunFolder, spec: Spec) -> None:
    """Resuming a folder written for another spec names the differing fields and stops."""
    try:
        written = spec_from_dict(read_yaml(folder.path / "spec.yaml"))
    except TradeoffError as e:
        raise TradeoffError(f"{folder.path} cannot be resumed: {e}") from None
    differ = [k for k in differing_fields(written.to_dict(), spec.to_dict(), skip={"name", "data.root", "data.workers"})
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
                                       data.target, data.shape, device, spec.eval.batch_size)
            out.update(salient.metrics(), saliency_seconds=round(time.perf_counter() - start, 2))
            maps = salient.tensors
    return out, maps


def _run(spec: Spec, folder: RunFolder | None, show_progress: bool, echo: bool,
         stop: StopRequests | None = None, run_dir: Path | None = None, board: Path | None = None) -> TrainedRun:
    """The pipeline. ``folder``: the run folder rank 0 writes; ``run_dir``: its path, where every
    rank of a data-parallel run reads the snapshot to resume from and takes part in writing them;
    ``board``: the TensorBoard run (rank 0) the learning curve is streamed to."""
    def log(message: str) -> None:
        if folder is not None:
            folder.log(message)
        if echo:
            print(f"[{spec.name}] {message}", file=sys.stderr)

    def warn(message: str) -> None:
        log(message)
        if not echo:
            print(f"[{spec.name}] warning: {message}", file=sys.stderr)

    ctx, device = distributed.setup(pick_device(spec.train.device))
    resume, snapshot_file = None, None
    if folder is not None:
        if folder.resuming and (folder.path / "spec.yaml").is_file():
            check_same_spec(folder, spec)
            resume, snapshot_file = snapshots.latest(folder.path, spec.digest(), warn) or (None, None)
        folder.write_text("spec.yaml", spec.to_yaml())
        folder.mark("training")
    if run_dir is not None and ctx.active:  # every rank resumes from the file rank 0 chose
        snapshot_file = distributed.broadcast_object(snapshot_file, ctx)
        if snapshot_file is not None and not ctx.is_main:
            resume = snapshots.read(snapshot_file)[0]
    if resume is not None and len(resume.rng) != ctx.world:
        raise TradeoffError(f"{snapshot_file} was written by {len(resume.rng)} process(es); resume it with as many "
                            f"(this run has {ctx.world}), or pass --restart.")
    seed_everything(spec.seed)
    saved = saved_poison(run_dir) if resume is not None else {}
    data = prepare(spec, device, log, saved.get("images"))
    held = f" ({len(data.holdout)} clean training images held out for the defences)" if data.holdout is not None else ""
    log(f"{spec.data.dataset}: {len(data.train)} training / {len(data.test)} test images{held}; "
        f"{spec.poison.method} poisoning of {len(data.poisoned_indices)} images, target {data.target}")
    model = model_for(spec, data.shape, data.num_classes, device)
    distributed.rank_seed(spec.seed, ctx)
    batches = data.train.batches(spec.train.batch_size, spec.seed, device, ctx.rank, ctx.world,
                                 augment=spec.data.augment, flip=spec.data.augment_flip)
    if folder is not None:
        perturbed = {"images": data.plan.images} if data.plan.images is not None else {}
        folder.save_tensors("poison.safetensors", {"indices": data.plan.indices, "corners": data.plan.corners,
                                                   **perturbed})
    snapshotter = None
    if run_dir is not None:
        snapshotter = Snapshotter(run_dir, spec.snapshots, spec.digest(), log,
                                  stop_requested=lambda: stop is not None and stop.requested, ctx=ctx)
    if board is not None and not spec.eval.every_steps:
        warn("--tensorboard streams the learning curve, and this run measures none (eval.every_steps is 0)")
    curve = learning_curve(spec, data, device, ctx, folder, board) if spec.eval.every_steps else None
    try:
        result = train_model(model, batches, make_objective(spec), spec.train, device, log, show_progress, ctx=ctx,
                             snapshotter=snapshotter, resume=resume, curve=curve)
    finally:
        if curve is not None:
            curve.close()
    log(f"trained {result.steps} steps in {result.seconds:.1f} s"
        + (f" (and {result.curve_seconds:.1f} s measuring {len(curve.points)} learning-curve points)" if curve else ""))
    if folder is not None:
        folder.save_tensors("model.safetensors", model.state_dict())
        folder.mark("evaluation")

    start = time.perf_counter()
    metrics = evaluate(model, data.test, data.trigger, data.target, spec.eval, device,
                       precision=spec.train.precision, show_progress=show_progress, ctx=ctx, seed=spec.seed)
    eval_seconds = time.perf_counter() - start
    log("metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    collapsed = collapse_reason(metrics["accuracy"], result.final_loss, data.num_classes)
    if collapsed:
        message = f"training collapsed: {collapsed}; this run is flagged and left out of report means"
        log(message)
        if not echo:  # echo already printed it
            print(f"[{spec.name}] {message}", file=sys.stderr)

    diagnostics, saliency_maps = diagnose(model, data, spec, device, warn) if ctx.is_main else ({}, {})
    if folder is not None and saliency_maps:
        folder.save_tensors(SALIENCY_FILE, saliency_maps)

    record = {
        "dataset": spec.data.dataset,
        "poisoning_method": spec.poison.method,
        "adversarial_defense": adversarial_defense_label(spec),
        **metrics,
        "collapsed": collapsed is not None,
        "collapse_reason": collapsed or "",
        "final_train_loss": round(result.final_loss, 6),
        "trigger": spec.trigger.kind,
        "model": spec.model.name,
        "seed": spec.seed,
        "poisoned_images": len(data.poisoned_indices),
        "train_images": len(data.train),
        "train_steps": result.steps,
        "train_seconds": round(result.seconds, 2),
        "train_images_per_second": round(result.steps * spec.train.batch_size / max(result.seconds, 1e-9), 1),
        "eval_seconds": round(eval_seconds, 2),
        **({"curve_seconds": round(result.curve_seconds, 2)} if curve is not None else {}),
        **diagnostics,
        "spec_digest": spec.digest(),
        "synthetic": spec.synthetic,
    }
    run = TrainedRun(spec, model, record, data, device)
    if folder is not None:  # every metric so far is kept if a backdoor defence fails
        folder.write_json("metrics.json", record)
    # The backdoor defences run once, on rank 0, in one process (their own training and evaluation
    # are single-process); the other ranks are done. A defence that cannot run on this model is one
    # sentence (in the log, on stderr and as <prefix>_error in metrics.json); the run goes on.
    for entry in spec.backdoor_defenses if ctx.is_main else []:
        if folder is not None:
            folder.mark(f"backdoor defence {entry['name']}")
        start = time.perf_counter()
        outcome = try_backdoor_defense(entry, run, log, show_progress)
        record["backdoor_defense_seconds"] = round(record.get("backdoor_defense_seconds", 0.0)
                                                   + time.perf_counter() - start, 2)
        error = outcome.get(f"{metric_prefix(entry)}_error")
        if error:
            warn(error)
        record.update(outcome)
        if folder is not None:
            folder.write_json("metrics.json", record)
    if folder is not None:
        for file_name, tensors in run.artifacts.items():  # backdoor defences' outputs
            folder.save_tensors(file_name, tensors)
    return run
