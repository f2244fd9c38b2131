"""The defender's clean data: the training images of each class kept out of training by
``data.holdout_per_class`` (``run.data.holdout``, in memory or streamed). A post-training defence
reverse-engineers, fine-tunes or sets its thresholds on these images only; the test set is never
the defender's."""

from __future__ import annotations

from tradeoff.core.errors import TradeoffError
from tradeoff.records.handoff import TrainedRun


def no_holdout(where: str, or_else: str = "") -> TradeoffError:
    """The one sentence of a defence that needs held-out images where the run keeps none (``or_else``:
    the defence's other way, if it has one)."""
    return TradeoffError(f"{where} needs the defender's clean images and this run keeps none: train it with "
                         "data.holdout_per_class (BackdoorBench's share is 5% of the training set, e.g. 300 "
                         f"a class of MNIST's 60,000){', ' + or_else if or_else else ''}.")


def holdout_images(run: TrainedRun, defense: str, or_else: str = ""):
    """The run's held-out clean training images, or :func:`no_holdout`'s sentence."""
    if run.data.holdout is None or len(run.data.holdout) == 0:
        raise no_holdout(f"backdoor defence {defense}", or_else)
    return run.data.holdout


def describe_holdout(images) -> str:
    """How the defender's clean data is named in a defence's metrics (``<prefix>_clean_data``)."""
    return f"{len(images)} held-out training images"


def check_holdout(spec, where: str, or_else: str = "") -> None:
    """A defence on the defender's held-out images in a spec that keeps none: one sentence when the
    spec is built (and when ``tradeoff defend`` reads a folder trained without them)."""
    if not spec.data.holdout_per_class:
        raise no_holdout(where, or_else)
