"""Measuring a model before and after a defence: the pipeline's evaluation on the test set
(``run.evaluation``, :mod:`~tradeoff.backdoor_defenses.sealed`), clean (accuracy, backdoor success
and robust accuracy on triggered inputs) or with the run's evaluation attack too, and the defence
effectiveness rating; :func:`purification_metrics`, what every purification defence reports about
its purified model."""

from __future__ import annotations

import time
from typing import Callable

from tradeoff.backdoor_defenses.defender import describe_holdout
from tradeoff.evaluation.metrics import defense_effectiveness_rating
from tradeoff.records.handoff import TrainedRun

BEFORE_AFTER = ("backdoor_success_rate", "accuracy", "backdoor_robust_accuracy")
PURIFICATION_BEFORE_AFTER = BEFORE_AFTER + ("adversarial_robustness",)


def before_after_metrics(prefix: str, before: dict, after: dict, names: tuple = BEFORE_AFTER) -> dict:
    """Accuracy, backdoor success rate and backdoor robust accuracy (``names``) of the model before
    and after a defence (two :func:`~tradeoff.evaluation.metrics.evaluate` results), and the defence
    effectiveness rating."""
    out = {}
    for name in names:
        out[f"{prefix}_{name}_before"] = before.get(name)
        out[f"{prefix}_{name}_after"] = after.get(name)
    out[f"{prefix}_der"] = defense_effectiveness_rating(before.get("accuracy"), after.get("accuracy"),
                                                        before.get("backdoor_success_rate"),
                                                        after.get("backdoor_success_rate"))
    return out


def purification_metrics(prefix: str, run: TrainedRun, purified, seconds: float, show_progress: bool = False) -> dict:
    """What a purification defence reports, on the run's test set, about the model it returns:
    accuracy, backdoor success, backdoor robust accuracy and (with ``eval.adversarial``) adversarial
    robustness under the run's evaluation attack, before and after, DER, the accuracy and
    robustness it cost (before - after; on a run trained without poison that is all it does) and
    its cost in seconds (``seconds``: the purification alone, measurements excluded). Before is
    the run's own model; its adversarial robustness is the pipeline's (``run.metrics``) where the
    run has it, else measured here."""
    evaluation = run.evaluation
    before = evaluation.measure(run.model, show_progress=show_progress)
    before["adversarial_robustness"] = run.metrics.get("adversarial_robustness")
    adversarial = run.spec.eval.adversarial
    if adversarial and before["adversarial_robustness"] is None:
        before = evaluation.measure(run.model, adversarial=True, show_progress=show_progress)
    after = evaluation.measure(purified, adversarial=adversarial, show_progress=show_progress)
    out = before_after_metrics(prefix, before, after, PURIFICATION_BEFORE_AFTER)
    out[f"{prefix}_accuracy_lost"] = before["accuracy"] - after["accuracy"]
    robust = (before["adversarial_robustness"], after["adversarial_robustness"])
    out[f"{prefix}_robustness_lost"] = None if None in robust else robust[0] - robust[1]
    out[f"{prefix}_seconds"] = round(seconds, 3)
    return out


def timed_purification(name: str, prefix: str, run: TrainedRun, clean, purify: Callable, log,
                       show_progress: bool = False) -> dict:
    """Run ``purify()`` (returns the purified model) timed, save its model beside the run as
    ``<prefix>_model.safetensors`` and return ``<prefix>_clean_data`` with the
    :func:`purification_metrics`, logged on one line."""
    started = time.perf_counter()
    purified = purify()
    seconds = time.perf_counter() - started
    run.add_artifact(f"{prefix}_model.safetensors", purified.state_dict())
    metrics = {f"{prefix}_clean_data": describe_holdout(clean),
               **purification_metrics(prefix, run, purified, seconds, show_progress)}
    log(f"{name}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()))
    return metrics
