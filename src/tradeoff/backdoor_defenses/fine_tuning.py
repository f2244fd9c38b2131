"""Plain fine-tuning: the baseline every purification defence must beat. The whole model trained
on the defender's held-out clean training images (``data.holdout_per_class``, in memory or
streamed) with cross-entropy and plain SGD (:mod:`~tradeoff.backdoor_defenses.finetune`), the same
images and budget options the purifiers get, so a purifier's gain over it is its own."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F

from tradeoff.backdoor_defenses.base import BACKDOOR_DEFENSES
from tradeoff.backdoor_defenses.defender import describe_holdout, holdout_images
from tradeoff.backdoor_defenses.finetune import FineTuneOptions, Tuning, fine_tune
from tradeoff.backdoor_defenses.measure import purification_metrics
from tradeoff.records.handoff import TrainedRun


@dataclass
class FineTuningOptions(FineTuneOptions):  # tune_epochs, tune_batch_size, tune_lr, tune_momentum, tune_weight_decay
    metric_prefix: ClassVar[str] = "fine_tuning"


@BACKDOOR_DEFENSES.register("fine-tuning", options=FineTuningOptions)
def fine_tuning_defense(run: TrainedRun, opts: FineTuningOptions, log, show_progress) -> dict:
    """Fine-tune every weight on the held-out clean images with cross-entropy, measure."""
    clean = holdout_images(run, "fine-tuning")
    start = time.perf_counter()
    tuned = fine_tune(run.model, clean, lambda model, x, y: F.cross_entropy(model(x), y), Tuning.of(opts),
                      run.spec.seed, show_progress, desc="fine-tuning")
    seconds = time.perf_counter() - start
    log(f"fine-tuning: {opts.tune_epochs} epochs on {describe_holdout(clean)}")
    run.add_artifact("fine_tuning_model.safetensors", tuned.state_dict())
    return {"fine_tuning_clean_data": describe_holdout(clean),
            **purification_metrics("fine_tuning", run, tuned, seconds, show_progress)}
