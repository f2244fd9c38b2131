"""Retraining after filtering (Supplement 5): the same spec, from scratch, on the poisoned training
set minus the images a filter removed. Reuses the experiment's model builder, batches, training
loop and evaluation, so the retrained model differs from the original only by its data."""

from __future__ import annotations

import torch

from tradeoff.adversarial_defenses import make_objective
from tradeoff.core.device import seed_everything
from tradeoff.models import model_for
from tradeoff.records.handoff import TrainedRun
from tradeoff.training.loop import train_model


def retrain_without(run: TrainedRun, removed: torch.Tensor, log, show_progress: bool) -> dict:
    """Train ``run.spec`` again without the images where ``removed`` is True; returns the
    clean-accuracy and backdoor metrics of the new model (no adversarial evaluation)."""
    spec, data, device = run.spec, run.data, run.device
    kept = data.train.without(removed)
    seed_everything(spec.seed)
    model = model_for(spec, data.shape, data.num_classes, device)
    batches = kept.batches(spec.train.batch_size, spec.seed, device, augment=spec.data.augment,
                           flip=spec.data.augment_flip)
    result = train_model(model, batches, make_objective(spec), spec.train, device,
                         lambda m: log(f"retrain: {m}"), show_progress)
    log(f"retrain: {result.steps} steps in {result.seconds:.1f} s on {len(kept)} images")
    return run.evaluation.measure(model, show_progress=show_progress)
