"""Certified robustness as an evaluation metric (interval bound propagation)."""

from __future__ import annotations

import torch

from tradeoff.models.bounds import certified


def certification_metrics(eps: float | None) -> tuple:
    """Extra per-batch metrics for :func:`tradeoff.evaluation.metrics.evaluate`: none unless ``eps`` (the
    spec's ``eval.certified_eps``) is set; then ``certified_robustness``, the fraction of test
    images whose every margin ``z_j - z_y`` is proved negative at that eps."""
    if eps is None:
        return ()

    def count(model, x, y) -> dict:
        # Interval bounds are only sound in full precision: never under the run's autocast.
        with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            return {"certified_robustness": certified(model, x.float(), y, eps).sum()}

    count.metric_names = ("certified_robustness",)
    return (count,)
