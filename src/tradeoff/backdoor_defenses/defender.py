"""The defender's clean data: the training images of each class kept out of training by
``data.holdout_per_class`` (``run.data.holdout``, in memory or streamed). A post-training defence
reverse-engineers, fine-tunes or sets its thresholds on these images only; the test set is never
the defender's."""

from __future__ import annotations

from tradeoff.core.errors import TradeoffError
from tradeoff.records.handoff import TrainedRun


def holdout_images(run: TrainedRun, defense: str, or_else: str = ""):
    """The run's held-out clean training images, or one sentence saying how to get them (``or_else``:
    the defence's other way, if it has one)."""
    if run.data.holdout is None or len(run.data.holdout) == 0:
        raise TradeoffError(f"backdoor defence {defense} needs clean defender data and this run has none: train "
                            "it with data.holdout_per_class (the last N training images of each class are kept "
                            f"out of training for the defender){', ' + or_else if or_else else ''}.")
    return run.data.holdout


def describe_holdout(images) -> str:
    """How the defender's clean data is named in a defence's metrics (``<prefix>_clean_data``)."""
    return f"{len(images)} held-out training images"


def check_holdout(spec, where: str, or_else: str = "") -> None:
    """A defence on the defender's held-out images in a spec that keeps none: one sentence when the
    spec is built (and when ``tradeoff defend`` reads a folder trained without them)."""
    if not spec.data.holdout_per_class:
        raise TradeoffError(f"{where} needs the defender's clean images and this run keeps none: train it with "
                            "data.holdout_per_class (BackdoorBench's share is 5% of the training set, e.g. 300 "
                            f"a class of MNIST's 60,000){', ' + or_else if or_else else ''}.")
