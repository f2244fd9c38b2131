"""Retraining after filtering (Supplement 5): the same spec, from scratch, on the poisoned training
set minus the images a filter removed. Reuses the experiment's model builder, batches, training
loop and evaluation, so the retrained model differs from the original only by its data."""

from __future__ import annotations

import torch


def retrain_without(outcome, removed: torch.Tensor, log, show_progress: bool) -> dict:
    """Train ``outcome.spec`` again without the images where ``removed`` is True; returns the
    clean-accuracy and backdoor metrics of the new model (no adversarial evaluation)."""
    from tradeoff.experiment import make_model, seed_everything
    from tradeoff.metrics import evaluate
    from tradeoff.objectives import make_objective
    from tradeoff.train import InMemoryBatches, train_model

    spec, extras = outcome.spec, outcome.extras
    x, y = extras["train_tensors"]
    keep = ~removed.to(y.device)
    seed_everything(spec.seed)
    model = make_model(spec, extras["bundle"], extras["device"])
    batches = InMemoryBatches(x[keep], y[keep], spec.train.batch_size, spec.data.augment, spec.seed)
    result = train_model(model, batches, make_objective(spec), spec.train, extras["device"],
                         lambda m: log(f"retrain: {m}"), show_progress)
    log(f"retrain: {result.steps} steps in {result.seconds:.1f} s on {int(keep.sum())} images")
    return evaluate(model, extras["bundle"].test, extras["trigger"], spec.poison.target, spec.eval.attack,
                    spec.eval.batch_size, extras["device"], adversarial=False, show_progress=show_progress)
