"""FT-SAM (Zhu et al., ICCV 2023): fine-tuning on the defender's held-out clean training images
(``data.holdout_per_class``) with sharpness-aware minimisation, which moves the weights towards a
flat minimum and so away from the sharp one a backdoor's neurons sit in.

The variant is **adaptive SAM** (ASAM, Kwon et al., ICML 2021), as the paper: each step climbs to
``w + e`` with ``e = rho * T^2 g / ||T g||`` (``T = |w| + eta`` element-wise, ``g`` the gradient at
``w``), takes the gradient there and applies it at ``w`` with plain SGD. The paper's radius is
``rho = 2.0`` (ASAM's radius is relative to the weights, hence larger than SAM's 0.05)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from tradeoff.backdoor_defenses.base import BACKDOOR_DEFENSES
from tradeoff.backdoor_defenses.defender import describe_holdout, holdout_images
from tradeoff.backdoor_defenses.finetune import FineTuneOptions, Tuning, fine_tune
from tradeoff.backdoor_defenses.measure import purification_metrics
from tradeoff.core.spec import option
from tradeoff.records.handoff import TrainedRun


@dataclass
class FtSamOptions(FineTuneOptions):  # tune_epochs, tune_batch_size, tune_lr, tune_momentum, tune_weight_decay
    metric_prefix: ClassVar[str] = "ft_sam"
    rho: float = option(2.0, doc="adaptive-SAM neighbourhood radius (relative to the weights)", above=0)
    eta: float = option(0.01, doc="adaptive-SAM offset of the weight scale |w| + eta", min=0)


class AdaptiveSAM(torch.optim.Optimizer):
    """Adaptive sharpness-aware minimisation around a base optimiser: ``step(closure)`` evaluates
    the gradient at ``w``, moves to ``w + e`` (``e = rho T^2 g / ||T g||``, ``T = |w| + eta``),
    re-evaluates the gradient there, returns to ``w`` and lets the base optimiser step with it.
    ``closure`` zeroes the gradients, computes the loss and calls ``backward``."""

    def __init__(self, params, base: type, rho: float, eta: float, **base_options):
        super().__init__(params, {"rho": rho, "eta": eta, **base_options})
        self.base = base(self.param_groups, **base_options)

    @torch.no_grad()
    def step(self, closure):
        with torch.enable_grad():
            loss = closure()
        moved = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            scaled = [(p.abs() + group["eta"]) * p.grad for p in params]
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(s) for s in scaled])) if scaled else 0
            for p, s in zip(params, scaled):
                e = group["rho"] * (p.abs() + group["eta"]) * s / (norm + 1e-12)
                p.add_(e)
                moved.append((p, e))
        with torch.enable_grad():
            closure()
        for p, e in moved:
            p.sub_(e)
        self.base.step()
        return loss


@BACKDOOR_DEFENSES.register("ft-sam", options=FtSamOptions)
def ft_sam_defense(run: TrainedRun, opts: FtSamOptions, log, show_progress) -> dict:
    """Fine-tune every weight on the held-out clean images with adaptive SAM, measure."""
    clean = holdout_images(run, "ft-sam")
    tuning = Tuning.of(opts)

    def asam(parameters) -> torch.optim.Optimizer:
        return AdaptiveSAM(parameters, torch.optim.SGD, opts.rho, opts.eta, lr=tuning.lr, momentum=tuning.momentum,
                           weight_decay=tuning.weight_decay)

    start = time.perf_counter()
    tuned = fine_tune(run.model, clean, lambda model, x, y: F.cross_entropy(model(x), y), tuning, run.spec.seed,
                      show_progress, desc="ft-sam", make_optimizer=asam)
    seconds = time.perf_counter() - start
    log(f"ft-sam: {opts.tune_epochs} epochs of adaptive SAM (rho {opts.rho}) on {describe_holdout(clean)}")
    run.add_artifact("ft_sam_model.safetensors", tuned.state_dict())
    return {"ft_sam_clean_data": describe_holdout(clean), "ft_sam_variant": "adaptive-sam",
            **purification_metrics("ft_sam", run, tuned, seconds, show_progress)}
