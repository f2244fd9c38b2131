"""Certified robustness as an evaluation metric (interval bound propagation)."""

from __future__ import annotations

import torch

from tradeoff.bounds import certified


def certification_metrics(eps: float | None) -> tuple:
    """Extra per-batch metrics for :func:`tradeoff.metrics.evaluate`: none unless ``eps`` (the
    spec's ``eval.certified_eps``) is set; then ``certified_robustness``, the fraction of test
    images whose every margin ``z_j - z_y`` is proved negative at that eps."""
    if eps is None:
        return ()

    def count(model, x, y) -> dict:
        with torch.no_grad():
            return {"certified_robustness": certified(model, x, y, eps).sum()}

    count.metric_names = ("certified_robustness",)
    return (count,)
