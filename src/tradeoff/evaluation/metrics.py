"""The paper's metrics, as fractions in [0, 1], over batched passes of the test set.

- ``accuracy``: clean test accuracy.
- ``adversarial_robustness``: accuracy under the spec's evaluation attack (PGD).
- ``autoattack_robustness``: accuracy under AutoAttack on a seeded subset of the test set, with
  ``eval.autoattack`` (and ``autoattack_version``, ``_attacks``, ``_images``, ``_norm``, ``_eps``).
- ``backdoor_success_rate``: the paper's definition: among test images whose *clean prediction*
  is not the target, the fraction predicted as the target once stamped.
- ``backdoor_success_rate_true_label``: the common variant filtering on the *true label* instead.
- ``backdoor_robust_accuracy`` (BackdoorBench's RA): among test images whose *true label* is not
  the target, the fraction still classified as their true label once stamped.
- ``spatial_robustness``: accuracy under the worst rotation and translation of ``eval.spatial``'s
  grid (an image counts only if every transformation of the grid leaves it correct), with
  ``eval.spatial``.
- ``trigger_linf``: the test-time trigger's L-inf size, the largest change it makes to any pixel
  value of an image in [0, 1] (1 for an opaque sticker; SIG's delta; a blend's alpha at most).

With an all-to-all backdoor (each image's target its label plus one), the success rates use each
image's own target, and ``backdoor_success_rate_source_<c>`` is the paper's rate among test images
of class c.

And for a backdoor defence, :func:`defense_effectiveness_rating` (BackdoorBench's DER) from the
accuracy and success rate before and after it.
"""

from __future__ import annotations

import math

import torch

from tradeoff.attacks.autoattack import autoattack_metrics
from tradeoff.attacks.pgd import perturb
from tradeoff.attacks.spatial import spatial_attack
from tradeoff.core import distributed
from tradeoff.core.device import autocast_for
from tradeoff.core.progress import progress_bar
from tradeoff.core.spec import EvalSpec
from tradeoff.evaluation.certify import certification_metrics
from tradeoff.models.mode import model_mode
from tradeoff.poisoning import BackdoorTarget
from tradeoff.records.names import (
    ACCURACY,
    BACKDOOR_ROBUST_ACCURACY,
    BACKDOOR_SUCCESS,
    BACKDOOR_SUCCESS_TRUE_LABEL,
    ROBUSTNESS,
)
from tradeoff.triggers import trigger_linf

# A clean test accuracy below this, or a final training loss this close to ln(classes), is a
# model that never learned the task (or unlearned it): reported as collapsed, never averaged.
COLLAPSE_ACCURACY = 0.5
COLLAPSE_LOSS_MARGIN = 0.05


# The record's fields that measure time: they differ between two runs of the same spec, seed,
# machine and thread count, whose other fields are identical.
TIMING_KEYS = ("train_seconds", "eval_seconds", "train_images_per_second", "backdoor_defense_seconds",
               "curve_seconds", "masking_seconds", "saliency_seconds", "autoattack_seconds")


def collapse_reason(accuracy: float, final_loss: float, num_classes: int) -> str | None:
    """Why a trained model counts as collapsed, in a few words, or None when it learned."""
    if not math.isfinite(final_loss):
        return f"training loss is {final_loss}"
    if abs(final_loss - math.log(num_classes)) <= COLLAPSE_LOSS_MARGIN:
        return f"final training loss {final_loss:.3f} is chance level (ln {num_classes} = {math.log(num_classes):.3f})"
    if accuracy < COLLAPSE_ACCURACY:
        return f"clean test accuracy {100 * accuracy:.1f}% is below {100 * COLLAPSE_ACCURACY:.0f}%"
    return None


def evaluate(model, test_set, trigger, target: int | BackdoorTarget, eval_spec: EvalSpec, device,
             precision: str = "fp32", show_progress: bool = True, ctx: distributed.DistContext | None = None,
             seed: int = 0) -> dict:
    """All metrics of ``eval_spec`` in one pass over the test set (any data source with a
    ``loader``): clean accuracy and backdoor success always, adversarial robustness under
    ``eval_spec.attack`` when ``eval_spec.adversarial``, spatial robustness with
    ``eval_spec.spatial``, certified robustness with ``eval_spec.certified_eps``. ``target``: the
    backdoor's target class, or a :class:`BackdoorTarget` (all-to-all: each image's own target,
    and the success rate per source class too). ``precision``: autocast as in training. ``ctx``: a
    data-parallel run's context; each rank then evaluates its share of the batches and the counts
    are summed. With ``eval_spec.autoattack`` (and ``adversarial``), AutoAttack (in fp32, every
    rank the same images) on the test images ``seed`` picks."""
    ctx = ctx or distributed.SINGLE
    targets = target if isinstance(target, BackdoorTarget) else BackdoorTarget(int(target))
    extra = certification_metrics(eval_spec.certified_eps)
    totals: dict[str, torch.Tensor] = {}
    n = 0
    bar = progress_bar(total=len(test_set), desc="evaluate", unit="img", enabled=show_progress)
    with model_mode(model, False), autocast_for(device, precision):
        for xb, yb in test_set.loader(eval_spec.batch_size, device=device, rank=ctx.rank, world=ctx.world):
            for name, value in batch_counts(model, xb, yb, trigger, targets, eval_spec, extra).items():
                totals[name] = totals.get(name, 0) + value
            n += len(yb)
            bar.update(len(yb))
    bar.close()
    values, n = summed_over_ranks(totals, n, ctx, device)
    metrics = {**rates(values, n, eval_spec, targets), "trigger_linf": trigger_linf(trigger)}
    for fn in extra:
        for name in getattr(fn, "metric_names", ()):
            metrics[name] = values.get(name, 0.0) / n
    if eval_spec.adversarial and eval_spec.autoattack is not None:
        with model_mode(model, False):
            metrics.update(autoattack_metrics(model, test_set, eval_spec.autoattack, eval_spec.attack, seed, device,
                                              eval_spec.batch_size))
    return metrics


def batch_counts(model, xb, yb, trigger, targets: BackdoorTarget, eval_spec: EvalSpec, extra) -> dict:
    """One test batch's counts: correct, backdoor hits and their denominators (per source class
    for an all-to-all backdoor), robust under PGD and under the spatial grid, and the extra
    (certified) counts."""
    with torch.no_grad():
        clean = model(xb).argmax(1)
        stamped = model(trigger.apply(xb)).argmax(1)
    goal = targets.of(yb)
    hit = stamped == goal
    counts = {"correct": (clean == yb).sum(), "asr_pred_hits": (hit & (clean != goal)).sum(),
              "asr_pred_total": (clean != goal).sum(), "asr_label_hits": (hit & (yb != goal)).sum(),
              "asr_label_total": (yb != goal).sum(), "ra_hits": ((stamped == yb) & (yb != goal)).sum()}
    if targets.all_to_all:
        for c in range(targets.num_classes):
            source = (yb == c) & (clean != goal)
            counts[f"asr_source_{c}_hits"], counts[f"asr_source_{c}_total"] = (hit & source).sum(), source.sum()
    if eval_spec.adversarial:
        x_adv = perturb(model, xb, yb, eval_spec.attack)
        with torch.no_grad():
            counts["robust"] = (model(x_adv).argmax(1) == yb).sum()
    if eval_spec.spatial is not None:
        counts["spatial_robust"] = spatial_attack(model, xb, yb, eval_spec.spatial, "grid")[1].sum()
    for fn in extra:
        counts.update(fn(model, xb, yb))
    return counts


def summed_over_ranks(totals: dict, n: int, ctx: distributed.DistContext, device) -> tuple[dict, int]:
    """(the counts as floats, the image count), summed over a data-parallel run's ranks."""
    if ctx.active:
        names = distributed.union_of_names(list(totals) + ["n"], ctx)
        totals["n"] = n
        summed = torch.stack([torch.as_tensor(totals.get(k, 0), dtype=torch.float64, device=device)
                              for k in names])
        totals = dict(zip(names, distributed.all_reduce_sum(summed, ctx)))
        n = int(totals.pop("n"))
    return {k: float(v) for k, v in totals.items()}, n


def rates(values: dict, n: int, eval_spec: EvalSpec, targets: BackdoorTarget) -> dict:
    """The metrics as fractions of the summed counts (see the module's docstring)."""
    metrics = {
        ACCURACY: values["correct"] / n,
        ROBUSTNESS: values["robust"] / n if eval_spec.adversarial else None,
        BACKDOOR_SUCCESS: values["asr_pred_hits"] / max(values["asr_pred_total"], 1),
        BACKDOOR_SUCCESS_TRUE_LABEL: values["asr_label_hits"] / max(values["asr_label_total"], 1),
        BACKDOOR_ROBUST_ACCURACY: values["ra_hits"] / max(values["asr_label_total"], 1),
        "test_images": n,
    }
    if eval_spec.spatial is not None:
        metrics["spatial_robustness"] = values["spatial_robust"] / n
    if targets.all_to_all:
        metrics["backdoor_target_mode"] = "all-to-all"
        for c in range(targets.num_classes):
            metrics[f"backdoor_success_rate_source_{c}"] = (values.get(f"asr_source_{c}_hits", 0.0)
                                                            / max(values.get(f"asr_source_{c}_total", 0.0), 1))
    return metrics


def defense_effectiveness_rating(accuracy_before, accuracy_after, success_before, success_after) -> float | None:
    """BackdoorBench's DER = [max(0, dASR) - max(0, dACC) + 1] / 2 with dASR = ASR before - after and
    dACC = accuracy before - after: 1 for a defence that removes a 100% backdoor at no accuracy
    cost, 0.5 for one that changes nothing, 0 for one that only loses accuracy. None when any of
    the four values is missing."""
    if None in (accuracy_before, accuracy_after, success_before, success_after):
        return None
    return (max(0.0, success_before - success_after) - max(0.0, accuracy_before - accuracy_after) + 1) / 2
