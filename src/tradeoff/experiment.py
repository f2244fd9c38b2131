"""One experiment, top to bottom: data -> trigger -> poison -> model -> train -> evaluate ->
backdoor defences -> record. Each step is one call into the module that owns it."""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tradeoff import defenses, distributed
from tradeoff.certify import certification_metrics
from tradeoff.data import load_data
from tradeoff.metrics import collapse_reason, evaluate
from tradeoff.models import build_model
from tradeoff.models.base import adapt_state
from tradeoff.objectives import defense_label, make_objective
from tradeoff.poisoning import plan_poison, poison_images
from tradeoff.runs import RunFolder, load_state, write_summary
from tradeoff.spec import Spec, resolve
from tradeoff.train import pick_device, train_model, training_batches
from tradeoff.triggers import make_trigger
from tradeoff.errors import TradeoffError


@dataclass
class Outcome:
    spec: Spec
    metrics: dict
    model: torch.nn.Module
    run_dir: Path | None = None
    extras: dict = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare(spec: Spec, device):
    """Data, trigger and the poisoned training set (shared by training and `tradeoff defend`)."""
    bundle = load_data(spec.data, spec.seed)
    trigger = make_trigger(spec.trigger, bundle.shape)
    if bundle.streamed:
        plan = plan_poison(bundle.train.targets, spec.poison, trigger, bundle.num_classes, spec.seed)
        bundle.train.set_poison(plan, trigger)
        return bundle, trigger, plan, None
    plan = plan_poison(bundle.train.y, spec.poison, trigger, bundle.num_classes, spec.seed)
    x_train = poison_images(bundle.train.x, plan, trigger).to(device)
    return bundle, trigger, plan, (x_train, plan.labels.to(device))


def make_model(spec: Spec, bundle, device) -> torch.nn.Module:
    model = build_model(spec.model.name, bundle.shape, bundle.num_classes, spec.model.width, spec.defense.denoise)
    if spec.model.checkpoint:
        state = adapt_state(model, load_state(Path(spec.model.checkpoint)))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if len(missing) == len(model.state_dict()):
            raise TradeoffError(f"checkpoint {spec.model.checkpoint!r} matches no weight of model {spec.model.name!r}.")
    return model.to(device)


def run_experiment(spec: Spec, out_dir: str | Path | None = None, show_progress: bool = True,
                   echo: bool = False, run_name: str | None = None) -> Outcome:
    """Run ``spec``; with ``out_dir``, record it in ``out_dir/<run_name or spec.name>/``."""
    spec = resolve(spec)
    ctx, _ = distributed.setup(pick_device(spec.train.device))
    if not ctx.is_main:  # data-parallel run: only rank 0 shows progress and writes the run folder
        return _shared(_run(spec, None, False, False), ctx)
    folder = RunFolder(Path(out_dir) / (run_name or spec.name)) if out_dir is not None else None
    if folder is None:
        return _shared(_run(spec, None, show_progress, echo), ctx)
    with folder:
        outcome = _run(spec, folder, show_progress, echo)
        outcome.run_dir = folder.final
    write_summary(Path(out_dir))
    return _shared(outcome, ctx)


def _shared(outcome: Outcome, ctx) -> Outcome:
    """In a data-parallel run every rank returns rank 0's record, once rank 0 has written it."""
    if ctx.active:
        outcome.metrics, outcome.run_dir = distributed.broadcast_object((outcome.metrics, outcome.run_dir), ctx)
    return outcome


def _run(spec: Spec, folder: RunFolder | None, show_progress: bool, echo: bool) -> Outcome:
    def log(message: str) -> None:
        if folder is not None:
            folder.log(message)
        if echo:
            print(f"[{spec.name}] {message}", file=sys.stderr)

    seed_everything(spec.seed)
    ctx, device = distributed.setup(pick_device(spec.train.device))
    bundle, trigger, plan, train_tensors = prepare(spec, device)
    log(f"{spec.data.dataset}: {len(bundle.train)} training / {len(bundle.test)} test images; "
        f"{spec.poison.attack} poisoning of {len(plan.indices)} images, target {spec.poison.target}")
    model = make_model(spec, bundle, device)
    distributed.rank_seed(spec.seed, ctx)
    batches = training_batches(spec, bundle, train_tensors, device, ctx)
    result = train_model(model, batches, make_objective(spec), spec.train, device, log, show_progress, ctx=ctx)
    log(f"trained {result.steps} steps in {result.seconds:.1f} s")

    start = time.perf_counter()
    test_set = bundle.test if bundle.streamed else bundle.test.to(device)
    metrics = evaluate(model, test_set, trigger, spec.poison.target, spec.eval.attack, spec.eval.batch_size,
                       device, adversarial=spec.eval.adversarial, show_progress=show_progress,
                       extra=certification_metrics(spec), precision=spec.train.precision, ctx=ctx)
    eval_seconds = time.perf_counter() - start
    log("metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    collapsed = collapse_reason(metrics["accuracy"], result.final_loss, bundle.num_classes)
    if collapsed:
        message = f"training collapsed: {collapsed}; this run is flagged and left out of report means"
        log(message)
        if not echo:  # echo already printed it
            print(f"[{spec.name}] {message}", file=sys.stderr)

    record = {
        "dataset": spec.data.dataset,
        "attack": spec.poison.attack,
        "defense": defense_label(spec),
        **metrics,
        "collapsed": collapsed is not None,
        "collapse_reason": collapsed or "",
        "final_train_loss": round(result.final_loss, 6),
        "trigger": spec.trigger.kind,
        "model": spec.model.name,
        "seed": spec.seed,
        "poisoned_images": len(plan.indices),
        "train_images": len(bundle.train),
        "train_steps": result.steps,
        "train_seconds": round(result.seconds, 2),
        "eval_seconds": round(eval_seconds, 2),
        "spec_digest": spec.digest(),
    }
    outcome = Outcome(spec, record, model, extras={"plan": plan, "bundle": bundle, "trigger": trigger,
                                                   "train_tensors": train_tensors, "device": device})
    for entry in spec.backdoor_defenses:
        record.update(defenses.run_backdoor_defense(entry, outcome, log, show_progress))
    if folder is not None:
        folder.write_text("spec.yaml", spec.to_yaml())
        folder.save_tensors("model.safetensors", model.state_dict())
        folder.save_tensors("poison.safetensors", {"indices": plan.indices, "corners": plan.corners})
        for file_name, tensors in outcome.extras.get("artifacts", {}).items():  # backdoor defences' outputs
            folder.save_tensors(file_name, tensors)
        folder.write_json("metrics.json", record)
    return outcome
