"""The defender's clean data: the training images of each class kept out of training by
``data.holdout_per_class`` (``run.data.holdout``, in memory or streamed). A post-training defence
reverse-engineers, fine-tunes or sets its thresholds on these images only; the test set is never
the defender's."""

from __future__ import annotations

from tradeoff.core.errors import TradeoffError
from tradeoff.records.handoff import TrainedRun


def holdout_images(run: TrainedRun, defense: str):
    """The run's held-out clean training images, or one sentence saying how to get them."""
    if run.data.holdout is None or len(run.data.holdout) == 0:
        raise TradeoffError(f"backdoor defence {defense} needs clean defender data: set data.holdout_per_class "
                            "(the last N training images of each class are kept out of training for it).")
    return run.data.holdout


def describe_holdout(images) -> str:
    """How the defender's clean data is named in a defence's metrics (``<prefix>_clean_data``)."""
    return f"{len(images)} held-out training images"
