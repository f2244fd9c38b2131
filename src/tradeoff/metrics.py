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

And for a backdoor defence, :func:`defence_effectiveness_rating` (BackdoorBench's DER) from the
accuracy and success rate before and after it.
"""

from __future__ import annotations

import math

import torch

from tradeoff import distributed
from tradeoff.adversarial_defenses import model_mode
from tradeoff.attacks import perturb
from tradeoff.autoattack import autoattack_metrics
from tradeoff.certify import certification_metrics
from tradeoff.device import autocast_for
from tradeoff.progress import progress_bar
from tradeoff.spec import EvalSpec

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


def evaluate(model, test_set, trigger, target: int, eval_spec: EvalSpec, device, precision: str = "fp32",
             show_progress: bool = True, ctx: distributed.DistContext | None = None, seed: int = 0) -> dict:
    """All metrics of ``eval_spec`` in one pass over the test set (any data source with a
    ``loader``): clean accuracy and backdoor success always, adversarial robustness under
    ``eval_spec.attack`` when ``eval_spec.adversarial``, certified robustness with
    ``eval_spec.certified_eps``. ``precision``: autocast as in training. ``ctx``: a data-parallel
    run's context; each rank then evaluates its share of the batches and the counts are summed.
    With ``eval_spec.autoattack`` (and ``adversarial``), AutoAttack (in fp32, every rank the same images) on the test
    images ``seed`` picks."""
    ctx = ctx or distributed.SINGLE
    adversarial = eval_spec.adversarial
    extra = certification_metrics(eval_spec.certified_eps)
    totals: dict[str, torch.Tensor] = {}

    def add(name, value):
        totals[name] = totals.get(name, 0) + value

    n = 0
    bar = progress_bar(total=len(test_set), desc="evaluate", unit="img", enabled=show_progress)
    with model_mode(model, False), autocast_for(device, precision):
        for xb, yb in test_set.loader(eval_spec.batch_size, device=device, rank=ctx.rank, world=ctx.world):
            with torch.no_grad():
                clean = model(xb).argmax(1)
                stamped = model(trigger.apply(xb)).argmax(1)
            hit = stamped == target
            add("correct", (clean == yb).sum())
            add("asr_pred_hits", (hit & (clean != target)).sum())
            add("asr_pred_total", (clean != target).sum())
            add("asr_label_hits", (hit & (yb != target)).sum())
            add("asr_label_total", (yb != target).sum())
            add("ra_hits", ((stamped == yb) & (yb != target)).sum())
            if adversarial:
                x_adv = perturb(model, xb, yb, eval_spec.attack)
                with torch.no_grad():
                    add("robust", (model(x_adv).argmax(1) == yb).sum())
            for fn in extra:
                for name, value in fn(model, xb, yb).items():
                    add(name, value)
            n += len(yb)
            bar.update(len(yb))
    bar.close()
    if ctx.active:
        names = distributed.union_of_names(list(totals) + ["n"], ctx)
        totals["n"] = n
        summed = torch.stack([torch.as_tensor(totals.get(k, 0), dtype=torch.float64, device=device)
                              for k in names])
        totals = dict(zip(names, distributed.all_reduce_sum(summed, ctx)))
        n = int(totals.pop("n"))
    values = {k: float(v) for k, v in totals.items()}
    metrics = {
        "accuracy": values["correct"] / n,
        "adversarial_robustness": values["robust"] / n if adversarial else None,
        "backdoor_success_rate": values["asr_pred_hits"] / max(values["asr_pred_total"], 1),
        "backdoor_success_rate_true_label": values["asr_label_hits"] / max(values["asr_label_total"], 1),
        "backdoor_robust_accuracy": values["ra_hits"] / max(values["asr_label_total"], 1),
        "test_images": n,
    }
    for fn in extra:
        for name in getattr(fn, "metric_names", ()):
            metrics[name] = values.get(name, 0.0) / n
    if adversarial and eval_spec.autoattack is not None:
        with model_mode(model, False):
            metrics.update(autoattack_metrics(model, test_set, eval_spec.autoattack, eval_spec.attack, seed, device,
                                              eval_spec.batch_size))
    return metrics


def defence_effectiveness_rating(accuracy_before, accuracy_after, success_before, success_after) -> float | None:
    """BackdoorBench's DER = [max(0, dASR) - max(0, dACC) + 1] / 2 with dASR = ASR before - after and
    dACC = accuracy before - after: 1 for a defence that removes a 100% backdoor at no accuracy
    cost, 0.5 for one that changes nothing, 0 for one that only loses accuracy. None when any of
    the four values is missing."""
    if None in (accuracy_before, accuracy_after, success_before, success_after):
        return None
    return (max(0.0, success_before - success_after) - max(0.0, accuracy_before - accuracy_after) + 1) / 2
