"""SAU (Wei et al., NeurIPS 2023): shared adversarial unlearning.

A perturbed image x + delta is a *shared adversarial example* (SAE) of the model f being purified
and the frozen backdoored model f0 when both misclassify it, and the same way:
f(x + delta) = f0(x + delta) != y (:func:`shared_adversarial`). Backdoored images are SAEs of the
two models, so unlearning SAEs bounds the backdoor risk. For ``rounds`` passes over the defender's
clean images, in seeded batches without augmentation, each batch:

1. **Maximisation** (:func:`shared_perturbation`), by the project's PGD (``attack``: L-inf 0.2,
   step 0.2, 5 steps, starting from +eps everywhere, as the authors' ``pgd_init: max``): the
   perturbation descends ``beta_adv`` L_adv + ``beta_shared`` L_share, where L_adv is minus the
   cross-entropy towards y of each model on the images it does not yet misclassify (against its
   clean prediction), halved and averaged over the batch, and L_share the Jensen-Shannon
   divergence between the two models' softmax outputs on the images not yet shared adversarial.
   An image whose perturbation is shared has no gradient and stays put (the authors stop the batch
   when all are).
2. **Minimisation** (:func:`unlearning_loss`), one Adam step (``lr``) on
   ``lambda_clean`` CE(f(x), y) + ``lambda_adv`` CE(f(x + delta), y) + ``lambda_shared`` L_sar,
   L_sar = mean over the batch of -(log(1 - p) + log(1 - p))/2 on the images that f0 misclassifies
   away from both y and its clean prediction, p being f's probability of f0's adversarial label
   (clamped to [0.001, 0.999], as the authors).

The defaults are the authors' (BackdoorBench's ``config/defense/sau/config.yaml``): 100 rounds,
batch 256, Adam 1e-4, lambdas 1 / 0 / 1, betas 0.01 / 1. The model stays in eval mode (the
authors' default: batch-norm statistics fixed). Unlike the authors' code, perturbed images are
kept in [0, 1] (the project's PGD projects onto the image cube). Clean data: the defender's held-out
clean training images (``data.holdout_per_class``), never the test set.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from tradeoff.attacks.pgd import perturb
from tradeoff.backdoor_defenses.base import BACKDOOR_DEFENSES
from tradeoff.backdoor_defenses.defender import describe_holdout, holdout_images
from tradeoff.backdoor_defenses.measure import timed_purification
from tradeoff.core.progress import progress_bar
from tradeoff.core.registry import SyntheticCut
from tradeoff.core.spec import AttackSpec, option
from tradeoff.models.mode import model_mode
from tradeoff.records.handoff import TrainedRun

P_CLAMP = (0.001, 0.999)  # the authors' clamp of the probability of the shared label
LOG_FLOOR = 1e-6


def _default_attack() -> AttackSpec:
    return AttackSpec(eps=0.2, step_size=0.2, steps=5, random_start=False)


@dataclass
class SAUOptions:
    needs_holdout: ClassVar[bool] = True  # trains or calibrates on data.holdout_per_class only
    metric_prefix: ClassVar[str] = "sau"
    rounds: int = option(100, doc="passes over the defender's clean images", min=1)
    batch_size: int = option(256, doc="batch of the shared attack and of unlearning", min=1)
    lr: float = option(1e-4, doc="Adam learning rate of unlearning", above=0)
    attack: AttackSpec = option(factory=_default_attack, doc="the shared adversarial PGD (L-inf 0.2, step 0.2, "
                                                             "5 steps); it starts from +eps, not a random point")
    beta_adv: float = option(0.01, doc="weight of the adversarial term of the shared attack", min=0)
    beta_shared: float = option(1.0, doc="weight of the sharing (Jensen-Shannon) term of the shared attack", min=0)
    lambda_clean: float = option(1.0, doc="weight of the clean cross-entropy in unlearning", min=0)
    lambda_adv: float = option(0.0, doc="weight of the adversarial cross-entropy in unlearning (0: off)", min=0)
    lambda_shared: float = option(1.0, doc="weight of the shared adversarial risk in unlearning", min=0)


def shared_adversarial(pred: torch.Tensor, pred_ref: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The definition: x + delta is a shared adversarial example when both models' predictions on
    it agree and are wrong."""
    return (pred == pred_ref) & (pred != y)


class ModelPair(nn.Module):
    """The two models side by side: logits (B, 2K), the purified model's first."""

    def __init__(self, model: nn.Module, reference: nn.Module):
        super().__init__()
        self.model, self.reference = model, reference

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.model(x), self.reference(x)], dim=1)


def js_divergence(logits: torch.Tensor, logits_ref: torch.Tensor) -> torch.Tensor:
    """Per image, the Jensen-Shannon divergence of the two softmax distributions."""
    p, q = F.softmax(logits, 1).clamp_min(1e-8), F.softmax(logits_ref, 1).clamp_min(1e-8)
    mix = (p + q) / 2
    return 0.5 * ((p * (p.log() - mix.log())).sum(1) + (q * (q.log() - mix.log())).sum(1))


def shared_objective(y: torch.Tensor, clean_pred: torch.Tensor, clean_pred_ref: torch.Tensor, opts: SAUOptions):
    """The objective the shared attack ascends (minus the authors' descended loss), on the pair's
    logits: per-image terms, so each image's gradient is its own."""
    def objective(pair_logits: torch.Tensor, _labels: torch.Tensor) -> torch.Tensor:
        logits, logits_ref = pair_logits.chunk(2, dim=1)
        pred, pred_ref = logits.argmax(1), logits_ref.argmax(1)
        fooled, fooled_ref = pred != clean_pred, pred_ref != clean_pred_ref
        shared = fooled & fooled_ref & (pred == pred_ref)
        ce = (F.cross_entropy(logits, y, reduction="none") * ~fooled
              + F.cross_entropy(logits_ref, y, reduction="none") * ~fooled_ref)
        loss_adv = -ce.sum() / 2 / len(y)
        loss_share = (js_divergence(logits, logits_ref) * ~shared).sum() / len(y)
        return -(opts.beta_adv * loss_adv + opts.beta_shared * loss_share)
    return objective


def shared_perturbation(model, reference, x: torch.Tensor, y: torch.Tensor, opts: SAUOptions) -> torch.Tensor:
    """The shared adversarial examples of one batch, by the project's PGD from +eps."""
    with torch.no_grad():
        clean_pred, clean_pred_ref = model(x).argmax(1), reference(x).argmax(1)
    pair = ModelPair(model, reference).eval()
    start = torch.full_like(x[:1], opts.attack.eps)
    return perturb(pair, x, y, opts.attack, objective=shared_objective(y, clean_pred, clean_pred_ref, opts),
                   start=start)


def unlearning_loss(model, reference, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
                    opts: SAUOptions) -> torch.Tensor:
    """lambda_clean CE(f(x), y) + lambda_adv CE(f(x_adv), y) + lambda_shared L_sar."""
    logits, adv_logits = model(torch.cat([x, x_adv])).chunk(2)
    with torch.no_grad():
        pred_ref, adv_pred_ref = reference(x).argmax(1), reference(x_adv).argmax(1)
    suspect = (adv_pred_ref != y) & (adv_pred_ref != pred_ref)
    loss = opts.lambda_clean * F.cross_entropy(logits, y) + opts.lambda_adv * F.cross_entropy(adv_logits, y)
    if suspect.any():
        p = F.softmax(adv_logits, 1).gather(1, adv_pred_ref[:, None]).squeeze(1)[suspect]
        low, high = P_CLAMP
        sar = -(torch.log(LOG_FLOOR + (1 - p).clamp(max=high)) + torch.log(1 + LOG_FLOOR - p.clamp(min=low))) / 2
        loss = loss + opts.lambda_shared * sar.sum() / len(y)
    return loss


def sau_unlearn(model, images, opts: SAUOptions, seed: int, show_progress: bool = False):
    """A copy of ``model`` purified by SAU on the clean image set ``images`` (in memory or
    streamed, read without augmentation); the original model is the frozen reference."""
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    model = copy.deepcopy(model)
    device = next(model.parameters()).device
    batches = images.unaugmented().batches(opts.batch_size, seed, device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=opts.lr)
    bar = progress_bar(total=opts.rounds * batches.steps_per_epoch, desc="sau", unit="step", enabled=show_progress)
    with model_mode(model, False):
        for epoch in range(opts.rounds):
            for xb, yb in batches.epoch(epoch):
                x_adv = shared_perturbation(model, reference, xb, yb, opts)
                optimizer.zero_grad(set_to_none=True)
                unlearning_loss(model, reference, xb, x_adv, yb, opts).backward()
                optimizer.step()
                bar.update(1)
    bar.close()
    return model.eval()


# on generated data: one round
@BACKDOOR_DEFENSES.register("sau", options=SAUOptions, synthetic=SyntheticCut(options={"rounds": 1}))
def sau_defense(run: TrainedRun, opts: SAUOptions, log, show_progress) -> dict:
    """SAU (Wei et al. 2023): unlearn the shared adversarial examples of the model and its
    backdoored original, on the defender's held-out clean training images."""
    clean = holdout_images(run, "sau")
    log(f"sau: {opts.rounds} rounds on {describe_holdout(clean)}")
    return timed_purification("sau", "sau", run, clean,
                              lambda: sau_unlearn(run.model, clean, opts, run.spec.seed, show_progress), log, show_progress)
